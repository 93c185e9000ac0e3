"""Text to positions: the prompt (plain text or chat messages) and the target as fed, with every token's span."""

from __future__ import annotations

from dataclasses import dataclass

from atman_onnx.core.errors import InputError
from atman_onnx.runtime.text import TextCodec
from atman_onnx.runtime.units import Token

Prompt = str | list[dict]


@dataclass(frozen=True)
class EncodedPrompt:
    """The prompt as fed: its text, ids, character offsets, and the character ranges worth explaining."""

    text: str
    ids: list[int]
    offsets: list[tuple[int, int]]
    content: list[tuple[int, int]] | None  # None: all of it; for chat prompts, the messages' contents


def encode_prompt(codec: TextCodec, prompt: Prompt) -> EncodedPrompt:
    """Tokenize a text prompt, or render chat messages with the model's template and find their contents."""
    if isinstance(prompt, str):
        encoded = codec.encode(prompt, add_special_tokens=True)
        return EncodedPrompt(prompt, encoded.ids, encoded.offsets, None)
    text = codec.render_chat(prompt)
    content, cursor = [], 0
    for message in prompt:
        body = str(message.get("content", ""))
        at = text.find(body, cursor) if body else -1
        if at >= 0:
            content.append((at, at + len(body)))
            cursor = at + len(body)
    encoded = codec.encode(text, add_special_tokens=False)
    return EncodedPrompt(text, encoded.ids, encoded.offsets, content)


def encode_target(codec: TextCodec, target: str) -> list[int]:
    """The ids of a completion, tokenized as a continuation (no special tokens)."""
    ids = codec.encode(target, add_special_tokens=False).ids
    if not ids:
        raise InputError("the target is empty after tokenization")
    return ids


def fed_tokens(codec: TextCodec, prompt: EncodedPrompt, target_ids: list[int]) -> list[Token]:
    """Every fed position (prompt, then target without its last token) with its text and character span."""
    texts = codec.token_texts(prompt.ids + target_ids[:-1])
    ends = [len(codec.decode(target_ids[: i + 1])) for i in range(len(target_ids) - 1)]
    target_spans = list(zip([0, *ends[:-1]], ends))
    tokens = [Token(texts[i], *prompt.offsets[i], "prompt") for i in range(len(prompt.ids))]
    return tokens + [Token(texts[len(prompt.ids) + i], *span, "target") for i, span in enumerate(target_spans)]
