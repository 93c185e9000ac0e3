"""Agreement of lighter graphs with float32: do fp16 / int8 exports explain the same way, and what do they save?

Usage: python tools/agreement.py DIR_FP32 DIR_INT8 [DIR_FP16 ...] [--factor S] [--repeats 3] [--threads N] [--json OUT]

The first folder is the float32 reference. Every folder explains the same real prompts with fixed targets (CASES),
at suppression factor ``--factor`` (default: the runtime's), on CPU, each run in a fresh process so that its peak
RSS (``ru_maxrss``) belongs to that graph alone; runs alternate between the folders, ``--repeats`` times, so that a
change in machine load hits them all. Against the reference it reports, per prompt and then over all prompts:
- Spearman rank correlation of the relevance totals (one per fed position: the prompt, then the target without its
  last token), with average ranks for ties (numpy only);
- top-5 overlap: how many of the reference's five most relevant positions are among the graph's five;
- the largest absolute difference of any relevance value (the [fed x target] matrix);
and the graph's size on disk (``model.onnx`` plus external data), peak RSS, and seconds per explanation (median over
the repeats of the mean over the prompts; one unmeasured explanation first). Prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from fresh import load_explainer, peak_rss_mb, run_worker

from atman_onnx.runtime.factors import DEFAULT_FACTOR

CASES = [
    ("The capital of France is", " Paris, and the capital of Germany is Berlin."),
    ("Alice gave Bob a red apple. Bob thanked", " Alice for the apple."),
    ("Water boils at 100 degrees Celsius at sea level. At sea level, water boils at", " 100 degrees."),
    (
        (
            "Marie Curie was born in Warsaw in 1867. She moved to Paris to study physics and chemistry at the "
            "Sorbonne, where she met Pierre Curie. Marie Curie was born in the city of"
        ),
        " Warsaw.",
    ),
    (
        (
            "Tom has three apples. He buys two more apples at the market and gives one to his sister Anna. "
            "How many apples does Tom have now? Tom has"
        ),
        " four apples.",
    ),
    (
        (
            "The lighthouse keeper of Varrow Point kept a log of every ship that passed the reef. In the spring the "
            "schooner Meridian anchored in the bay while her crew repaired a split mast, and her captain, a tall woman "
            "named Ilse Brandt, walked up to the lighthouse each evening. The captain of the Meridian was"
        ),
        " Ilse Brandt.",
    ),
]
TOP = 5


def ranks(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n, ties sharing their average rank."""
    x = np.asarray(x, dtype=np.float64)
    order = np.argsort(x, kind="stable")
    r = np.empty(len(x))
    r[order] = np.arange(1, len(x) + 1)
    _, inverse = np.unique(x, return_inverse=True)
    sums = np.bincount(inverse, weights=r)
    counts = np.bincount(inverse)
    return (sums / counts)[inverse]


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    ra, rb = ranks(a), ranks(b)
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def top_overlap(a: np.ndarray, b: np.ndarray, k: int = TOP) -> int:
    top = lambda x: set(np.argsort(-np.asarray(x), kind="stable")[:k].tolist())
    return len(top(a) & top(b))


def graph_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.iterdir() if p.name.startswith("model.onnx"))


def worker(folder: str, threads: int | None, factor: float) -> dict:
    started = time.perf_counter()
    explainer = load_explainer(folder, "cpu", threads)
    loaded = time.perf_counter() - started
    explainer.explain(*CASES[0], factor=factor)  # warm-up, not measured
    results, times = [], []
    for prompt, target in CASES:
        t = time.perf_counter()
        explanation = explainer.explain(prompt, target, factor=factor)
        times.append(time.perf_counter() - t)
        results.append({"relevance": explanation.relevance.tolist(), "fed": len(explanation.tokens)})
    return {
        "precision": getattr(explainer.manifest, "precision", "fp32"),
        "load_s": loaded,
        "times_s": times,
        "peak_rss_mb": peak_rss_mb(),
        "cases": results,
    }


def measure(folder: str, threads: int | None, factor: float) -> dict:
    return run_worker(__file__, folder, "--worker", "--factor", factor, *(["--threads", threads] if threads else []))


def compare(reference: dict, other: dict) -> dict:
    per_case = []
    for want, got in zip(reference["cases"], other["cases"]):
        a, b = np.array(want["relevance"]), np.array(got["relevance"])
        per_case.append(
            {
                "spearman": spearman(a.sum(1), b.sum(1)),
                "top5_overlap": top_overlap(a.sum(1), b.sum(1)),
                "max_abs_diff": float(np.abs(a - b).max()),
                "reference_max_abs": float(np.abs(a).max()),
                "positions": int(a.shape[0]),
            }
        )
    rho = [c["spearman"] for c in per_case]
    top = [c["top5_overlap"] for c in per_case]
    return {
        "spearman_mean": float(np.mean(rho)),
        "spearman_min": float(np.min(rho)),
        "top5_mean": float(np.mean(top)),
        "top5_min": int(np.min(top)),
        "max_abs_diff": max(c["max_abs_diff"] for c in per_case),
        "per_case": per_case,
    }


def table(rows: list[dict]) -> str:
    lines = [
        (
            "| precision | graph on disk | smaller | Spearman, mean (min) | top-5 overlap, mean (min) | max abs diff "
            "| peak RSS | s / explanation |"
        ),
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        agree = row.get("agreement")
        cells = [
            row["precision"],
            f"{row['graph_mb']:.0f} MB",
            f"{row['smaller']:.2f}x",
            f"{agree['spearman_mean']:.3f} ({agree['spearman_min']:.3f})" if agree else "reference",
            f"{agree['top5_mean']:.1f}/5 ({agree['top5_min']}/5)" if agree else "reference",
            f"{agree['max_abs_diff']:.3f}" if agree else "-",
            f"{row['peak_rss_mb']:.0f} MB",
            f"{row['s_per_explanation']:.2f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dirs", nargs="+", help="exported folders; the first is the float32 reference")
    parser.add_argument(
        "--factor",
        type=float,
        default=DEFAULT_FACTOR,
        help=f"suppression factor (default {DEFAULT_FACTOR:g}, the runtime's)",
    )
    parser.add_argument("--repeats", type=int, default=3, help="fresh-process runs per folder (default 3)")
    parser.add_argument("--threads", type=int, help="ONNX Runtime intra-op threads (default: its own choice)")
    parser.add_argument("--json", help="write every figure, per prompt included, to this file")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.dirs[0], args.threads, args.factor)))
        return
    if len(args.dirs) < 2:
        parser.error("give the float32 folder and at least one folder to compare with it")
    runs: dict[str, list[dict]] = {d: [] for d in args.dirs}
    for repeat in range(args.repeats):
        for folder in args.dirs:
            runs[folder].append(measure(folder, args.threads, args.factor))
            print(f"run {repeat + 1}/{args.repeats}: {folder} done", file=sys.stderr)
    reference = runs[args.dirs[0]][0]
    ref_bytes = graph_bytes(Path(args.dirs[0]))
    rows = []
    for folder in args.dirs:
        first = runs[folder][0]
        per_run = [statistics.mean(r["times_s"]) for r in runs[folder]]
        rows.append(
            {
                "folder": folder,
                "precision": first["precision"],
                "graph_mb": graph_bytes(Path(folder)) / 2**20,
                "smaller": ref_bytes / graph_bytes(Path(folder)),
                "peak_rss_mb": max(r["peak_rss_mb"] for r in runs[folder]),
                "s_per_explanation": statistics.median(per_run),
                "s_per_explanation_runs": per_run,
                "load_s": statistics.median(r["load_s"] for r in runs[folder]),
                "agreement": None if folder == args.dirs[0] else compare(reference, first),
            }
        )
    print(table(rows))
    if args.json:
        report = {"cases": CASES, "factor": args.factor, "repeats": args.repeats, "threads": args.threads, "rows": rows}
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.json}", file=sys.stderr)


if __name__ == "__main__":
    main()
