"""Long prompts: peak memory and throughput of an explanation against a plain forward pass, side by side in one run.

For prompts of 256 to 8,192 tokens (prompt plus an 8-token target within the model's positions) it measures, each
in a fresh process so that peak RSS belongs to that measurement alone:
- plain: one unbatched call of the graph over the whole sequence (no perturbation, no chunks);
- new: the explanation as the engine runs it by default (query chunks on a graph with a row cache, batch and
  chunk from the memory budget);
- old: the same explanation with each suffix in one call (``chunk_size`` past the sequence), as before chunking.
The explanation suppresses ``--units`` equal spans of the prompt (the prefix schedule then computes about
``units x length / 2`` positions). It reports median seconds, peak RSS, positions computed and positions per
second, and the planner's estimate of the memory above the loaded model (``Prepared.memory_mb``, the plan's largest
call; for plain, ``row_mb`` of one whole row) beside the measured peak above the RSS after loading (the peak
restarted there, and the heap freed by loading handed back to the system first, so that neither loading's own
transient nor its freed memory hides what the explanation takes).

``--rag`` measures instead two retrieval-style prompts of the evaluation set's contexts as documents separated by
blank lines, with a question at the end: 5 documents at sentence level and 48 documents at paragraph level (336 and
3,051 fed tokens for SmolLM2), each engine in a fresh process, and the time ratio of the long over the short one.

Usage: python tools/bench_long.py DIR [--lengths 256 512 1024 2048 4096 8192] [--units 8] [--repeats 1]
[--engines old new] [--provider cpu|cuda] [--rag] [--json OUT]
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import time
from pathlib import Path

import numpy as np
from bench import TARGET, TEXT
from fresh import load_explainer, peak_rss_mb, peak_rss_since_reset_mb, reset_peak_rss, run_worker

from atman_onnx import ExplainRequest
from atman_onnx.runtime.sizing import row_mb

NO_CHUNKS = 1 << 30  # a chunk longer than any sequence: each suffix in one call
QA_SET = Path(__file__).resolve().parent / "eval" / "qa_set.json"
RAG = ((5, "sentence"), (48, "paragraph"))  # documents, granularity: 336 and 3,051 fed SmolLM2 tokens


def rag_case(documents: int) -> tuple[str, str]:
    """A prompt of ``documents`` evaluation contexts separated by blank lines and the first item's question; its
    answer as the target."""
    items = json.loads(QA_SET.read_text())["items"]
    contexts = [items[k % len(items)]["context"] for k in range(documents)]
    question = items[0]
    return "\n\n".join(contexts) + f"\n\nQuestion: {question['question']}\nAnswer:", " " + question["answer"]


def rag_worker(folder: str, engine: str, documents: int, granularity: str, provider: str) -> dict:
    """One retrieval-style explanation in this process."""
    explainer = load_explainer(folder, provider)
    prompt, target = rag_case(documents)
    options = {"chunk_size": NO_CHUNKS} if engine == "old" else {}
    started = time.perf_counter()
    result = explainer.explain(prompt, target, granularity=granularity, **options)
    seconds = time.perf_counter() - started
    return {
        "engine": engine,
        "documents": documents,
        "granularity": granularity,
        "tokens": len(result.tokens),
        "units": len(result.units),
        "passes": result.timings["passes"],
        "batch_size": result.timings["batch_size"],
        "chunk_size": result.timings.get("chunk_size"),
        "seconds": seconds,
        "peak_rss_mb": peak_rss_mb(),
        "positions": result.timings["positions_computed"],
    }


def build_case(explainer, length: int, target_tokens: int, units: int) -> tuple[str, str, list[list[int]]]:
    """A prompt of ``length`` tokens (fewer where the target would not fit in the model's positions), a target of
    ``target_tokens`` tokens, and ``units`` equal character spans."""
    length = min(length, explainer.manifest.max_positions - target_tokens)
    ids = explainer.codec.encode(TEXT * (1 + length // 60), add_special_tokens=False).ids[:length]
    target = explainer.codec.encode(TARGET, add_special_tokens=False).ids[:target_tokens]
    prompt = explainer.codec.decode(ids)
    edges = np.linspace(0, len(prompt), units + 1).astype(int)
    return prompt, explainer.codec.decode(target), [[int(a), int(b)] for a, b in itertools.pairwise(edges)]


def worker(folder: str, engine: str, length: int, target_tokens: int, units: int, repeats: int, provider: str) -> dict:
    """Time one engine (or the plain pass) in this process; returns medians, peak RSS and work."""
    explainer = load_explainer(folder, provider)
    loaded_mb = reset_peak_rss()
    prompt, target, spans = build_case(explainer, length, target_tokens, units)
    times, positions, batch, chunk, estimate = [], 0, 1, None, None
    for _ in range(repeats):
        started = time.perf_counter()
        if engine == "plain":
            prompt_ids = explainer.codec.encode(prompt, add_special_tokens=False).ids
            target_ids = explainer.codec.encode(target, add_special_tokens=False).ids
            fed = prompt_ids + target_ids[:-1]
            explainer.graph.run(
                np.array([fed]),
                np.ones((1, len(fed)), np.float32),
                np.arange(len(prompt_ids) - 1, len(fed))[None],
                np.array([target_ids]),
            )
            positions = len(fed)
        else:
            options = {"chunk_size": NO_CHUNKS} if engine == "old" else {}
            fields = {"prompt": prompt, "target": target, "granularity": "spans", "spans": spans, **options}
            prepared = explainer.prepare(ExplainRequest.from_dict(fields))
            estimate = prepared.memory_mb
            result = explainer.run(prepared)
            positions, batch = result.timings["positions_computed"], result.timings["batch_size"]
            chunk = result.timings.get("chunk_size")
        times.append(time.perf_counter() - started)
    seconds = statistics.median(times)
    m = explainer.manifest
    n_prompt = len(explainer.codec.encode(prompt, add_special_tokens=False).ids)
    n_fed = n_prompt + target_tokens - 1
    if engine == "plain":  # one row fed whole, nothing shared
        estimate = row_mb(m.dims, m.hidden_size, m.vocab_size, n_fed, target_tokens)
    peak = peak_rss_mb()
    above = peak_rss_since_reset_mb() - loaded_mb
    return {
        "engine": engine,
        "length": length,
        "prompt_tokens": n_prompt,
        "loaded_rss_mb": loaded_mb,
        "estimate_mb": estimate,
        "measured_mb": above,
        "batch_size": batch,
        "chunk_size": chunk,
        "median_s": seconds,
        "times_s": times,
        "peak_rss_mb": peak,
        "positions": positions,
        "positions_per_s": positions / seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dir")
    parser.add_argument("--lengths", type=int, nargs="+", default=[256, 512, 1024, 2048, 4096, 8192])
    parser.add_argument("--target-tokens", type=int, default=8)
    parser.add_argument("--units", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--engines", nargs="+", default=["old", "new"], choices=["old", "new"])
    parser.add_argument("--provider", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--rag", action="store_true", help="the two retrieval-style prompts instead of --lengths")
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--documents", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--granularity", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker and args.documents:
        print(json.dumps(rag_worker(args.dir, args.worker, args.documents, args.granularity, args.provider)))
        return
    if args.rag:
        rag(args)
        return
    if args.worker:
        print(
            json.dumps(
                worker(
                    args.dir, args.worker, args.lengths[0], args.target_tokens, args.units, args.repeats, args.provider
                )
            )
        )
        return
    rows = []
    print(
        f"{'tokens':>6} {'engine':>6} {'batch':>5} {'chunk':>5} {'median s':>9} {'peak RSS MB':>11} "
        f"{'RSS vs plain':>12} {'positions':>10} {'positions/s':>11} {'above load MB':>13} {'estimate MB':>11}"
    )
    for length in args.lengths:
        plain = None
        for engine in ("plain", *args.engines):
            r = run_worker(
                __file__,
                args.dir,
                "--worker",
                engine,
                "--lengths",
                length,
                "--target-tokens",
                args.target_tokens,
                "--units",
                args.units,
                "--repeats",
                args.repeats,
                "--provider",
                args.provider,
            )
            plain = plain or r
            r["rss_vs_plain"] = r["peak_rss_mb"] / plain["peak_rss_mb"]
            rows.append(r)
            print(
                f"{r['prompt_tokens']:>6} {engine:>6} {r['batch_size']:>5} {r['chunk_size'] or '-':>5} "
                f"{r['median_s']:>9.2f} {r['peak_rss_mb']:>11.0f} {r['rss_vs_plain']:>12.2f} {r['positions']:>10} "
                f"{r['positions_per_s']:>11.0f} {r['measured_mb']:>13.0f} {r['estimate_mb']:>11.0f}",
                flush=True,
            )
            if args.json:  # after every row, so that a run cut short keeps what it measured
                with open(args.json, "w") as handle:
                    json.dump(
                        {
                            "dir": args.dir,
                            "provider": args.provider,
                            "units": args.units,
                            "repeats": args.repeats,
                            "rows": rows,
                        },
                        handle,
                        indent=2,
                    )


def rag(args: argparse.Namespace) -> None:
    """The two retrieval-style prompts, each engine in a fresh process, and the long/short time ratio."""
    rows = []
    print(
        f"{'docs':>4} {'granularity':>11} {'engine':>6} {'tokens':>6} {'passes':>6} {'batch':>5} {'chunk':>5} "
        f"{'seconds':>8} {'peak RSS MB':>11}"
    )
    for documents, granularity in RAG:
        for engine in args.engines:
            r = run_worker(
                __file__,
                args.dir,
                "--worker",
                engine,
                "--documents",
                documents,
                "--granularity",
                granularity,
                "--provider",
                args.provider,
            )
            rows.append(r)
            print(
                f"{documents:>4} {granularity:>11} {engine:>6} {r['tokens']:>6} {r['passes']:>6} "
                f"{r['batch_size']:>5} {r['chunk_size'] or '-':>5} {r['seconds']:>8.1f} {r['peak_rss_mb']:>11.0f}",
                flush=True,
            )
    for engine in args.engines:
        short, long = (next(r for r in rows if r["engine"] == engine and r["documents"] == d) for d, _ in RAG)
        ratio = long["seconds"] / short["seconds"]
        print(f"{engine}: {RAG[1][0]} documents / {RAG[0][0]} documents time ratio {ratio:.1f}")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"dir": args.dir, "provider": args.provider, "rag": rows}, handle, indent=2)


if __name__ == "__main__":
    main()
