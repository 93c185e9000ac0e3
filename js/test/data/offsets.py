"""Regenerate offsets.json: what Python's ``tokenizers`` gives for tricky texts (non-ASCII, emoji, added tokens,
whitespace), with the kit's byte-level tokenizer and two variants of its post-processor (a BOS token added by the
template; a ByteLevel post-processor that trims offsets). The JS tests (text.test.ts) must give the same ids,
offsets and token texts. Usage, from the repository root: .venv/bin/python js/test/data/offsets.py"""

import json
from pathlib import Path

from tokenizers import Tokenizer

HERE = Path(__file__).parent
KIT_TOKENIZER = HERE.parents[2] / "conformance" / "models" / "llama-log_additive" / "tokenizer.json"
TEXTS = [
    "naïve café — über 😀 Straße!\n\nNew  line\ttab<|endoftext|>end",
    "日本語のテキスト。 Ça va? 🇫🇷 x<|endoftext|><|endoftext|> y ",
    "  leading spaces and trailing  ",
]
BOS = {
    "type": "TemplateProcessing",
    "single": [{"SpecialToken": {"id": "<|endoftext|>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
    "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
    "special_tokens": {"<|endoftext|>": {"id": "<|endoftext|>", "ids": [0], "tokens": ["<|endoftext|>"]}},
}
TRIM = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}


def main() -> None:
    base = json.loads(KIT_TOKENIZER.read_text())
    cases = []
    for name, processor in (("kit", base["post_processor"]), ("bos", BOS), ("trim", TRIM)):
        tokenizer_json = {**base, "post_processor": processor}
        tokenizer = Tokenizer.from_str(json.dumps(tokenizer_json))
        for text in TEXTS:
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
    out = {"post_processors": {"bos": BOS, "trim": TRIM}, "cases": cases}
    (HERE / "offsets.json").write_text(json.dumps(out, ensure_ascii=False, indent=1) + "\n")


if __name__ == "__main__":
    main()
