"""Generate the bundled evidence-retrieval QA set (tools/eval/qa_set.json): fictional facts, one question each.

Every item is a short context of 4-6 factual sentences about invented people, towns and things (names built from
random syllables, so the model cannot know the answer beforehand), and one simple extractive question about one
sentence, the evidence. The answer occurs exactly once in the context, inside the evidence sentence, and not in
the question. Candidates are seeded and deterministic; an item is kept only where the model answers it: its greedy
completion of the prompt contains the answer. The prompt formats in FORMATS are all tried on every candidate, and
the set is written in the format whose completions most often start with the answer (the explained target is the
answer right after the prompt, so it should be what the model says first); both rates are recorded in the file.

Usage: python tools/eval/make_set.py EXPORT_DIR [--out tools/eval/qa_set.json] [--candidates 64] [--seed 6]

EXPORT_DIR is any export of the shipped model (``atman-onnx export bundled:smollm2 DIR``); the mode does not
matter, since unperturbed passes are identical in both.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
import time
from pathlib import Path

from atman_onnx import Explainer
from atman_onnx.runtime.encode import encode_prompt
from atman_onnx.runtime.generate import generate
from atman_onnx.runtime.groups import token_groups

ONSETS = ["b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "dr", "gr", "kl", "tr", "st"]
VOWELS = ["a", "e", "i", "o", "u", "a", "e", "o"]
CODAS = ["", "", "", "n", "r", "l", "s", "k", "m"]

JOBS = ["baker", "pilot", "tailor", "fisherman", "teacher", "carpenter", "doctor", "painter", "farmer", "sailor"]
COLORS = ["red", "blue", "green", "yellow", "purple", "orange", "white", "black"]
OBJECTS = ["boat", "hat", "bicycle", "door", "kite", "umbrella", "wagon", "scarf"]
INSTRUMENTS = ["violin", "flute", "drum", "harp", "trumpet", "piano", "cello", "guitar"]
FOODS = ["soup", "cheese", "bread", "rice", "honey", "plums", "fish", "noodles"]
PETS = ["dog", "cat", "horse", "parrot", "goat", "rabbit"]
ANIMALS = ["sheep", "chickens", "cows", "ducks", "pigs", "geese"]

# (kind, sentence, question, answer slot). Slots: P, Q (people), T (town), N (a pet's name), R (river), and the
# word lists. Kinds are unique within a context, so every question has one answer.
TEMPLATES = [
    ("home", "{P} lives in a town called {T}.", "In which town does {P} live?", "T"),
    ("pet", "{P} has a {pet} named {N}.", "What is the name of {P}'s {pet}?", "N"),
    ("job", "{P} works as a {job}.", "What is {P}'s job?", "job"),
    ("color", "The {obj} of {P} is {color}.", "What color is the {obj} of {P}?", "color"),
    ("born", "{P} was born in the year {year}.", "In which year was {P} born?", "year"),
    ("river", "The river in {T} is called the {R}.", "What is the river in {T} called?", "R"),
    ("count", "{P} has {count} {animals}.", "How many {animals} does {P} have?", "count"),
    ("food", "The favorite food of {P} is {food}.", "What is the favorite food of {P}?", "food"),
    ("music", "{P} plays the {instrument}.", "Which instrument does {P} play?", "instrument"),
    ("friend", "The best friend of {P} is {Q}.", "Who is the best friend of {P}?", "Q"),
    ("tower", "The tower in {T} is {height} meters tall.", "How tall is the tower in {T}?", "height"),
]

# Prompt formats tried on every candidate. "one-shot" is "plain" after one worked example (about 35 tokens that
# every item shares; explanations leave it out of the ranking). "chat" goes through the model's chat template.
EXAMPLE = (
    "Context: Tom has a cat named Mimi. Tom lives in Oslo.\nQuestion: What is the name of Tom's cat?\nAnswer: Mimi\n\n"
)
FORMATS = {
    "plain": "Context: {context}\nQuestion: {question}\nAnswer:",
    "one-shot": EXAMPLE + "Context: {context}\nQuestion: {question}\nAnswer:",
    "chat": "{context}\n\nQuestion: {question}\nAnswer with a few words from the text.",
}
SENTENCE = re.compile(r"\S.*?[.!?](?=\s|$)")


def word(rng: random.Random, syllables: int) -> str:
    return "".join(rng.choice(ONSETS) + rng.choice(VOWELS) + rng.choice(CODAS) for _ in range(syllables)).capitalize()


def person(rng: random.Random) -> str:
    return f"{word(rng, rng.choice([1, 2]))} {word(rng, 2)}"


def candidate(rng: random.Random) -> dict | None:
    """One context with its question, or None when the draw breaks a uniqueness rule."""
    cast = [person(rng), person(rng)]
    slots = {
        "T": word(rng, 2),
        "N": word(rng, 2),
        "R": word(rng, 2),
        "job": rng.choice(JOBS),
        "color": rng.choice(COLORS),
        "obj": rng.choice(OBJECTS),
        "year": str(rng.randint(1701, 1989)),
        "count": str(rng.randint(3, 48)),
        "animals": rng.choice(ANIMALS),
        "food": rng.choice(FOODS),
        "instrument": rng.choice(INSTRUMENTS),
        "pet": rng.choice(PETS),
        "height": str(rng.randint(12, 95)),
    }
    if len({slots["T"], slots["N"], slots["R"], *cast}) < 5:
        return None
    n = rng.randint(4, 6)
    chosen = rng.sample(TEMPLATES, n)
    sentences, questions = [], []
    for kind, sentence, question, answer_slot in chosen:
        p = rng.choice(cast)
        fill = {**slots, "P": p, "Q": cast[1] if p == cast[0] else cast[0]}
        sentences.append(sentence.format(**fill))
        questions.append((kind, question.format(**fill), fill[answer_slot]))
    evidence = rng.randrange(n)
    kind, question, answer = questions[evidence]
    context = " ".join(sentences)
    # The answer must occur once in the context, as a whole word inside the evidence sentence, and not in the question.
    hits = [m.start() for m in re.finditer(rf"\b{re.escape(answer)}\b", context)]
    if len(hits) != 1 or answer in question or answer not in sentences[evidence]:
        return None
    return {"kind": kind, "sentences": sentences, "evidence": evidence, "question": question, "answer": answer}


def render(explainer, fmt: str, item: dict) -> tuple[str, list[dict] | str]:
    """(the prompt text as fed, what to pass to ``Explainer.explain``) for one item in one format."""
    context = " ".join(item["sentences"])
    body = FORMATS[fmt].format(context=context, question=item["question"])
    if fmt == "chat":
        messages = [{"role": "user", "content": body}]
        return explainer.codec.render_chat(messages), messages
    return body, body


def locate(explainer, prompt: str, fed: list[dict] | str, item: dict) -> dict:
    """Character spans and token positions of every context sentence in the fed prompt."""
    context = " ".join(item["sentences"])
    start = prompt.index(context)
    spans, cursor = [], start
    for sentence in item["sentences"]:
        at = prompt.index(sentence, cursor)
        spans.append([at, at + len(sentence)])
        cursor = at + len(sentence)
    q_at = prompt.index(item["question"], cursor)
    question = [q_at, q_at + len(item["question"])]
    encoded = encode_prompt(explainer.codec, fed)
    assert encoded.text == prompt

    def covered(lo: int, hi: int) -> list[int]:
        """Token positions whose visible text overlaps [lo, hi), as the runtime groups them."""
        return [p for group in token_groups(encoded.offsets, prompt, [(lo, hi)]) for p in group.positions]

    return {
        "prompt_ids": encoded.ids,
        "sentence_spans": spans,
        "sentence_tokens": [covered(*s) for s in spans],
        "context_span": [start, start + len(context)],
        "question_span": question,
        "question_tokens": covered(*question),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dir", help="an export of the shipped model")
    parser.add_argument("--out", default=str(Path(__file__).with_name("qa_set.json")))
    parser.add_argument("--candidates", type=int, default=64)
    parser.add_argument("--seed", type=int, default=6)
    parser.add_argument("--max-new-tokens", type=int, default=12)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    explainer = Explainer.load(args.dir, provider="cpu", threads=args.threads)
    rng = random.Random(args.seed)
    items: list[dict] = []
    seen = set()
    while len(items) < args.candidates:
        item = candidate(rng)
        if item is not None and item["question"] not in seen:
            seen.add(item["question"])
            items.append(item)

    started = time.perf_counter()
    generations: dict[str, list[str]] = {fmt: [] for fmt in FORMATS}
    for fmt in FORMATS:
        for item in items:
            _, fed = render(explainer, fmt, item)
            ids = encode_prompt(explainer.codec, fed).ids
            completion = generate(explainer.graph, ids, args.max_new_tokens, explainer.manifest.stop_ids)
            generations[fmt].append(explainer.codec.decode(completion))
    accuracy = {
        fmt: sum(item["answer"] in g for item, g in zip(items, gens)) / len(items) for fmt, gens in generations.items()
    }
    starts = {
        fmt: sum(g.strip().startswith(item["answer"]) for item, g in zip(items, gens)) / len(items)
        for fmt, gens in generations.items()
    }
    # The target explained is the answer right after the prompt, so the best format is the one whose completions
    # most often start with the answer (the model's own output), then the one that contains it most often.
    best = max(FORMATS, key=lambda f: (starts[f], accuracy[f]))
    for fmt in FORMATS:
        print(
            f"format {fmt}: answer in greedy completion {accuracy[fmt]:.0%}, completion starts with it "
            f"{starts[fmt]:.0%}",
            file=sys.stderr,
        )
    print(f"chosen format: {best} ({time.perf_counter() - started:.0f}s of generation)", file=sys.stderr)

    kept = []
    for index, (item, generation) in enumerate(zip(items, generations[best])):
        if item["answer"] not in generation:
            continue
        prompt, fed = render(explainer, best, item)
        where = locate(explainer, prompt, fed, item)
        target = item["answer"] if best == "chat" else " " + item["answer"]
        target_ids = explainer.codec.encode(target, add_special_tokens=False).ids
        kept.append(
            {
                "id": f"q{index:03d}",
                "kind": item["kind"],
                "context": " ".join(item["sentences"]),
                "sentences": item["sentences"],
                "question": item["question"],
                "answer": item["answer"],
                "evidence": item["evidence"],
                "prompt": prompt,
                "target": target,
                "generation": generation,
                "evidence_span": where["sentence_spans"][item["evidence"]],
                "evidence_tokens": where["sentence_tokens"][item["evidence"]],
                **where,
                "target_ids": target_ids,
            }
        )
    data = {
        "description": "Fictional-fact extractive QA for evidence retrieval; see tools/eval/make_set.py",
        "model": explainer.manifest.source,
        "seed": args.seed,
        "candidates": len(items),
        "format": best,
        "template": FORMATS[best],
        "format_accuracy": accuracy,
        "format_starts_with_answer": starts,
        "items": kept,
    }
    Path(args.out).write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n")
    print(f"kept {len(kept)} of {len(items)} candidates -> {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
