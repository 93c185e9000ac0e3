"""The cost of explaining an image: passes and seconds at each image unit, against a text explanation as long.

It builds an image-text model with random weights (timing only: the numbers it explains mean nothing), shaped like
the tests' tiny Idefics3 (``--shape tiny``) or like SmolVLM-256M-Instruct (``--shape smolvlm-256m``: a SigLIP tower
of 12 layers of 768 over 512-pixel tiles, a pixel shuffle of 4 to 64 tokens per tile, SmolLM2-135M's text model and
tokenizer), exports it once (cached under ``.atman/``), and explains one prompt with one image at ``region``,
``tile`` and ``token`` units, then a text-only prompt of the same fed length by token and by word.

Usage: python tools/vision_cost.py [--shape tiny|smolvlm-256m] [--longest-edge PX] [--repeats N] [--json OUT]
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import time
from pathlib import Path

import numpy as np

IMAGE_TOKENS = [
    "<fake_token_around_image>",
    "<image>",
    "<end_of_utterance>",
    "<global-img>",
    *[f"<row_{r}_col_{c}>" for r in range(1, 7) for c in range(1, 7)],
]
SHAPES = {
    "tiny": dict(
        text=dict(
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=2048,
        ),
        vision=dict(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=64,
            patch_size=8,
        ),
        scale_factor=2,
        longest_edge=128,
    ),
    "smolvlm-256m": dict(
        text=dict(
            hidden_size=576,
            intermediate_size=1536,
            num_hidden_layers=30,
            num_attention_heads=9,
            num_key_value_heads=3,
            max_position_embeddings=8192,
            rope_theta=100000.0,
        ),
        vision=dict(
            hidden_size=768,
            intermediate_size=3072,
            num_hidden_layers=12,
            num_attention_heads=12,
            image_size=512,
            patch_size=16,
        ),
        scale_factor=4,
        longest_edge=2048,
    ),
}
PROMPT = "User:<image>Describe what the picture shows, and where the bright patch lies.\nAssistant:"
TARGET = " A bright patch in the upper left corner"


def build(shape: str, longest_edge: int, folder: Path) -> None:
    """A random image-text model of ``shape`` with SmolLM2's tokenizer plus the image tokens, saved to ``folder``."""
    import torch
    from transformers import AutoConfig, AutoModelForImageTextToText, AutoTokenizer, Idefics3ImageProcessorPil

    from atman_onnx.export.source import resolve

    spec = SHAPES[shape]
    tokenizer = AutoTokenizer.from_pretrained(resolve("bundled:smollm2"))
    tokenizer.add_special_tokens({"additional_special_tokens": IMAGE_TOKENS})
    torch.manual_seed(0)
    config = AutoConfig.for_model(
        "idefics3",
        text_config={"model_type": "llama", "vocab_size": len(tokenizer), **spec["text"]},
        vision_config=spec["vision"],
        scale_factor=spec["scale_factor"],
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
    )
    model = AutoModelForImageTextToText.from_config(config).eval()
    tile = spec["vision"]["image_size"]
    tokens = (tile // spec["vision"]["patch_size"]) ** 2 // spec["scale_factor"] ** 2
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    Idefics3ImageProcessorPil(
        size={"longest_edge": longest_edge}, max_image_size={"longest_edge": tile}
    ).save_pretrained(folder)
    (folder / "processor_config.json").write_text(
        json.dumps({"processor_class": "Idefics3Processor", "image_seq_len": tokens})
    )


def picture(width: int = 640, height: int = 480) -> bytes:
    """A noisy picture with a bright patch in its upper left, as PNG."""
    from PIL import Image

    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 120, (height, width, 3), dtype=np.uint8)
    pixels[: height // 4, : width // 4] = 250
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def timed(explain, repeats: int) -> tuple[float, object]:
    """Median seconds of ``repeats`` runs, after one warm-up, and the last result."""
    explain()
    times, result = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        result = explain()
        times.append(time.perf_counter() - started)
    return statistics.median(times), result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", choices=SHAPES, default="tiny")
    parser.add_argument("--longest-edge", type=int, help="the processor's first resize (default: the shape's)")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--threads", type=int)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    from atman_onnx import Explainer
    from atman_onnx.export.exporter import export

    edge = args.longest_edge or SHAPES[args.shape]["longest_edge"]
    source, out = Path(f".atman/vision-cost-{args.shape}-{edge}"), Path(f".atman/vision-cost-{args.shape}-{edge}-onnx")
    if not (out / "atman.json").is_file():
        source.mkdir(parents=True, exist_ok=True)
        build(args.shape, edge, source)
        export(str(source), out, log=print)
    explainer = Explainer.load(out, provider="cpu", threads=args.threads)
    image = picture()
    rows = []
    for unit in ("region", "tile", "token"):
        seconds, result = timed(
            lambda unit=unit: explainer.explain(PROMPT, TARGET, images=[image], image_units=unit, granularity="word"),
            args.repeats,
        )
        n_image = sum(u.segment == "image" for u in result.units)
        rows.append(
            {
                "explained": f"image by {unit} (+ text by word)",
                "units": len(result.units),
                "image_units": n_image,
                "fed": len(result.prompt_ids) + len(result.target_ids) - 1,
                "passes": result.timings["passes"],
                "positions": result.timings["positions_computed"],
                "seconds": round(seconds, 2),
            }
        )
    fed = rows[0]["fed"]
    text_ids = explainer.codec.encode(" the sea and the sky" * fed, add_special_tokens=False).ids
    target_ids = explainer.codec.encode(TARGET, add_special_tokens=False).ids
    text = explainer.codec.decode(text_ids[: fed + 1 - len(target_ids)])
    for granularity in ("token", "word"):
        seconds, result = timed(
            lambda granularity=granularity: explainer.explain(text, TARGET, granularity=granularity), args.repeats
        )
        rows.append(
            {
                "explained": f"text alone by {granularity}",
                "units": len(result.units),
                "image_units": 0,
                "fed": len(result.prompt_ids) + len(result.target_ids) - 1,
                "passes": result.timings["passes"],
                "positions": result.timings["positions_computed"],
                "seconds": round(seconds, 2),
            }
        )
    base = rows[3]["seconds"]
    print(f"{args.shape}, longest edge {edge} px, image 640 x 480, repeats {args.repeats}")
    print("| explained | units | image units | fed tokens | passes | positions | seconds | / text by token |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        print(
            f"| {row['explained']} | {row['units']} | {row['image_units']} | {row['fed']} | {row['passes']} | "
            f"{row['positions']} | {row['seconds']} | {row['seconds'] / base:.2f} |"
        )
    if args.json:
        args.json.write_text(json.dumps({"shape": args.shape, "longest_edge": edge, "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
