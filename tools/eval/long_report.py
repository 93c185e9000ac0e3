"""Summarise the long-context runs (tools/eval/long-results/*.jsonl) as a table per method and size.

For each item, the documents' sentences are ranked: by their own score where the method scored them; a search's
sentences that were not refined come after those that were, in the order of the score of the finest unit around
them that was scored. Reported per size: evidence top-1 (the evidence sentence ranks first among the documents'
sentences), mAP (the mean of 1 / its rank: one relevant sentence per item), mean passes and median seconds.

``--replay K`` adds, for each search run with a larger top k, the same search replayed with top k = K from its
cached levels: exact, since a stricter rule scores a subset of the same units (its seconds are not measured, so
they are left out). A second table compares searches that end at token level with flat token level's passes.

Usage: python tools/eval/long_report.py [--replay 1 2] [--set natural]
"""

from __future__ import annotations

import argparse
import json
import statistics

from long_run import SETS


def inside(span: list[int], outer: list[int]) -> bool:
    return outer[0] <= span[0] and span[1] <= outer[1]


def search_order(levels: list[dict], sentences: list[list[int]]) -> list[int]:
    """The documents' sentences, best first, as a search scored them (see the module's doc)."""
    keys = []
    for index, span in enumerate(sentences):
        key = (len(levels), 0.0)
        for depth, level in enumerate(reversed(levels)):
            scores = [v for s, v in zip(level["spans"], level["total"]) if inside(span, s)]
            if scores:
                key = (depth, -max(scores))
                break
        keys.append((key, index))
    return [index for _, index in sorted(keys)]


def replay(levels: list[dict], top_k: int) -> list[dict]:
    """The levels a search with ``top_k`` would have scored: each level's units inside the top ``top_k`` of the
    level before (of positive score) that the cached run also scored."""
    out = [levels[0]]
    for level in levels[1:]:
        last = out[-1]
        ranked = sorted(range(len(last["total"])), key=lambda i: -last["total"][i])
        chosen = [last["spans"][i] for i in ranked[:top_k] if last["total"][i] > 0]
        keep = [i for i, s in enumerate(level["spans"]) if any(inside(s, c) for c in chosen)]
        if not keep:
            break
        out.append({**level, "spans": [level["spans"][i] for i in keep], "total": [level["total"][i] for i in keep]})
    return out


def rows(tag: str, results: list[dict], items: dict[str, dict]) -> dict[int, dict]:
    """Per size: items, top-1, mAP, mean passes and median seconds (None for a replay)."""
    table: dict[int, dict] = {}
    for n in sorted({r["documents"] for r in results}):
        mine = [r for r in results if r["documents"] == n]
        ranks = []
        for r in mine:
            item = items[r["id"]]
            if "scores" in r:
                order = sorted(range(len(r["scores"])), key=lambda i: -r["scores"][i])
            else:
                order = search_order(r["levels"], item["sentence_spans"])
            ranks.append(order.index(item["evidence"]) + 1)
        seconds = [r["seconds"] for r in mine if r.get("seconds") is not None]
        table[n] = {
            "items": len(mine),
            "top1": sum(rank == 1 for rank in ranks) / len(ranks),
            "map": statistics.fmean(1 / rank for rank in ranks),
            "passes": statistics.fmean(r["passes"] for r in mine),
            "seconds": statistics.median(seconds) if seconds else None,
            "sentences": statistics.fmean(len(items[r["id"]]["sentence_spans"]) for r in mine),
        }
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replay", type=int, nargs="*", default=[])
    parser.add_argument("--set", choices=sorted(SETS), default="synthetic")
    args = parser.parse_args()
    set_file, results_dir = SETS[args.set]
    items = {item["id"]: item for item in json.loads(set_file.read_text())["items"]}
    runs = {}
    for path in sorted(results_dir.glob("*.jsonl")):
        results = [json.loads(line) for line in path.read_text().splitlines()]
        runs[path.stem] = results
        k = next((int(part[1:]) for part in path.stem.split("-") if part.startswith("k") and part[1:].isdigit()), None)
        for top_k in args.replay:
            if k is not None and top_k < k:
                replayed = []
                for r in results:
                    levels = replay(r["levels"], top_k)
                    passes = 1 + sum(len(level["spans"]) for level in levels)  # one prompt-only completion
                    replayed.append({**r, "levels": levels, "passes": passes, "seconds": None})
                runs[f"{path.stem} replayed k{top_k}"] = replayed
    print("| method | documents | items | sentences | evidence top-1 | mAP | passes | median s |")
    print("|---|---|---|---|---|---|---|---|")
    for tag, results in runs.items():
        for n, row in rows(tag, results, items).items():
            seconds = "-" if row["seconds"] is None else f"{row['seconds']:.1f}"
            print(
                f"| {tag} | {n} | {row['items']} | {row['sentences']:.0f} | {row['top1']:.2f} | {row['map']:.2f} | "
                f"{row['passes']:.1f} | {seconds} |"
            )
    token_rows(runs)


def token_rows(runs: dict[str, list[dict]]) -> None:
    """For searches down to token level: the token level's own passes and the whole search's, against flat token
    level's (a pass per prompt token and the unperturbed one), per size."""
    print()
    print("| method | documents | items | token level passes | search passes | flat token passes | token / flat |")
    print("|---|---|---|---|---|---|---|")
    for tag, results in runs.items():
        deep = [r for r in results if r.get("levels") and r["levels"][-1]["granularity"] == "token"]
        for n in sorted({r["documents"] for r in deep}):
            mine = [r for r in deep if r["documents"] == n and "prompt_tokens" in r]
            if not mine:
                continue
            token = statistics.fmean(len(r["levels"][-1]["spans"]) for r in mine)
            flat = statistics.fmean(r["prompt_tokens"] + 1 for r in mine)
            search = statistics.fmean(r["passes"] for r in mine)
            print(f"| {tag} | {n} | {len(mine)} | {token:.1f} | {search:.1f} | {flat:.0f} | 1/{flat / token:.0f} |")


if __name__ == "__main__":
    main()
