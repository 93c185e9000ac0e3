"""Text in and out: tokenization with ``tokenizers`` and chat rendering with the model's own jinja2 template."""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from pathlib import Path

import jinja2
import jinja2.sandbox
from tokenizers import Tokenizer

from atman_onnx.core.contract import TOKENIZER_FILE
from atman_onnx.core.errors import InputError

CHAT_TEMPLATE_FILE = "chat_template.jinja"


@dataclass(frozen=True)
class Encoded:
    """Token ids with each token's text and character span in the encoded string."""

    ids: list[int]
    offsets: list[tuple[int, int]]


class TextCodec:
    """The exported model's tokenizer and chat template."""

    def __init__(self, folder: str | Path, special_tokens: dict):
        folder = Path(folder)
        self.tokenizer = Tokenizer.from_file(str(folder / TOKENIZER_FILE))
        self.special_tokens = special_tokens
        template = folder / CHAT_TEMPLATE_FILE
        self.chat_template = template.read_text() if template.is_file() else None

    def encode(self, text: str, add_special_tokens: bool = True) -> Encoded:
        enc = self.tokenizer.encode(text, add_special_tokens=add_special_tokens)
        return Encoded(list(enc.ids), [(start, end) for start, end in enc.offsets])

    def decode(self, ids: list[int], skip_special_tokens: bool = False) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=skip_special_tokens)

    def token_texts(self, ids: list[int]) -> list[str]:
        """Each token decoded on its own (what a person reads for it)."""
        return [self.tokenizer.decode([i], skip_special_tokens=False) for i in ids]

    def render_chat(
        self, messages: list[dict], add_generation_prompt: bool = True, documents: list[dict] | None = None
    ) -> str:
        """Render chat messages with the model's template, as transformers' ``apply_chat_template`` does (its
        ``documents``, ``{title, text}`` each, for a template that takes them; its ``raise_exception`` and
        ``strftime_now``)."""
        if not self.chat_template:
            raise InputError("this model has no chat template; pass a plain prompt instead")

        def raise_exception(message: str) -> None:
            raise InputError(f"chat template: {message}")

        env = jinja2.sandbox.ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        env.globals["raise_exception"] = raise_exception
        env.globals["strftime_now"] = lambda fmt: datetime.datetime.now().strftime(fmt)  # e.g. Llama 3's date line
        template = env.from_string(self.chat_template)
        return template.render(
            messages=messages,
            add_generation_prompt=add_generation_prompt,
            bos_token=self.special_tokens.get("bos_token") or "",
            eos_token=self.special_tokens.get("eos_token") or "",
            **({"documents": documents} if documents is not None else {}),
        )
