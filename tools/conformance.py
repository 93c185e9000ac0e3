"""Regenerate the conformance kit (conformance/): tiny exported folders and the explanations any runtime must give.

Usage: python tools/conformance.py [--out conformance]

For each graph mode it exports the tests' tiny random Llama (seed 0, the tests' byte-level BPE tokenizer and chat
template) into ``models/llama-{mode}/``, explains every case of CASES with the Python runtime, checks the relevance
against the PyTorch reference (``models/reference.py``, one full pass per unit) within TOLERANCE, and writes
``cases/{mode}-{name}.json``: the request (the public request fields, as the HTTP API takes them), the model folder,
and the expected explanation (format 4, without the fields that depend on the run: timings, provider, model, and
``levels``, which a flat explanation repeats). Needs the export extra (torch); the runtime's test of the kit
(tests/test_conformance.py) needs only the base install.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from atman_onnx import Explainer  # noqa: E402
from atman_onnx.explanation import Explanation  # noqa: E402
from conftest import MODES, build_tiny_tokenizer, tiny_config  # noqa: E402

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


def expected(explanation: Explanation) -> dict:
    """The explanation as the kit holds it: what any runtime must reproduce."""
    return {k: v for k, v in explanation.to_dict().items() if k not in RUN_FIELDS}


def reference_check(model, mode: str, explanation: Explanation, request: dict) -> float:
    """The largest difference between the runtime's relevance and the PyTorch reference's for this case."""
    from atman_onnx.models.reference import reference_relevance

    groups = [list(u.positions) for u in explanation.units]
    settings = {"factor": explanation.suppression_factor, "conceptual": explanation.conceptual_threshold}

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
    source = args.out / "source"
    shutil.rmtree(source, ignore_errors=True)
    model.save_pretrained(source)
    tokenizer.save_pretrained(source)
    (args.out / "cases").mkdir(parents=True, exist_ok=True)
    try:
        for mode in MODES:
            folder = args.out / "models" / f"llama-{mode}"
            shutil.rmtree(folder, ignore_errors=True)
            export(str(source), folder, mode=mode)
            with Explainer.load(folder, provider="cpu") as explainer:
                for name, request in CASES.items():
                    explanation = explainer.explain(**request)
                    worst = reference_check(model, mode, explanation, request)
                    assert worst <= TOLERANCE, f"{mode} {name}: the graph differs from the reference by {worst:.2e}"
                    case = {"model": f"models/llama-{mode}", "tolerance": TOLERANCE, "request": request}
                    path = args.out / "cases" / f"{mode}-{name}.json"
                    text = json.dumps({**case, "explanation": expected(explanation)}, ensure_ascii=False, indent=1)
                    path.write_text(text + "\n", encoding="utf-8")
                    print(f"{path.relative_to(args.out)}: {len(explanation.units)} units, reference within {worst:.1e}")
    finally:
        shutil.rmtree(source, ignore_errors=True)


if __name__ == "__main__":
    main()
