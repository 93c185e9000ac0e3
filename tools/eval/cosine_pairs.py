"""Count pairs of prompt positions by the cosine of their input embeddings: pairs of identical tokens, and pairs
of different tokens at or above each threshold (docs/lab/quality.md, "Conceptual suppression": what a threshold
joins besides copies of the same token).

Usage: python tools/eval/cosine_pairs.py DIR [--items 12] [--thresholds 0.6 0.7 0.8]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from atman_onnx import Explainer
from atman_onnx.runtime.execute import unperturbed
from atman_onnx.runtime.factors import cosine_similarity


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dir", help="an export of the shipped model")
    parser.add_argument("--set", default=str(Path(__file__).with_name("qa_set.json")))
    parser.add_argument("--items", type=int, default=12, help="the first ITEMS prompts of the set")
    parser.add_argument("--thresholds", type=float, nargs="+", default=[0.6, 0.7, 0.8])
    args = parser.parse_args()
    explainer = Explainer.load(args.dir, provider="cpu")
    items = json.loads(Path(args.set).read_text(encoding="utf-8"))["items"][: args.items]
    pairs = same = 0
    different = dict.fromkeys(args.thresholds, 0)
    for item in items:
        ids = np.asarray(item["prompt_ids"])
        _, embeddings = unperturbed(explainer.graph, list(ids), list(item["target_ids"][:1]))
        first, second = np.triu_indices(len(ids), 1)
        cos = cosine_similarity(embeddings)[first, second]
        equal = ids[first] == ids[second]
        pairs, same = pairs + len(equal), same + int(equal.sum())
        for threshold in args.thresholds:
            different[threshold] += int(((cos >= threshold) & ~equal).sum())
    print(f"{len(items)} prompts, {pairs} pairs of positions: {same} of identical tokens")
    for threshold, count in different.items():
        print(f"different tokens at cosine >= {threshold:g}: {count}")


if __name__ == "__main__":
    main()
