"""Run one method over the long-context evidence set (tools/eval/long_set.json), one item at a time, each item's
result appended to a cache file at once, so that a run cut off loses nothing and a rerun skips what is done.

Methods:
- ``atman``: this project's explanation of the item's target, at ``--granularity`` (a level or a chain such as
  ``paragraph,sentence``) with the refinement options given, on an exported SmolLM2 through ONNX Runtime. The cache
  keeps every level scored (spans and totals), so ``long_report.py`` can also replay stricter rules exactly.
- ``contextcite``: ContextCite (PyPI ``context-cite``) with its defaults (64 ablations, keep probability 0.5,
  Lasso), on the same SmolLM2 through transformers and the same token ids: the prompt is the item's own text (no
  chat template), the sources are the documents' sentences, and the response is the item's target.

Both use 2 threads and time only the explanation (the model is loaded once, before).

Usage: python tools/eval/long_run.py EXPORT_DIR --method atman --granularity paragraph,sentence [--sizes 16 32]
       python tools/eval/long_run.py EXPORT_DIR --method contextcite [--sizes 16 32]
       (``--set natural``: the natural-text set, tools/eval/long_set_natural.json, cached in long-results/natural)
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent
# each set: its items (long_set.py) and the folder of its cached results
SETS = {
    "synthetic": (HERE / "long_set.json", HERE / "long-results"),
    "natural": (HERE / "long_set_natural.json", HERE / "long-results" / "natural"),
}


def atman_runner(args: argparse.Namespace):
    from atman_onnx import Explainer

    explainer = Explainer.load(args.dir, threads=2)
    options = {"granularity": args.granularity, "group_level": args.group_level, "refine_top_k": args.top_k}
    if args.mass is not None:
        options["refine_mass"] = args.mass

    def run(item: dict) -> dict:
        started = time.perf_counter()
        explanation = explainer.explain(item["prompt"], item["target"], **options)
        seconds = time.perf_counter() - started
        levels = [
            {
                "granularity": level.granularity,
                "spans": [[u.start, u.end] for u in level.units if u.segment == "prompt"],
                "total": [float(v) for u, v in zip(level.units, level.relevance.sum(axis=1)) if u.segment == "prompt"],
            }
            for level in explanation.scored_levels
        ]
        # prompt_tokens + 1: the passes of flat token level (a unit per prompt token, and the unperturbed pass)
        return {
            "seconds": seconds,
            "passes": explanation.timings["passes"],
            "prompt_tokens": len(explanation.prompt_ids),
            "levels": levels,
        }

    tag = f"atman-{args.granularity.replace(',', '-')}-k{args.top_k}-{args.group_level}" + (
        f"-m{args.mass:g}" if args.mass is not None else ""
    )
    return tag, run


def contextcite_runner(args: argparse.Namespace):
    import torch
    from context_cite import ContextCiter
    from context_cite.context_partitioner import BaseContextPartitioner

    from atman_onnx.export import source

    torch.set_num_threads(2)
    model, tokenizer = source.load("bundled:smollm2")

    class Sentences(BaseContextPartitioner):
        """The documents' sentences as sources; an ablated context drops their characters, keeping the rest."""

        def __init__(self, context: str, spans: list[list[int]]):
            super().__init__(context)
            self.spans = spans

        @property
        def num_sources(self) -> int:
            return len(self.spans)

        def split_context(self) -> None:
            pass

        def get_source(self, index: int) -> str:
            a, b = self.spans[index]
            return self.context[a:b]

        def get_context(self, mask=None) -> str:
            keep = np.ones(len(self.spans), dtype=bool) if mask is None else mask
            out, at = [], 0
            for (a, b), kept in zip(self.spans, keep):
                out.append(self.context[at:a] + (self.context[a:b] if kept else ""))
                at = b
            return "".join(out) + self.context[at:]

    class PlainCiter(ContextCiter):
        """The item's prompt as it is (the one this project explains), and its target as the response."""

        def __init__(self, item: dict):
            end = item["document_spans"][-1][1]
            partitioner = Sentences(item["prompt"][:end], item["sentence_spans"])
            super().__init__(model, tokenizer, partitioner.context, "", partitioner=partitioner)
            self.suffix = item["prompt"][end:]
            self._cache["output"] = item["prompt"] + item["target"]

        def _get_prompt_ids(self, mask=None, return_prompt=False):
            prompt = self.partitioner.get_context(mask) + self.suffix
            ids = self.tokenizer.encode(prompt, add_special_tokens=False)
            return (ids, prompt) if return_prompt else ids

    def run(item: dict) -> dict:
        started = time.perf_counter()
        citer = PlainCiter(item)
        weights = citer.get_attributions(verbose=False)
        seconds = time.perf_counter() - started
        return {"seconds": seconds, "passes": citer.num_ablations, "scores": [float(w) for w in weights]}

    return "contextcite-64", run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dir", help="an export of the shipped model")
    parser.add_argument("--method", choices=("atman", "contextcite"), default="atman")
    parser.add_argument("--granularity", default="paragraph,sentence")
    parser.add_argument("--top-k", type=int, default=3)
    parser.add_argument("--mass", type=float)
    parser.add_argument("--group-level", default="auto")
    parser.add_argument("--sizes", type=int, nargs="+", default=[8, 16, 32, 64])
    parser.add_argument("--items", type=int, help="at most this many items per size")
    parser.add_argument("--set", choices=sorted(SETS), default="synthetic")
    args = parser.parse_args()
    set_file, results = SETS[args.set]
    items = json.loads(set_file.read_text())["items"]
    tag, run = atman_runner(args) if args.method == "atman" else contextcite_runner(args)
    results.mkdir(parents=True, exist_ok=True)
    cache = results / f"{tag}.jsonl"
    done = {json.loads(line)["id"] for line in cache.read_text().splitlines()} if cache.exists() else set()
    for n in args.sizes:
        mine = [item for item in items if item["documents"] == n][: args.items]
        for item in mine:
            if item["id"] in done:
                continue
            result = {"id": item["id"], "documents": n, **run(item)}
            with cache.open("a") as handle:
                handle.write(json.dumps(result) + "\n")
            print(f"{tag} {item['id']}: {result['seconds']:.1f} s, {result['passes']} passes", flush=True)


if __name__ == "__main__":
    main()
