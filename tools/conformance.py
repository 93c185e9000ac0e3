"""Regenerate the conformance kit (conformance/): tiny exported folders and the explanations any runtime must give.

Usage: python tools/conformance.py [--out conformance]

For each graph mode it exports the tests' tiny random Llama (seed 0, the tests' byte-level BPE tokenizer and chat
template) into ``models/llama-{mode}/`` and their tiny Idefics3 into ``models/idefics3-{mode}/`` (graph contract
4), explains every case of CASES (IMAGE_CASES on the Idefics3, with one image) with the Python runtime, checks the
relevance against the PyTorch reference (``models/reference.py``, one full pass per unit) within TOLERANCE, and
writes ``cases/{mode}-{name}.json``: the request (the public request fields, as the HTTP API takes them), the model
folder, and the expected explanation (format 4, without the fields that depend on the run: timings, provider, model,
and ``levels``, which a flat explanation repeats). Needs the export extra (torch); the runtime's test of the kit
(tests/test_conformance.py) needs only the base install.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import shutil
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from atman_onnx import Explainer  # noqa: E402
from atman_onnx.explanation import Explanation  # noqa: E402
from conftest import MODES, build_tiny_tokenizer, save_tiny_vlm, tiny_config  # noqa: E402

TOLERANCE = 1e-4  # graph vs the PyTorch reference, and what a runtime's relevance must match the kit within
RUN_FIELDS = ("timings", "provider", "model", "levels")  # vary by run, or repeat the top level of a flat explanation
CASES = {
    "token": {"prompt": "The quick brown fox jumps over the lazy dog. The dog", "target": " sleeps in the sun."},
    "conceptual": {
        "prompt": "Alice met Bob in the garden, and Bob gave Alice a red",
        "target": " apple.",
        "factor": 0.0,
        "conceptual": 0.7,
    },
    "contrast": {
        "prompt": "Paris is the capital of France. Berlin is the capital of",
        "target": " Germany",
        "contrast": " France",
    },
    "word": {
        "prompt": "Alice met Bob in the garden, and Bob gave",
        "target": " Alice a red apple.",
        "granularity": "word",
    },
    "sentence": {
        "prompt": "The dog sleeps in the sun. Paris is the capital of France. Numbers: one two three. The capital is",
        "target": " Paris.",
        "granularity": "sentence",
        "factor": 0.3,
    },
    "chat": {
        "prompt": [
            {"role": "system", "content": "Numbers: one two three."},
            {"role": "user", "content": "What is the capital of France?"},
        ],
        "target": "Paris is the capital of France.",
        "granularity": "word",
    },
    "generated": {"prompt": "The quick brown fox", "max_new_tokens": 6, "granularity": "word"},
    "generated-chat": {"prompt": [{"role": "user", "content": "Name a colour."}], "max_new_tokens": 5},
    "target-sentences": {
        "prompt": "Paris is the capital of France. Rome is",
        "target": " the capital of Italy. It is old.",
        "granularity": "word",
        "target_granularity": "sentence",
    },
    "target-complete": {
        "prompt": "Alice met Bob in the garden, and Bob gave Alice",
        "target": " a red apple.",
        "conceptual": 0.6,
        "target_granularity": "complete",
    },
    "naive": {"prompt": "The dog sleeps in the sun. The dog", "target": " sleeps.", "schedule": "naive", "factor": 0.5},
    "unicode-paragraph": {
        "prompt": "Héllo wörld — naïve café 😀!\n\nThe cat sat on the mat.\n\nZürich",
        "target": " is in Switzerland.",
        "granularity": "paragraph",
    },
}


# image-text cases (graph contract 4), on a tiny Idefics3 over the same text model; each gets IMAGE, base64-encoded
IMAGE_CASES = {
    "image-regions": {"prompt": "The dog <image> met the fox in the", "target": " garden", "granularity": "word"},
    "image-tiles": {
        "prompt": "The dog <image> met the fox in the",
        "target": " garden",
        "image_units": "tile",
        "factor": 0.1,
        "conceptual": 0.3,
    },
}


def image() -> bytes:
    """A 150 x 100 PNG (2 x 2 tiles and the global image for the tiny Idefics3): gradients and a checkerboard, so
    that each region differs and the file stays small."""
    from PIL import Image

    y, x = np.mgrid[0:100, 0:150]
    pixels = np.stack([x * 255 // 149, y * 255 // 99, ((x // 25 + y // 25) % 2) * 255], axis=-1).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def expected(explanation: Explanation) -> dict:
    """The explanation as the kit holds it: what any runtime must reproduce."""
    return {k: v for k, v in explanation.to_dict().items() if k not in RUN_FIELDS}


def reference_check(model, mode: str, explanation: Explanation, request: dict, pixels=None) -> float:
    """The largest difference between the runtime's relevance and the PyTorch reference's for this case
    (``pixels``: an image-text case's preprocessed images)."""
    from atman_onnx.models.reference import reference_relevance

    groups = [list(u.positions) for u in explanation.units]
    settings = {"factor": explanation.suppression_factor, "conceptual": explanation.conceptual_threshold}
    settings["pixel_values"] = pixels

    def reference(target_ids: list[int]) -> np.ndarray:
        return reference_relevance(model, mode, list(explanation.prompt_ids), target_ids, groups=groups, **settings)

    want = reference(list(explanation.target_ids))
    got = np.asarray(explanation.relevance, float)
    if request.get("contrast"):
        want = want.sum(1, keepdims=True) - reference(list(explanation.contrast_ids or ())).sum(1, keepdims=True)
    elif explanation.target_granularity != "token":  # columns of target sentences: their sums must agree
        got, want = got.sum(1), want.sum(1)
    return float(np.abs(got - want).max())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "conformance")
    args = parser.parse_args()
    import torch
    from transformers import AutoModelForCausalLM

    from atman_onnx.export.exporter import export

    tokenizer = build_tiny_tokenizer()
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(tiny_config("llama", len(tokenizer))).eval()
    sources = {"llama": args.out / "source", "idefics3": args.out / "source-idefics3"}
    for source in sources.values():
        shutil.rmtree(source, ignore_errors=True)
        source.mkdir(parents=True)
    model.save_pretrained(sources["llama"])
    tokenizer.save_pretrained(sources["llama"])
    models = {"llama": model, "idefics3": save_tiny_vlm("idefics3", build_tiny_tokenizer(), sources["idefics3"])}
    picture = base64.b64encode(image()).decode()
    (args.out / "cases").mkdir(parents=True, exist_ok=True)
    try:
        for family, cases in (("llama", CASES), ("idefics3", IMAGE_CASES)):
            for mode in MODES:
                folder = args.out / "models" / f"{family}-{mode}"
                shutil.rmtree(folder, ignore_errors=True)
                export(str(sources[family]), folder, mode=mode)
                with Explainer.load(folder, provider="cpu") as explainer:
                    for name, fields in cases.items():
                        request = {**fields, "images": [picture]} if family != "llama" else fields
                        write_case(args.out, explainer, models[family], mode, name, request)
    finally:
        for source in sources.values():
            shutil.rmtree(source, ignore_errors=True)


def write_case(out: Path, explainer: Explainer, model, mode: str, name: str, request: dict) -> None:
    """Explain ``request``, check it against the PyTorch reference, and write the case's file."""
    from atman_onnx.request import ExplainRequest
    from atman_onnx.runtime.image_tiles import preprocess

    explanation = explainer.run(ExplainRequest.from_dict(request))
    pixels = None
    if request.get("images"):
        pixels = preprocess([base64.b64decode(b) for b in request["images"]], explainer.vision.config).pixel_values
    worst = reference_check(model, mode, explanation, request, pixels)
    assert worst <= TOLERANCE, f"{mode} {name}: the graph differs from the reference by {worst:.2e}"
    folder = Path(explainer.graph.folder).resolve().relative_to(out.resolve())
    case = {"model": str(folder), "tolerance": TOLERANCE, "request": request}
    path = out / "cases" / f"{mode}-{name}.json"
    text = json.dumps({**case, "explanation": expected(explanation)}, ensure_ascii=False, indent=1)
    path.write_text(text + "\n", encoding="utf-8")
    print(f"{path.relative_to(out)}: {len(explanation.units)} units, reference within {worst:.1e}")


if __name__ == "__main__":
    main()
