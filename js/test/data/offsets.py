"""Regenerate offsets.json: what Python's ``tokenizers`` gives for tricky texts (non-ASCII, emoji, added tokens,
whitespace), with tokenizer variants that the JS tests (text.test.ts) must follow with the same ids, offsets and
token texts:

- the kit's byte-level tokenizer and two variants of its post-processor (a BOS token added by the template; a
  ByteLevel post-processor that trims offsets);
- the kit's tokenizer with added tokens that strip whitespace (lstrip, rstrip, both; and one with spaces in it),
  with and without offset trimming;
- SentencePiece-style tokenizers (a small BPE with byte fallback trained here): a Metaspace pre-tokenizer with
  prepend_scheme "first" and "always", and Llama-2's Prepend + Replace normalizer.

Each variant is stored as the top-level keys that replace the kit's tokenizer.json ones. Usage, from the
repository root: .venv/bin/python js/test/data/offsets.py"""

import json
from pathlib import Path

from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

HERE = Path(__file__).parent
KIT_TOKENIZER = HERE.parents[2] / "conformance" / "models" / "llama-log_additive" / "tokenizer.json"
TEXTS = [
    "naïve café — über 😀 Straße!\n\nNew  line\ttab<|endoftext|>end",
    "日本語のテキスト。 Ça va? 🇫🇷 x<|endoftext|><|endoftext|> y ",
    "  leading spaces and trailing  ",
]
STRIP_TEXTS = [
    "a  <L>  b <R>  c\t<B>\n d",
    "<R> q <L>",
    "  <L>x sp y<B>",
    "x sp  sp <R><L> end ",
]
SP_TEXTS = [
    " Hello  world ",
    "Hello world",
    "  x",
    "Hello<s> world<s>world <R>  Rome",
    "<s>Bob lives in Rome.",
    "naïve café — über 😀 Straße!\n\nNew  line\ttab",
    "日本語のテキスト。 Ça va?",
]
BOS = {
    "type": "TemplateProcessing",
    "single": [{"SpecialToken": {"id": "<|endoftext|>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
    "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
    "special_tokens": {"<|endoftext|>": {"id": "<|endoftext|>", "ids": [0], "tokens": ["<|endoftext|>"]}},
}
TRIM = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
STRIP_TOKENS = [
    {
        "id": 300,
        "content": "<L>",
        "single_word": False,
        "lstrip": True,
        "rstrip": False,
        "normalized": False,
        "special": True,
    },
    {
        "id": 301,
        "content": "<R>",
        "single_word": False,
        "lstrip": False,
        "rstrip": True,
        "normalized": False,
        "special": True,
    },
    {
        "id": 302,
        "content": "<B>",
        "single_word": False,
        "lstrip": True,
        "rstrip": True,
        "normalized": False,
        "special": False,
    },
    {
        "id": 303,
        "content": " sp ",
        "single_word": False,
        "lstrip": False,
        "rstrip": False,
        "normalized": False,
        "special": False,
    },
]
CORPUS = [
    "Hello world, hello there. Bob lives in Rome. Bob lives in the city of Paris.",
    "naïve café über Straße New line tab",
    "日本語のテキスト。 Ça va?",
] * 4


def sentencepiece(kind: str) -> dict:
    """A small SentencePiece-style BPE (byte fallback, ``<s>`` BOS) of one of three kinds."""
    tokenizer = Tokenizer(models.BPE(byte_fallback=True, unk_token=None))
    if kind == "llama":
        tokenizer.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
        tokenizer.decoder = decoders.Sequence(
            [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
        )
    else:
        tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme=kind)
        tokenizer.decoder = decoders.Metaspace(replacement="▁", prepend_scheme=kind)
    specials = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    trainer = trainers.BpeTrainer(vocab_size=340, special_tokens=specials, show_progress=False)
    tokenizer.train_from_iterator(CORPUS, trainer)
    tokenizer.add_special_tokens([AddedToken("<R>", rstrip=True, normalized=False, special=True)])
    out = json.loads(tokenizer.to_str())
    # the byte pieces are the model's (as in Llama-2's tokenizer.json), not added tokens
    out["added_tokens"] = [t for t in out["added_tokens"] if not t["content"].startswith("<0x")]
    bos = tokenizer.token_to_id("<s>")
    out["post_processor"] = {
        "type": "TemplateProcessing",
        "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
        "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
        "special_tokens": {"<s>": {"id": "<s>", "ids": [bos], "tokens": ["<s>"]}},
    }
    return out


def main() -> None:
    base = json.loads(KIT_TOKENIZER.read_text())
    strip_tokens = base["added_tokens"] + STRIP_TOKENS
    variants = {
        "kit": ({}, TEXTS),
        "bos": ({"post_processor": BOS}, TEXTS),
        "trim": ({"post_processor": TRIM}, TEXTS),
        "strip": ({"added_tokens": strip_tokens}, STRIP_TEXTS),
        "strip-trim": ({"added_tokens": strip_tokens, "post_processor": TRIM}, STRIP_TEXTS),
        "metaspace-first": (sentencepiece("first"), SP_TEXTS),
        "metaspace-always": (sentencepiece("always"), SP_TEXTS),
        "llama": (sentencepiece("llama"), SP_TEXTS),
    }
    cases = []
    for name, (override, texts) in variants.items():
        tokenizer = Tokenizer.from_str(json.dumps({**base, **override}))
        for text in texts:
            for special in (True, False):
                e = tokenizer.encode(text, add_special_tokens=special)
                texts = [tokenizer.decode([i], skip_special_tokens=False) for i in e.ids]
                cases.append(
                    {
                        "variant": name,
                        "text": text,
                        "add_special_tokens": special,
                        "ids": e.ids,
                        "offsets": [list(o) for o in e.offsets],
                        "texts": texts,
                    }
                )
    out = {"variants": {name: override for name, (override, _) in variants.items()}, "cases": cases}
    (HERE / "offsets.json").write_text(json.dumps(out, ensure_ascii=False, indent=1) + "\n")


if __name__ == "__main__":
    main()
