"""One explanation request: everything ``Explainer.explain`` takes, validated once, here.

The same object comes from the Python API (``Explainer.explain(prompt, target, **options)``), the command line's
flags, and a JSON body (``ExplainRequest.from_dict``), so all three accept and refuse exactly the same things.
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from numbers import Integral, Real
from typing import Any

from atman_onnx.core.errors import InputError
from atman_onnx.runtime.factors import DEFAULT_FACTOR
from atman_onnx.runtime.groups import GRANULARITIES
from atman_onnx.runtime.plan import SCHEDULES

IMAGE_UNITS = ("region", "tile", "token")
MAX_GRID = 64
MAX_FACTOR = 1e6  # far past any use, and far inside float32: the scaled attention overflows near 1e37

Messages = list[dict[str, str]]


def _doc(text: str, **kwargs: Any) -> Any:
    return field(metadata={"doc": text}, **kwargs)


@dataclass(frozen=True)
class ExplainRequest:
    """What to explain and how; every field has a default but ``prompt``."""

    prompt: str | Messages = _doc(
        "the text to explain, or chat messages [{role, content}] rendered with the model's chat template (then only "
        "the messages' contents are explained unless include_template)"
    )
    target: str | None = _doc("the completion to explain; unset: the model's greedy completion", default=None)
    factor: float = _doc(
        f"suppression factor s (default {DEFAULT_FACTOR:g}: in log_additive mode the unit is taken out of "
        "attention; below 1 suppresses, above 1 amplifies)", default=DEFAULT_FACTOR,
    )
    conceptual: float | None = _doc(
        "cosine threshold for conceptual suppression, in (0, 1] (0.7 is a fair choice); unset: off", default=None
    )
    granularity: str = _doc(
        f"unit suppressed in one pass and reported as one row: {', '.join(GRANULARITIES)}", default="token"
    )
    spans: tuple[tuple[int, int], ...] | None = _doc(
        "with granularity 'spans': character ranges [start, end) of the prompt", default=None
    )
    delimiter: str | None = _doc("with granularity 'spans': split the prompt into spans at this string", default=None)
    include_template: bool = _doc("for chat prompts, explain the template's tokens too", default=False)
    contrast: str | None = _doc(
        "explain why the model says target rather than this completion (one column of relevance)", default=None
    )
    max_new_tokens: int = _doc("length limit of the generated target when target is null", default=32)
    batch_size: int | None = _doc(
        "perturbations per graph call; unset: as many as fit the explainer's memory budget", default=None
    )
    schedule: str = _doc(
        "prefix (reuse the unperturbed prefix's keys and values) or naive (full-length passes)", default="prefix"
    )
    images: tuple[bytes, ...] = _doc(
        "images for an image-text model, one per <image> marker of the prompt, in order: in JSON, base64 strings of "
        "the image files; in Python, file paths, bytes or PIL images; on the command line, a file path per flag",
        default=(),
    )
    image_units: str = _doc(
        "image unit suppressed in one pass: region (a grid over each image), tile, or token", default="region"
    )
    grid: int = _doc("with image_units 'region': regions per image side", default=4)

    def __post_init__(self) -> None:
        object.__setattr__(self, "images", _image_bytes(self.images))
        for f in fields(self):
            _TYPES[f.name](f.name, getattr(self, f.name))
        if self.spans is not None:
            object.__setattr__(self, "spans", tuple((int(a), int(b)) for a, b in self.spans))
        _check_values(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ExplainRequest:
        """A request from a JSON object (or keyword arguments); an unknown or mistyped field is named."""
        if not isinstance(data, dict):
            raise InputError(f"a request is a JSON object, got {type(data).__name__}")
        known = [f.name for f in fields(cls)]
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise InputError(f"unknown field {unknown[0]!r}; fields: {', '.join(known)}")
        if "prompt" not in data:
            raise InputError("field 'prompt' is required")
        if "images" in data:
            data = {**data, "images": _decode_images(data["images"])}
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        """The JSON object ``from_dict`` reads back."""
        data = {f.name: getattr(self, f.name) for f in fields(self)}
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


def _expect(ok: Callable[[Any], bool], what: str, optional: bool = False) -> Callable[[str, Any], None]:
    def check(name: str, value: Any) -> None:
        if not (optional and value is None) and not ok(value):
            raise InputError(f"field {name!r} must be {what}{' or null' if optional else ''}, "
                             f"got {value!r} ({type(value).__name__})")

    return check


def _is_int(value: Any) -> bool:
    return isinstance(value, Integral) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)


def _is_prompt(value: Any) -> bool:
    if isinstance(value, str):
        return True
    return isinstance(value, list) and all(
        isinstance(m, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in m.items())
        and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
        for m in value
    )


def _is_spans(value: Any) -> bool:
    return isinstance(value, (list, tuple)) and all(
        isinstance(s, (list, tuple)) and len(s) == 2 and all(_is_int(x) for x in s) for s in value
    )


_TYPES: dict[str, Callable[[str, Any], None]] = {
    "prompt": _expect(_is_prompt, "a string or a list of chat messages {role, content} with string values"),
    "target": _expect(lambda v: isinstance(v, str), "a string", optional=True),
    "factor": _expect(_is_number, "a number"),
    "conceptual": _expect(_is_number, "a number", optional=True),
    "granularity": _expect(lambda v: isinstance(v, str), "a string"),
    "spans": _expect(_is_spans, "a list of [start, end] integer pairs", optional=True),
    "delimiter": _expect(lambda v: isinstance(v, str), "a string", optional=True),
    "include_template": _expect(lambda v: isinstance(v, bool), "true or false"),
    "contrast": _expect(lambda v: isinstance(v, str), "a string", optional=True),
    "max_new_tokens": _expect(_is_int, "an integer"),
    "batch_size": _expect(_is_int, "an integer", optional=True),
    "schedule": _expect(lambda v: isinstance(v, str), "a string"),
    "images": _expect(lambda v: isinstance(v, tuple), "a list of images"),
    "image_units": _expect(lambda v: isinstance(v, str), "a string"),
    "grid": _expect(_is_int, "an integer"),
}


def _check_values(r: ExplainRequest) -> None:
    """The checks that need more than a field's type."""
    texts = [r.prompt] if isinstance(r.prompt, str) else [m["content"] for m in r.prompt]
    if not any(text.strip() for text in texts):
        raise InputError("the prompt is empty")
    if r.target is not None and not r.target:
        raise InputError("the target is empty")
    if r.contrast is not None and not r.contrast:
        raise InputError("the contrast is empty")
    try:
        factor = float(r.factor)
    except OverflowError:  # an integer past float's range
        raise InputError(f"suppression factor must be a number from 0 to {MAX_FACTOR:g}, got a larger one") from None
    if not 0 <= factor <= MAX_FACTOR:  # also refuses NaN
        raise InputError(f"suppression factor must be a number from 0 to {MAX_FACTOR:g}, got {factor:g}")
    if r.conceptual is not None and not 0 < r.conceptual <= 1:
        raise InputError(f"conceptual threshold must lie in (0, 1], got {r.conceptual!r}")
    if r.batch_size is not None and r.batch_size < 1:
        raise InputError(f"batch size must be at least 1, got {r.batch_size}")
    if r.max_new_tokens < 1:
        raise InputError(f"max_new_tokens must be at least 1, got {r.max_new_tokens}")
    if r.schedule not in SCHEDULES:
        raise InputError(f"unknown schedule {r.schedule!r}; available: {', '.join(SCHEDULES)}")
    if r.granularity not in GRANULARITIES:
        raise InputError(f"unknown granularity {r.granularity!r}; available: {', '.join(GRANULARITIES)}")
    if r.granularity == "spans" and r.spans is None and not r.delimiter:
        raise InputError("granularity 'spans' needs character spans or a delimiter")
    if r.image_units not in IMAGE_UNITS:
        raise InputError(f"unknown image unit {r.image_units!r}; available: {', '.join(IMAGE_UNITS)}")
    if not 1 <= r.grid <= MAX_GRID:
        raise InputError(f"grid must lie in 1..{MAX_GRID}, got {r.grid}")
    if r.granularity != "spans" and (r.spans is not None or r.delimiter is not None):
        raise InputError(f"spans and delimiter need granularity 'spans', not {r.granularity!r}")
