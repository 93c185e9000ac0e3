"""Benchmark AtMan schedules against a plain forward pass, on one exported model, side by side in one run.

For prompts of about 64, 128, 256 and 512 tokens and an 8-token target it measures, each in a fresh process so
that peak RSS belongs to that schedule alone:
- plain: one batched forward over the full sequence (no perturbation), at the schedules' batch size;
- naive: the whole explanation with one full-length pass per explained position, batched;
- prefix (the default): passes that feed only positions >= the suppressed one, on the cached unperturbed prefix.
It reports median seconds, peak RSS, token positions computed, and seconds per computed position relative to the
plain forward's. Usage: python tools/bench.py DIR [--lengths 64 128 256 512] [--repeats 3] [--provider cpu|cuda]
[--json OUT]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
from fresh import load_explainer, peak_rss_mb, run_worker

TEXT = (
    "The lighthouse keeper of Varrow Point kept a log of every ship that passed the reef. In the spring of that "
    "year he wrote that the schooner Meridian had anchored in the bay for three days while her crew repaired a "
    "split mast, and that her captain, a tall woman named Ilse Brandt, had walked up to the lighthouse each "
    "evening to ask about the weather. The keeper's daughter, Nora, learned from her the names of the southern "
    "stars and the knots that sailors use to reef a sail in a storm. "
)
TARGET = " The captain of the Meridian was Ilse Brandt, who taught Nora"


def build_case(explainer, length: int, target_tokens: int) -> tuple[list[int], list[int]]:
    """A prompt of exactly ``length`` tokens and a target of ``target_tokens`` tokens."""
    ids = explainer.codec.encode(TEXT * (1 + length // 60), add_special_tokens=False).ids
    target = explainer.codec.encode(TARGET, add_special_tokens=False).ids
    return ids[:length], target[:target_tokens]


def worker(
    folder: str, schedule: str, length: int, target_tokens: int, repeats: int, batch: int, provider: str
) -> dict:
    """Time one schedule in this process; returns medians, peak RSS and work."""
    explainer = load_explainer(folder, provider)
    prompt_ids, target_ids = build_case(explainer, length, target_tokens)
    prompt = explainer.codec.decode(prompt_ids)
    target = explainer.codec.decode(target_ids)
    times, positions = [], 0
    for _ in range(repeats):
        started = time.perf_counter()
        if schedule == "plain":
            fed = prompt_ids + target_ids[:-1]
            n = len(fed)
            explainer.graph.run(
                np.tile(fed, (batch, 1)),
                np.ones((batch, n), np.float32),
                np.tile(np.arange(length - 1, n), (batch, 1)),
                np.tile(target_ids, (batch, 1)),
            )
            positions = batch * n
        else:
            result = explainer.explain(prompt, target, batch_size=batch, schedule=schedule)
            positions = result.timings["positions_computed"]
        times.append(time.perf_counter() - started)
    return {
        "schedule": schedule,
        "length": length,
        "batch_size": batch,
        "median_s": statistics.median(times),
        "times_s": times,
        "peak_rss_mb": peak_rss_mb(),
        "positions": positions,
    }


def measure(args: argparse.Namespace, schedule: str, length: int, batch: int) -> dict:
    return run_worker(
        __file__,
        args.dir,
        "--worker",
        schedule,
        "--lengths",
        length,
        "--target-tokens",
        args.target_tokens,
        "--repeats",
        args.repeats,
        "--batch-size",
        batch,
        "--provider",
        args.provider,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dir")
    parser.add_argument("--lengths", type=int, nargs="+", default=[64, 128, 256, 512])
    parser.add_argument("--target-tokens", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, help="default: the explainer's memory-budget choice")
    parser.add_argument("--provider", default="cpu", choices=["cpu", "cuda"], help="execution provider (default cpu)")
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        out = worker(
            args.dir, args.worker, args.lengths[0], args.target_tokens, args.repeats, args.batch_size, args.provider
        )
        print(json.dumps(out))
        return
    from atman_onnx.core.contract import load_manifest
    from atman_onnx.runtime.sizing import DEFAULT_MEMORY_BUDGET_MB, batch_size_for

    manifest = load_manifest(args.dir)
    rows = []
    print(
        f"{'tokens':>6} {'batch':>5} {'schedule':>8} {'median s':>9} {'peak RSS MB':>11} {'positions':>10} "
        f"{'vs naive':>8} {'s/pos vs plain':>14} {'RSS vs plain':>12}"
    )
    for length in args.lengths:
        n_fed = length + args.target_tokens - 1
        batch = args.batch_size or batch_size_for(
            manifest.dims,
            manifest.hidden_size,
            manifest.vocab_size,
            n_fed,
            args.target_tokens,
            DEFAULT_MEMORY_BUDGET_MB,
        )
        results = {s: measure(args, s, length, batch) for s in ("plain", "naive", "prefix")}
        per_position = {s: r["median_s"] / r["positions"] for s, r in results.items()}
        for schedule, r in results.items():
            r["time_vs_naive"] = r["median_s"] / results["naive"]["median_s"]
            r["per_position_vs_plain"] = per_position[schedule] / per_position["plain"]
            r["rss_vs_plain"] = r["peak_rss_mb"] / results["plain"]["peak_rss_mb"]
            rows.append(r)
            print(
                f"{length:>6} {batch:>5} {schedule:>8} {r['median_s']:>9.3f} {r['peak_rss_mb']:>11.0f} "
                f"{r['positions']:>10} {r['time_vs_naive']:>8.2f} {r['per_position_vs_plain']:>14.2f} "
                f"{r['rss_vs_plain']:>12.2f}",
                flush=True,
            )
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(
                {
                    "model": manifest.source,
                    "mode": manifest.mode,
                    "provider": args.provider,
                    "repeats": args.repeats,
                    "rows": rows,
                },
                handle,
                indent=2,
            )


if __name__ == "__main__":
    main()
