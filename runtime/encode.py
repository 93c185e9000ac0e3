"""Text to positions: the prompt (plain text or chat messages) and the target as fed, with every token's span."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

from atman_onnx.core.errors import InputError
from atman_onnx.runtime.text import TextCodec
from atman_onnx.runtime.units import Token

Prompt = str | list[dict]
Document = tuple[str, str]  # title (may be empty), text


@dataclass(frozen=True)
class EncodedPrompt:
    """The prompt as fed: its text, ids, character offsets, and the character ranges worth explaining."""

    text: str
    ids: list[int]
    offsets: list[tuple[int, int]]
    content: list[tuple[int, int]] | None  # None: all of it; for chat prompts, the messages' contents
    documents: list[tuple[int, int]] | None = None  # each given document's text, where it lies in ``text``


def encode_prompt(codec: TextCodec, prompt: Prompt, documents: Sequence[Document] | None = None) -> EncodedPrompt:
    """Tokenize a text prompt, or render chat messages with the model's template and find their contents; given
    ``documents`` (title, text), they go first: through the chat template's ``documents`` where it takes them,
    else in the default layout (``document_layout``) before the prompt or the last message's content."""
    if documents is None:
        return _encode(codec, prompt, None)
    if not isinstance(prompt, str) and "documents" in (codec.chat_template or ""):  # the template takes them
        text = codec.render_chat(prompt, documents=[{"title": t, "text": x} for t, x in documents])
        encoded = _encode(codec, prompt, text)
    else:
        encoded = _encode(codec, with_layout(prompt, documents), None)
    spans: list[tuple[int, int]] = []
    cursor = 0
    for title, body in documents:
        at = encoded.text.find(body, cursor)
        if at < 0:
            raise InputError(f"the chat template did not render document {len(spans) + 1} ({title or body[:30]!r})")
        spans.append((at, at + len(body)))
        cursor = at + len(body)
    return dataclasses.replace(encoded, documents=spans)


def document_layout(documents: Sequence[Document]) -> str:
    """The documents as text where the chat template does not take them: ``Document 1: title`` (or ``Document 1:``)
    on a line, then the text; a blank line between documents."""
    return "\n\n".join(
        f"Document {i}:{' ' + title if title else ''}\n{text}" for i, (title, text) in enumerate(documents, 1)
    )


def with_layout(prompt: Prompt, documents: Sequence[Document]) -> Prompt:
    """The prompt with the documents' layout and a blank line before it (before the last message's content)."""
    layout = document_layout(documents)
    if isinstance(prompt, str):
        return f"{layout}\n\n{prompt}"
    users = [i for i, m in enumerate(prompt) if m.get("role") == "user"]
    last = users[-1] if users else len(prompt) - 1
    return [{**m, "content": f"{layout}\n\n{m['content']}"} if i == last else m for i, m in enumerate(prompt)]


def _encode(codec: TextCodec, prompt: Prompt, rendered: str | None) -> EncodedPrompt:
    """``encode_prompt`` without documents; ``rendered``: the chat messages' text, when already rendered."""
    if isinstance(prompt, str):
        encoded = codec.encode(prompt, add_special_tokens=True)
        return EncodedPrompt(prompt, encoded.ids, encoded.offsets, None)
    text = rendered if rendered is not None else codec.render_chat(prompt)
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
