"""Long prompts: peak memory and throughput of an explanation against a plain forward pass, side by side in one run.

For prompts of 512 to 8,192 tokens (prompt plus an 8-token target within the model's positions) it measures, each
in a fresh process so that peak RSS belongs to that measurement alone:
- plain: one unbatched call of the graph over the whole sequence (no perturbation, no chunks);
- new: the explanation as the engine runs it by default (query chunks on a graph with a row cache, batch and
  chunk from the memory budget);
- old: the same explanation with each suffix in one call (``chunk_size`` past the sequence), as before chunking.
The explanation suppresses ``--units`` equal spans of the prompt (the prefix schedule then computes about
``units x length / 2`` positions). It reports median seconds, peak RSS, positions computed and positions per
second. Usage: python tools/bench_long.py DIR [--lengths 512 1024 2048 4096 8192] [--units 8] [--repeats 1]
[--engines old new] [--provider cpu|cuda] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
from bench import TARGET, TEXT
from fresh import load_explainer, peak_rss_mb, run_worker

NO_CHUNKS = 1 << 30  # a chunk longer than any sequence: each suffix in one call


def build_case(explainer, length: int, target_tokens: int, units: int) -> tuple[str, str, list[list[int]]]:
    """A prompt of ``length`` tokens, a target of ``target_tokens`` tokens, and ``units`` equal character spans."""
    ids = explainer.codec.encode(TEXT * (1 + length // 60), add_special_tokens=False).ids[:length]
    target = explainer.codec.encode(TARGET, add_special_tokens=False).ids[:target_tokens]
    prompt = explainer.codec.decode(ids)
    edges = np.linspace(0, len(prompt), units + 1).astype(int)
    return prompt, explainer.codec.decode(target), [[int(a), int(b)] for a, b in zip(edges[:-1], edges[1:])]


def worker(folder: str, engine: str, length: int, target_tokens: int, units: int, repeats: int, provider: str) -> dict:
    """Time one engine (or the plain pass) in this process; returns medians, peak RSS and work."""
    explainer = load_explainer(folder, provider)
    prompt, target, spans = build_case(explainer, length, target_tokens, units)
    times, positions, batch, chunk = [], 0, 1, None
    for _ in range(repeats):
        started = time.perf_counter()
        if engine == "plain":
            prompt_ids = explainer.codec.encode(prompt, add_special_tokens=False).ids
            target_ids = explainer.codec.encode(target, add_special_tokens=False).ids
            fed = prompt_ids + target_ids[:-1]
            explainer.graph.run(
                np.array([fed]), np.ones((1, len(fed)), np.float32),
                np.arange(len(prompt_ids) - 1, len(fed))[None], np.array([target_ids]),
            )
            positions = len(fed)
        else:
            options = {"chunk_size": NO_CHUNKS} if engine == "old" else {}
            result = explainer.explain(prompt, target, granularity="spans", spans=spans, **options)
            positions, batch = result.timings["positions_computed"], result.timings["batch_size"]
            chunk = result.timings.get("chunk_size")
        times.append(time.perf_counter() - started)
    seconds = statistics.median(times)
    return {"engine": engine, "length": length, "batch_size": batch, "chunk_size": chunk, "median_s": seconds,
            "times_s": times, "peak_rss_mb": peak_rss_mb(), "positions": positions,
            "positions_per_s": positions / seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dir")
    parser.add_argument("--lengths", type=int, nargs="+", default=[512, 1024, 2048, 4096, 8192])
    parser.add_argument("--target-tokens", type=int, default=8)
    parser.add_argument("--units", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--engines", nargs="+", default=["old", "new"], choices=["old", "new"])
    parser.add_argument("--provider", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.dir, args.worker, args.lengths[0], args.target_tokens, args.units,
                                args.repeats, args.provider)))
        return
    rows = []
    print(f"{'tokens':>6} {'engine':>6} {'batch':>5} {'chunk':>5} {'median s':>9} {'peak RSS MB':>11} "
          f"{'RSS vs plain':>12} {'positions':>10} {'positions/s':>11}")
    for length in args.lengths:
        plain = None
        for engine in ("plain", *args.engines):
            r = run_worker(__file__, args.dir, "--worker", engine, "--lengths", length, "--target-tokens",
                           args.target_tokens, "--units", args.units, "--repeats", args.repeats,
                           "--provider", args.provider)
            plain = plain or r
            r["rss_vs_plain"] = r["peak_rss_mb"] / plain["peak_rss_mb"]
            rows.append(r)
            print(f"{length:>6} {engine:>6} {r['batch_size']:>5} {r['chunk_size'] or '-':>5} {r['median_s']:>9.2f} "
                  f"{r['peak_rss_mb']:>11.0f} {r['rss_vs_plain']:>12.2f} {r['positions']:>10} "
                  f"{r['positions_per_s']:>11.0f}", flush=True)
            if args.json:  # after every row, so that a run cut short keeps what it measured
                with open(args.json, "w") as handle:
                    json.dump({"dir": args.dir, "provider": args.provider, "units": args.units,
                               "repeats": args.repeats, "rows": rows}, handle, indent=2)


if __name__ == "__main__":
    main()
