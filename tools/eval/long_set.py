"""Generate the long-context evidence set (tools/eval/long_set.json): questions whose answer rests on one sentence
among 8 to 64 documents.

Two sets share this builder:
- the synthetic set (tools/eval/long_set.json): documents of templated facts, below;
- the natural set (``--pool tools/eval/natural_pool.json --out tools/eval/long_set_natural.json``): documents drawn
  without replacement from a pool of passages of varied prose (news items, encyclopedia entries, notices, reviews)
  written for this project about invented things, each with a paraphrased question whose answer rests on one of its
  sentences.

Each item is a retrieval-style prompt: ``documents`` short fictional documents (tools/eval/make_set.py's contexts,
4-6 factual sentences about invented people and towns) separated by blank lines, then ``Question: ...`` and
``Answer:``. One document, at a seeded random place, holds the evidence sentence; the answer occurs once in the
prompt, inside it. An item is kept only where the model's greedy completion starts with the answer, so that the
explained target is what the model says. Every item records the character span of each document sentence and of
the evidence sentence, so rankings are checked against the units of any run by their spans.

Usage: python tools/eval/long_set.py EXPORT_DIR [--sizes 8 16 32 64] [--items 6] [--tries 48] [--seed 11]
       python tools/eval/long_set.py EXPORT_DIR --pool tools/eval/natural_pool.json \
           --out tools/eval/long_set_natural.json --sizes 8 16 32
"""

from __future__ import annotations

import argparse
import json
import random
import re
import time
from pathlib import Path

from make_set import candidate

from atman_onnx import Explainer
from atman_onnx.runtime.encode import encode_prompt
from atman_onnx.runtime.generate import generate

OUT = Path(__file__).with_name("long_set.json")
# a worked example on another document first: the model then answers with the answer alone
TEMPLATE = "{documents}\n\nQuestion: {example}\nAnswer: {example_answer}\n\nQuestion: {question}\nAnswer:"


def documents(rng: random.Random, n: int, pool: list[dict] | None) -> list[dict]:
    """``n`` documents, each with a question about one of its sentences: drawn from ``pool`` where given, else
    made from make_set.py's templates."""
    if pool is not None:
        return [passage(entry) for entry in rng.sample(pool, n)]
    out: list[dict] = []
    while len(out) < n:
        found = candidate(rng)
        if found is not None:
            out.append(found)
    return out


def passage(entry: dict) -> dict:
    """A pool entry (title, text, question, answer, evidence sentence) in make_set.py's document shape."""
    sentences = re.split(r"(?<=[.?!]) ", entry["text"])
    return {**entry, "sentences": sentences, "evidence": sentences.index(entry["evidence"])}


def build(rng: random.Random, n: int, pool: list[dict] | None = None) -> dict | None:
    """One prompt of ``n`` documents and the question of one of them; None when the answer is not unique."""
    docs = documents(rng, n, pool)
    gold, shown = rng.sample(range(n), 2)
    item, example = docs[gold], docs[shown]
    texts = [" ".join(d["sentences"]) for d in docs]
    prompt = TEMPLATE.format(
        documents="\n\n".join(texts),
        example=example["question"],
        example_answer=example["answer"],
        question=item["question"],
    )
    if len(re.findall(rf"\b{re.escape(item['answer'])}\b", prompt)) != 1:
        return None
    spans, cursor = [], 0
    for doc in docs:
        for sentence in doc["sentences"]:
            at = prompt.index(sentence, cursor)
            spans.append([at, at + len(sentence)])
            cursor = at + len(sentence)
    firsts = [sum(len(d["sentences"]) for d in docs[:k]) for k in range(n)]  # each document's first sentence
    evidence = firsts[gold] + item["evidence"]
    lasts = [f + len(d["sentences"]) - 1 for f, d in zip(firsts, docs)]
    return {
        "documents": n,
        "gold_document": gold,
        "prompt": prompt,
        "target": " " + item["answer"],
        "question": item["question"],
        "sentence_spans": spans,
        "evidence": evidence,
        "document_spans": [[spans[f][0], spans[e][1]] for f, e in zip(firsts, lasts)],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dir", help="an export of the shipped model")
    parser.add_argument("--sizes", type=int, nargs="+", default=[8, 16, 32, 64])
    parser.add_argument("--items", type=int, default=6, help="items per size")
    parser.add_argument("--tries", type=int, help="prompts tried per size at most (default: 8 per item)")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--pool", help="a JSON file of passages to draw the documents from (the natural set)")
    parser.add_argument("--out", default=str(OUT))
    args = parser.parse_args()
    pool = json.loads(Path(args.pool).read_text())["passages"] if args.pool else None
    tries = args.tries or 8 * args.items
    explainer = Explainer.load(args.dir, threads=2)
    out = Path(args.out)
    old = json.loads(out.read_text()) if out.exists() else {"items": [], "answered": {}}  # other sizes are kept
    items, tried = [item for item in old["items"] if item["documents"] not in args.sizes], {}
    answered = {n: got for n, got in old["answered"].items() if int(n) not in args.sizes}
    for n in args.sizes:
        rng = random.Random(args.seed * 1000 + n)  # a size's items do not depend on which other sizes are made
        kept = tried[n] = 0
        while kept < args.items and tried[n] < tries:
            item = build(rng, n, pool)
            if item is None:
                continue
            tried[n] += 1
            started = time.perf_counter()
            ids = encode_prompt(explainer.codec, item["prompt"]).ids
            said = explainer.codec.decode(generate(explainer.graph, ids, 6, explainer.manifest.stop_ids))
            ok = said.startswith(item["target"])
            print(f"{n} documents: {'kept' if ok else 'dropped'} ({said!r}, {time.perf_counter() - started:.1f} s)")
            if ok:
                item["id"] = f"{'n' if pool else 'd'}{n}-{kept}"
                items.append(item)
                kept += 1
        answered[str(n)] = f"{kept} of {tried[n]}"
        items.sort(key=lambda item: (item["documents"], item["id"]))
        data = {
            "description": "long-context evidence retrieval; see tools/eval/long_set.py"
            + (f" (documents from {Path(args.pool).name})" if pool else ""),
            "model": "bundled:smollm2",
            "seed": args.seed,
            "template": TEMPLATE,
            "answered": dict(sorted(answered.items(), key=lambda kv: int(kv[0]))),
            "items": items,
        }
        out.write_text(json.dumps(data, indent=1) + "\n")  # after each size: a cut-off run keeps what it made
        print(f"{n} documents: {kept} of {tried[n]} prompts answered; wrote {len(items)} items to {out}")


if __name__ == "__main__":
    main()
