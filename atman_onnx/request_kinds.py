"""The request's own types (chat messages, spans, documents, granularity levels, images): how each is checked,
named, described in JSON Schema and read from a command-line word (``atman_onnx.spec.Kind``). str, bool, int,
float and their unions with None come from ``atman_onnx.spec``."""

from __future__ import annotations

from numbers import Integral
from typing import Any

from atman_onnx.runtime.groups import GRANULARITIES
from atman_onnx.spec import Kind

Messages = list[dict[str, str]]


def _is_messages(value: Any) -> bool:
    return isinstance(value, list) and all(
        isinstance(m, dict)
        and all(isinstance(k, str) and isinstance(v, str) for k, v in m.items())
        and isinstance(m.get("role"), str)
        and isinstance(m.get("content"), str)
        for m in value
    )


def _is_spans(value: Any) -> bool:
    return isinstance(value, (list, tuple)) and all(
        isinstance(s, (list, tuple))
        and len(s) == 2
        and all(isinstance(x, Integral) and not isinstance(x, bool) for x in s)
        for s in value
    )


def _span(word: str) -> tuple[int, int]:
    """``START:END`` on the command line; a ValueError when it is not."""
    start, end = word.split(":")
    return int(start), int(end)


def _read_file(path: str) -> str:
    """A document from the command line: the text of a file (ValueError when it cannot be read)."""
    try:
        with open(path, encoding="utf-8") as file:
            return file.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(str(exc)) from None


_MESSAGES = {
    "type": "array",
    "items": {
        "type": "object",
        "required": ["role", "content"],
        "properties": {"role": {"type": "string"}, "content": {"type": "string"}},
        "additionalProperties": {"type": "string"},
    },
}
_SPANS = {"type": "array", "items": {"type": "array", "items": {"type": "integer"}, "minItems": 2, "maxItems": 2}}
_IMAGES = {"type": "array", "items": {"type": "string", "contentEncoding": "base64"}}


def _is_documents(value: Any) -> bool:
    return isinstance(value, (list, tuple)) and all(
        isinstance(d, str)
        or (
            isinstance(d, dict)
            and isinstance(d.get("text"), str)
            and isinstance(d.get("title", ""), str)
            and set(d) <= {"title", "text"}
        )
        for d in value
    )


_DOCUMENTS = {
    "type": "array",
    "items": {
        "anyOf": [
            {"type": "string"},
            {
                "type": "object",
                "required": ["text"],
                "properties": {"title": {"type": "string"}, "text": {"type": "string"}},
                "additionalProperties": False,
            },
        ]
    },
}
_GRANULARITY = {
    "anyOf": [
        {"type": "string", "enum": list(GRANULARITIES)},
        {"type": "array", "items": {"type": "string", "enum": list(GRANULARITIES)}, "minItems": 1},
    ]
}
# the request's own types; str, bool, int, float and their unions with None come from atman_onnx.spec
REQUEST_KINDS: dict[Any, Kind] = {
    Messages: Kind("a list of chat messages {role, content} with string values", _is_messages, _MESSAGES),
    tuple[tuple[int, int], ...]: Kind(
        "a list of [start, end] integer pairs", _is_spans, _SPANS, _span, "START:END", many=True
    ),
    tuple[str, ...] | str: Kind(  # granularity: a name or levels of them
        "a granularity or a list of them",
        lambda v: isinstance(v, str) or (isinstance(v, (list, tuple)) and all(isinstance(x, str) for x in v)),
        _GRANULARITY,
        str,
        "LEVEL[,LEVEL...]",
    ),
    tuple[str | dict[str, str], ...]: Kind(
        "a list of texts or {title, text} objects", _is_documents, _DOCUMENTS, _read_file, "FILE", many=True
    ),
    tuple[bytes, ...]: Kind("a list of images", lambda v: isinstance(v, tuple), _IMAGES, str, "PATH", many=True),
}
