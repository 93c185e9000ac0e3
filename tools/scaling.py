"""Measure one explanation split over W Ray workers against one process of W threads, and where its time goes.

For each prompt length (``--tokens``, prompts built as tools/bench.py builds them, with an 8-token target) it runs,
alternating, ``--repeats`` times each:
- split: ``Explainer.load(DIR, threads=1, executor=RayExecutor(DIR, W, threads=1))``, the batches on W Ray actors of
  1 thread;
- threads: ``Explainer.load(DIR, threads=W)``, one process with W ONNX Runtime threads;
and reports their medians and split / threads (above 1: what Ray costs). Then it times the explanation's parts on
one thread (medians of ``--parts-repeats``, default 1: each costs about one explanation on one thread): the serial
ones, which no worker count shortens (tokenize: encoding and
units; unperturbed: the pass whose keys and values every batch reads; plan: factor rows and batches; transfer:
``ray.put`` of that cache; merge: placing the batches' log-probs and scoring), and the parallel one (every batch, on
one worker). Amdahl's law then predicts the split's speed-up over one worker, ``(S + P) / (S + P / W)``, for
``--predict-workers`` at ``--predict-tokens``: from the measurement at that length, else extrapolated from the
longest measured one, the plan and the batches growing with the square of the length (a row per position, each as
long as the sequence), the other parts linearly.

Usage: python tools/scaling.py DIR [--workers 2] [--tokens 256 1024] [--repeats 3] [--parts-repeats 1]
[--predict-tokens 1024 4096] [--predict-workers 8 64] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable, Iterable, Iterator

import numpy as np
from bench import build_case

from atman_onnx import Explainer, ExplainRequest
from atman_onnx.cluster.executor import RayExecutor, connect
from atman_onnx.runtime.encode import encode_prompt, encode_target, fed_tokens
from atman_onnx.runtime.execute import LocalExecutor, Stop, execute, unperturbed
from atman_onnx.runtime.factors import check_units, plan_factors
from atman_onnx.runtime.plan import Batch, Plan, Shared, make_plan
from atman_onnx.runtime.score import relevance
from atman_onnx.runtime.sizing import batch_size_for
from atman_onnx.runtime.units import make_units

TARGET_TOKENS = 8
SERIAL = ("tokenize", "unperturbed", "plan", "transfer", "merge")
GROWTH = {"tokenize": 1, "unperturbed": 1, "plan": 2, "transfer": 1, "merge": 1, "parallel": 2}  # power of length


class Replay:
    """An executor that yields batches' log-probs computed before, so that ``execute`` times only the merge."""

    def __init__(self, results: list[tuple[Batch, np.ndarray]]):
        self.results = results

    def run(
        self, shared: Shared, batches: Iterable[Batch], stop: Stop | None = None
    ) -> Iterator[tuple[Batch, np.ndarray]]:
        yield from self.results


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    started = time.perf_counter()
    out = fn()
    return time.perf_counter() - started, out


def parts(explainer: Explainer, prompt: str, target: str) -> dict[str, float]:
    """One explanation's parts, in seconds, on ``explainer``'s graph (one thread), as ``Explainer.run`` does them at
    token granularity."""
    import ray

    codec = explainer.codec

    def tokenize() -> tuple[list[int], list[int], list]:
        encoded = encode_prompt(codec, prompt)
        target_ids = encode_target(codec, target)
        tokens = fed_tokens(codec, encoded, target_ids)
        units = make_units(encoded.text, target, tokens, len(encoded.ids), "token", None, None, None, True)
        return encoded.ids + target_ids[:-1], target_ids, units

    out: dict[str, float] = {}
    out["tokenize"], (fed, labels, units) = timed(tokenize)
    out["unperturbed"], (shared, embeddings) = timed(lambda: unperturbed(explainer.graph, fed, labels))

    def planned() -> Plan:  # as Explainer.plan does after the unperturbed pass, with its default options
        groups = check_units([list(u.positions) for u in units], len(fed))
        factors = plan_factors(groups, len(fed), 0.0, None, embeddings)
        m = explainer.manifest
        batch = batch_size_for(m.dims, m.hidden_size, m.vocab_size, len(fed), len(labels), explainer.memory_budget_mb)
        return make_plan(shared, factors, batch)

    out["plan"], plan = timed(planned)
    out["transfer"], _ = timed(lambda: ray.put(plan.shared))
    out["parallel"], results = timed(lambda: list(LocalExecutor(explainer.graph).run(plan.shared, plan.batches)))
    out["merge"], _ = timed(lambda: relevance(plan.shared.logprobs, execute(plan, Replay(results))))
    return out


def measure(folder: str, length: int, workers: int, repeats: int, parts_repeats: int = 1) -> dict:
    """The split and threaded explanations at one prompt length, alternating, medians of ``repeats``; and the
    parts, medians of ``parts_repeats``."""
    connect("local")
    split = Explainer.load(
        folder, provider="cpu", threads=1, executor=RayExecutor(folder, workers, threads=1, provider="cpu")
    )
    threads = Explainer.load(folder, provider="cpu", threads=workers)
    try:
        prompt_ids, target_ids = build_case(threads, length, TARGET_TOKENS)
        prompt, target = threads.codec.decode(prompt_ids), threads.codec.decode(target_ids)
        request = ExplainRequest(prompt=prompt, target=target)
        warm_up = ExplainRequest(prompt=threads.codec.decode(prompt_ids[:32]), target=target)
        split.run(warm_up)  # warm up both (sessions' first calls, actors' first batches) on a short prompt
        threads.run(warm_up)
        times: dict[str, list[float]] = {"split": [], "threads": []}
        for _ in range(repeats):
            for name, explainer in (("split", split), ("threads", threads)):
                seconds, explanation = timed(lambda e=explainer: e.run(request))
                times[name].append(seconds)
        runs = [parts(split, prompt, target) for _ in range(parts_repeats)]
    finally:
        split.close()
    median = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    return {
        "tokens": length,
        "fed": len(explanation.prompt_ids) + len(explanation.target_ids) - 1,
        "passes": explanation.timings["passes"],
        "workers": workers,
        "split_s": statistics.median(times["split"]),
        "threads_s": statistics.median(times["threads"]),
        "split_times_s": times["split"],
        "threads_times_s": times["threads"],
        "parts_s": median,
    }


def amdahl(serial: float, parallel: float, workers: int) -> float:
    return (serial + parallel) / (serial + parallel / workers)


def predict(rows: list[dict], lengths: list[int], workers: list[int]) -> list[dict]:
    """Amdahl's speed-up at each length and worker count, from that length's parts or the longest measured."""
    measured = {r["tokens"]: r["parts_s"] for r in rows}
    base = max(measured)
    out = []
    for length in lengths:
        scale = length / base
        found = measured.get(length) or {k: v * scale ** GROWTH[k] for k, v in measured[base].items()}
        serial = sum(found[k] for k in SERIAL)
        for w in workers:
            out.append(
                {
                    "tokens": length,
                    "workers": w,
                    "serial_s": serial,
                    "parallel_s": found["parallel"],
                    "serial_share": serial / (serial + found["parallel"]),
                    "speedup": amdahl(serial, found["parallel"], w),
                    "from": "measured" if length in measured else f"extrapolated from {base}",
                }
            )
    return out


def table(rows: list[dict], predictions: list[dict]) -> str:
    """The results as markdown."""
    w = rows[0]["workers"]
    lines = [
        f"| tokens | fed | passes | split {w} x 1 thread s | 1 process x {w} threads s | split / threads |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {r['tokens']} | {r['fed']} | {r['passes']} | {r['split_s']:.3f} | {r['threads_s']:.3f} | "
        f"{r['split_s'] / r['threads_s']:.2f} |"
        for r in rows
    ]
    lines += [
        "",
        "| tokens | " + " | ".join(f"{k} s" for k in SERIAL) + " | serial s | parallel s (1 worker) | "
        f"serial share | Amdahl {w} workers | measured split vs 1 worker |",
        "|---:|" + "---:|" * (len(SERIAL) + 5),
    ]
    for r in rows:
        p = r["parts_s"]
        serial = sum(p[k] for k in SERIAL)
        lines.append(
            f"| {r['tokens']} | " + " | ".join(f"{p[k]:.4f}" for k in SERIAL) + f" | {serial:.3f} | "
            f"{p['parallel']:.3f} | {serial / (serial + p['parallel']):.3f} | "
            f"{amdahl(serial, p['parallel'], w):.2f} | {(serial + p['parallel']) / r['split_s']:.2f} |"
        )
    lines += [
        "",
        "| tokens | workers | serial s | parallel s (1 worker) | serial share | Amdahl speed-up | from |",
        "|---:|---:|---:|---:|---:|---:|---|",
    ]
    lines += [
        f"| {p['tokens']} | {p['workers']} | {p['serial_s']:.3f} | {p['parallel_s']:.3f} | "
        f"{p['serial_share']:.4f} | {p['speedup']:.1f} | {p['from']} |"
        for p in predictions
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dir")
    parser.add_argument("--workers", type=int, default=2, help="W: Ray workers of 1 thread, and threads (default 2)")
    parser.add_argument("--tokens", type=int, nargs="+", default=[256, 1024], help="prompt lengths (default 256 1024)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each, alternating (default 3)")
    parser.add_argument("--parts-repeats", type=int, default=1, help="timings of the parts (default 1)")
    parser.add_argument("--predict-tokens", type=int, nargs="+", default=[1024, 4096])
    parser.add_argument("--predict-workers", type=int, nargs="+", default=[8, 64])
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    rows = []
    for length in args.tokens:  # each length reported and saved as soon as it is measured: long runs get cut off
        rows.append(measure(args.dir, length, args.workers, args.repeats, args.parts_repeats))
        predictions = predict(rows, args.predict_tokens, args.predict_workers)
        print(f"measured {length} tokens\n{table(rows, predictions)}\n", flush=True)
        if args.json:
            with open(args.json, "w") as handle:
                json.dump({"folder": args.dir, "rows": rows, "predictions": predictions}, handle, indent=2)


if __name__ == "__main__":
    main()
