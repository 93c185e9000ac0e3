"""One explanation request: everything ``Explainer.explain`` takes, declared and validated once, here.

The same object comes from the Python API (``Explainer.explain(prompt, target, **options)``), the command line's
flags, and a JSON body (``ExplainRequest.from_dict``), so all three accept and refuse exactly the same things. Each
field is declared once, with ``spec``: its type, default, bounds or choices and one-line doc. The checks, the CLI's
flags (atman_onnx/cli.py), the service's JSON Schema (serve/schema.py) and docs/reference/request.md
(tools/reference.py) are all derived from ``FIELDS``, so adding a field is one declaration here plus its engine code.
"""

from __future__ import annotations

import base64
import binascii
import os
from dataclasses import dataclass
from numbers import Integral
from typing import Any

from atman_onnx.core.errors import InputError
from atman_onnx.runtime.factors import DEFAULT_FACTOR
from atman_onnx.runtime.groups import GRANULARITIES
from atman_onnx.runtime.plan import SCHEDULES
from atman_onnx.spec import Kind, declared, spec

IMAGE_UNITS = ("region", "tile", "token")
MAX_GRID = 64
MAX_FACTOR = 1e6  # far past any use, and far inside float32: the scaled attention overflows near 1e37

Messages = list[dict[str, str]]


@dataclass(frozen=True)
class ExplainRequest:
    """What to explain and how; every field has a default but ``prompt``."""

    prompt: str | Messages = spec(  # noqa: RUF009 (spec returns a dataclasses.field)
        "the text to explain, or chat messages [{role, content}] rendered with the model's chat template (then only "
        "the messages' contents are explained unless include_template); on the command line, the text"
    )
    target: str | None = spec("the completion to explain; unset: the model's greedy completion", default=None)
    factor: float = spec(
        f"suppression factor s (default {DEFAULT_FACTOR:g}: in log_additive mode the unit is taken out of "
        "attention; below 1 suppresses, above 1 amplifies)",
        default=DEFAULT_FACTOR,
        ge=0,
        le=MAX_FACTOR,
        label="suppression factor",
    )
    conceptual: float | None = spec(
        "cosine threshold for conceptual suppression (0.7 is a fair choice); unset: off",
        default=None,
        gt=0,
        le=1,
        label="conceptual threshold",
    )
    granularity: str = spec(
        "unit suppressed in one pass and reported as one row", default="token", choices=GRANULARITIES
    )
    spans: tuple[tuple[int, int], ...] | None = spec(
        "with granularity 'spans': character ranges [start, end) of the prompt", default=None, flag="--span"
    )
    delimiter: str | None = spec("with granularity 'spans': split the prompt into spans at this string", default=None)
    include_template: bool = spec("for chat prompts, explain the template's tokens too", default=False)
    contrast: str | None = spec(
        "explain why the model says target rather than this completion (one column of relevance)", default=None
    )
    max_new_tokens: int = spec("length limit of the generated target when target is null", default=32, ge=1)
    batch_size: int | None = spec(
        "perturbations per graph call; unset: as many as fit the explainer's memory budget", default=None, ge=1
    )
    chunk_size: int | None = spec(
        "queries per graph call of a long suffix, each chunk attending to the keys before it (exact; memory of the "
        "attention scores grows with chunk x length, not length x length); unset: from the memory budget",
        default=None,
        ge=1,
    )
    schedule: str = spec(
        "prefix (reuse the unperturbed prefix's keys and values) or naive (full-length passes)",
        default="prefix",
        choices=SCHEDULES,
    )
    images: tuple[bytes, ...] = spec(
        "images for an image-text model, one per <image> marker of the prompt, in order: in JSON, base64 strings of "
        "the image files; in Python, file paths, bytes or PIL images; on the command line, a file path per flag",
        default=(),
        flag="--image",
    )
    image_units: str = spec(
        "image unit suppressed in one pass: region (a grid over each image), tile, or token",
        default="region",
        choices=IMAGE_UNITS,
        label="image unit",
    )
    grid: int = spec("with image_units 'region': regions per image side", default=4, ge=1, le=MAX_GRID)

    def __post_init__(self) -> None:
        object.__setattr__(self, "images", _image_bytes(self.images))
        for name, check in _CHECKS:
            check(getattr(self, name))
        if self.spans is not None:
            object.__setattr__(self, "spans", tuple((int(a), int(b)) for a, b in self.spans))
        _check_together(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ExplainRequest:
        """A request from a JSON object (or keyword arguments); an unknown or mistyped field is named."""
        if not isinstance(data, dict):
            raise InputError(f"a request is a JSON object, got {type(data).__name__}")
        if not FIELDS.keys() >= data.keys():
            unknown = sorted(data.keys() - FIELDS.keys())
            raise InputError(f"unknown field {unknown[0]!r}; fields: {', '.join(FIELDS)}")
        if "prompt" not in data:
            raise InputError("field 'prompt' is required")
        if "images" in data:
            data = {**data, "images": _decode_images(data["images"])}
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        """The JSON object ``from_dict`` reads back."""
        data = {name: getattr(self, name) for name in FIELDS}
        if isinstance(self.prompt, list):
            data["prompt"] = [dict(m) for m in self.prompt]
        if self.spans is not None:
            data["spans"] = [list(s) for s in self.spans]
        data["images"] = [base64.b64encode(image).decode("ascii") for image in self.images]
        return data


def _image_bytes(images: Any) -> tuple[bytes, ...]:
    """Images as the bytes of their files: paths are read, PIL images saved as PNG."""
    if not isinstance(images, (list, tuple)):
        raise InputError(f"field 'images' must be a list of images, got {type(images).__name__}")
    out = []
    for i, image in enumerate(images):
        if isinstance(image, (bytes, bytearray)):
            out.append(bytes(image))
        elif isinstance(image, (str, os.PathLike)):
            try:
                with open(image, "rb") as file:
                    out.append(file.read())
            except OSError as exc:
                raise InputError(f"image {i + 1}: cannot read {os.fspath(image)!r}: {exc.strerror}") from None
        elif hasattr(image, "save"):  # a PIL image
            import io

            buffer = io.BytesIO()
            image.save(buffer, format="PNG")
            out.append(buffer.getvalue())
        else:
            raise InputError(f"image {i + 1} must be a file path, bytes or a PIL image, got {type(image).__name__}")
    return tuple(out)


def _decode_images(images: Any) -> list[bytes]:
    """The JSON form: a list of base64 strings, each decoded (a bad one is named)."""
    if not isinstance(images, list) or not all(isinstance(x, str) for x in images):
        raise InputError("field 'images' must be a list of base64 strings")
    decoded = []
    for i, text in enumerate(images):
        try:
            decoded.append(base64.b64decode(text, validate=True))
        except (binascii.Error, ValueError):
            raise InputError(f"field 'images': image {i + 1} is not valid base64") from None
    return decoded


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
_KINDS = {  # the request's own types; str, bool, int, float and their unions with None come from atman_onnx.spec
    Messages: Kind("a list of chat messages {role, content} with string values", _is_messages, _MESSAGES),
    tuple[tuple[int, int], ...]: Kind(
        "a list of [start, end] integer pairs", _is_spans, _SPANS, _span, "START:END", many=True
    ),
    tuple[bytes, ...]: Kind("a list of images", lambda v: isinstance(v, tuple), _IMAGES, str, "PATH", many=True),
}
FIELDS = declared(ExplainRequest, _KINDS)
_CHECKS = tuple((name, f.checker()) for name, f in FIELDS.items())


def _check_together(r: ExplainRequest) -> None:
    """The checks that need more than one field, or more than a field's declaration."""
    texts = [r.prompt] if isinstance(r.prompt, str) else [m["content"] for m in r.prompt]
    if not any(text.strip() for text in texts):
        raise InputError("the prompt is empty")
    if r.target is not None and not r.target:
        raise InputError("the target is empty")
    if r.contrast is not None and not r.contrast:
        raise InputError("the contrast is empty")
    if r.granularity == "spans" and r.spans is None and not r.delimiter:
        raise InputError("granularity 'spans' needs character spans or a delimiter")
    if r.granularity != "spans" and (r.spans is not None or r.delimiter is not None):
        raise InputError(f"spans and delimiter need granularity 'spans', not {r.granularity!r}")
