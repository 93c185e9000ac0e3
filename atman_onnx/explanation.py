"""The result of an explanation: a plain data object that round-trips through JSON and renders itself."""

from __future__ import annotations

import base64
import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any, overload

import numpy as np

from atman_onnx.core.errors import InputError
from atman_onnx.runtime.search import Level
from atman_onnx.runtime.units import ImageBox, Token, Unit, location_to_dict

# 2 adds each unit's typed ``location`` (a text span or an image box); 3 adds ``images`` (the prompt's images, as
# base64 strings of their files, so that a report or overlay can be drawn from the file alone); 4 adds ``levels``
# (each level a search scored, coarse to fine: {granularity, units, relevance}) and ``warnings``. Older files load.
JSON_VERSION = 4


@dataclass(frozen=True, eq=False)
class Explanation:
    """AtMan relevance of every explained unit for every target token.

    The model is fed the prompt, then the target without its last token; ``tokens`` lists those fed positions.
    ``units`` are what was suppressed, one per fed position at the default ``token`` granularity.
    ``relevance[u, t]`` is the rise in cross-entropy of target token ``t`` when unit ``u`` is suppressed:
    positive means the target depends on that unit. ``total`` sums over the target tokens. A search over levels
    (granularity ``("paragraph", "sentence")``, say) keeps every level it scored in ``levels``; ``units`` and
    ``relevance`` are its finest.
    """

    prompt: str
    target: str
    prompt_ids: list[int]
    target_ids: list[int]
    tokens: list[Token]
    target_tokens: list[str]
    units: list[Unit]
    relevance: np.ndarray
    mode: str
    suppression_factor: float
    conceptual_threshold: float | None = None
    granularity: str = "token"
    target_granularity: str = "token"  # the columns: target tokens, target sentences, or the complete target
    contrast: str | None = None
    contrast_ids: list[int] | None = None
    model: str = ""
    provider: str = ""
    timings: dict[str, Any] = field(default_factory=dict)
    images: tuple[bytes, ...] = ()  # the prompt's images (their files' bytes), for an image-text model
    levels: tuple[Level, ...] = ()  # coarse to fine, the last one ``units`` and ``relevance``; empty: that one only
    warnings: tuple[str, ...] = ()  # what the scores cannot tell (a unit covering the whole prompt, say)

    @property
    def total(self) -> np.ndarray:
        """Relevance of each unit for the whole target: the sum over target tokens."""
        return self.relevance.sum(axis=1)

    def top(
        self, k: int = 10, segment: str | None = "prompt", column: int | None = None
    ) -> list[tuple[int, Unit, float]]:
        """The ``k`` most relevant units (index, unit, relevance), most relevant first: by total relevance, or by
        one ``column`` (a target token, or an answer sentence's sources)."""
        score = self.total if column is None else self.relevance[:, column]
        picks = [i for i, unit in enumerate(self.units) if segment is None or unit.segment == segment]
        picks.sort(key=lambda i: -score[i])
        return [(i, self.units[i], float(score[i])) for i in picks[:k]]

    @property
    def scored_levels(self) -> tuple[Level, ...]:
        """Every level scored, coarse to fine: ``levels``, or the one level of a flat explanation."""
        return self.levels or (Level(self.granularity, tuple(self.units), self.relevance),)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["units"] = _units(self.units)
        data["relevance"] = self.relevance.astype(float).tolist()
        data["relevance_total"] = self.total.astype(float).tolist()
        data["images"] = [base64.b64encode(image).decode("ascii") for image in self.images]
        data["levels"] = [level_to_dict(level) for level in self.scored_levels]
        data["warnings"] = list(self.warnings)
        return {"format_version": JSON_VERSION, **data}

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str) -> Explanation:
        """Read a file written by ``to_json`` (``format_version`` 1 to 4); a field that is missing or of the
        wrong type is an ``InputError`` naming it."""
        try:
            data = json.loads(text)
        except (ValueError, RecursionError) as exc:
            raise InputError(f"not an explanation: not JSON ({exc})") from None
        return cls(**_read(_Fields(data)))

    def to_text(self, color: bool = False, top: int = 5) -> str:
        """A terminal heatmap of total relevance: red raises the target's likelihood, blue lowers it."""
        from atman_onnx.render import text_heatmap

        return text_heatmap(self, color=color, top=top)

    def to_html(self) -> str:
        """One self-contained HTML page (no network assets): the prompt as a heatmap, a target-token selector,
        each unit's score on hover or tap, and the settings used."""
        from atman_onnx.html import render_html

        return render_html(self)


def level_to_dict(level: Level) -> dict[str, Any]:
    """The JSON form of one level: ``{granularity, units, relevance}``, shaped as the top-level fields."""
    return {"granularity": level.granularity, "units": _units(level.units), "relevance": level.relevance.tolist()}


def _units(units: list[Unit] | tuple[Unit, ...]) -> list[dict[str, Any]]:
    """The JSON form of units: their fields, the image box as a typed ``location``."""
    return [
        {**{k: v for k, v in asdict(u).items() if k != "box"}, "location": location_to_dict(u.location)} for u in units
    ]


class _Fields:
    """Typed access to one JSON object of an explanation file, naming the field (``units[3].positions``) in every
    error."""

    def __init__(self, data: Any, where: str = ""):
        if not isinstance(data, dict):
            raise InputError(f"not an explanation: {where or 'the file'} must be an object, got {_kind(data)}")
        self.data, self.where = data, where

    def path(self, name: str) -> str:
        return f"{self.where}.{name}" if self.where else name

    def get(self, name: str, kind: type, default: Any = ...) -> Any:
        if name not in self.data or (default is None and self.data[name] is None):
            if default is ...:
                raise InputError(f"not an explanation: field {self.path(name)!r} is missing")
            return default
        value = self.data[name]
        if kind is float:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        else:
            ok = isinstance(value, kind) and not (kind is int and isinstance(value, bool))
        if not ok:
            raise InputError(
                f"not an explanation: field {self.path(name)!r} must be {_NAMES[kind]}, got {_kind(value)}"
            )
        return value

    @overload
    def ints(self, name: str) -> list[int]: ...
    @overload
    def ints(self, name: str, default: None) -> list[int] | None: ...
    def ints(self, name: str, default: Any = ...) -> list[int] | None:
        values = self.get(name, list, default)
        if values is not None and not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            raise InputError(f"not an explanation: field {self.path(name)!r} must be a list of integers")
        return values

    def each(self, name: str) -> list[_Fields]:
        return [_Fields(item, f"{self.path(name)}[{i}]") for i, item in enumerate(self.get(name, list))]


_NAMES = {str: "a string", int: "an integer", float: "a finite number", list: "a list", dict: "an object"}


def _kind(value: Any) -> str:
    return {
        type(None): "null",
        bool: "a boolean",
        str: "a string",
        int: "an integer",
        float: "a number",
        list: "a list",
        dict: "an object",
    }.get(type(value), type(value).__name__)


def _read(top: _Fields) -> dict[str, Any]:
    """The ``Explanation`` fields of a checked explanation file."""
    version = top.get("format_version", int, 1)
    if version not in (1, 2, 3, JSON_VERSION):
        raise InputError(f"explanation format_version {version!r} is newer than this atman-onnx reads ({JSON_VERSION})")
    tokens = [
        Token(t.get("text", str), t.get("start", int), t.get("end", int), t.get("segment", str))
        for t in top.each("tokens")
    ]
    units = _read_units(top, len(tokens))
    target_tokens = top.get("target_tokens", list)
    if not all(isinstance(t, str) for t in target_tokens):
        raise InputError("not an explanation: field 'target_tokens' must be a list of strings")
    relevance = _read_relevance(top, len(units), len(target_tokens))
    levels = []
    for level in top.each("levels") if "levels" in top.data else []:
        found = _read_units(level, len(tokens))
        levels.append(
            Level(level.get("granularity", str), tuple(found), _read_relevance(level, len(found), len(target_tokens)))
        )
    warnings = top.get("warnings", list, [])
    if not all(isinstance(w, str) for w in warnings):
        raise InputError("not an explanation: field 'warnings' must be a list of strings")
    timings = top.get("timings", dict, {})
    for name in ("total_s", "passes"):  # the ones a report shows
        if name in timings:
            _Fields(timings, "timings").get(name, float)
    try:
        images = tuple(base64.b64decode(image, validate=True) for image in top.get("images", list, []))
    except (TypeError, ValueError):
        raise InputError("not an explanation: field 'images' must be base64 strings") from None
    return dict(
        prompt=top.get("prompt", str),
        target=top.get("target", str),
        prompt_ids=top.ints("prompt_ids"),
        target_ids=top.ints("target_ids"),
        tokens=tokens,
        target_tokens=target_tokens,
        units=units,
        relevance=relevance,
        mode=top.get("mode", str),
        suppression_factor=top.get("suppression_factor", float),
        conceptual_threshold=top.get("conceptual_threshold", float, None),
        granularity=top.get("granularity", str, "token"),
        target_granularity=top.get("target_granularity", str, "token"),
        contrast=top.get("contrast", str, None),
        contrast_ids=top.ints("contrast_ids", None),
        model=top.get("model", str, ""),
        provider=top.get("provider", str, ""),
        timings=timings,
        images=images,
        levels=tuple(levels) if len(levels) > 1 else (),
        warnings=tuple(warnings),
    )


def _read_units(fields: _Fields, n_tokens: int) -> list[Unit]:
    """The checked ``units`` of the file or of one of its levels."""
    units = []
    for u in fields.each("units"):
        positions = tuple(u.ints("positions"))
        if not positions or not all(0 <= p < n_tokens for p in positions):
            raise InputError(
                f"not an explanation: field {u.path('positions')!r} must list fed positions, 0 to {n_tokens - 1}"
            )
        location = u.get("location", dict, None)
        box = None
        if location is not None and location.get("type") == "image":
            at = _Fields(location, u.path("location"))
            box = ImageBox(at.get("image", int), *(at.get(k, float) for k in ("left", "top", "width", "height")))
            if box.image < 0:
                raise InputError(f"not an explanation: field {at.path('image')!r} must not be negative")
        units.append(
            Unit(u.get("text", str), u.get("start", int), u.get("end", int), u.get("segment", str), positions, box)
        )
    return units


def _read_relevance(fields: _Fields, n_units: int, n_columns: int) -> np.ndarray:
    """The checked ``relevance`` [units, columns] of the file or of one of its levels."""
    rows = fields.get("relevance", list)
    try:
        relevance = np.asarray(rows, dtype=np.float64)
    except (TypeError, ValueError):
        relevance = None
    if relevance is None or relevance.shape != (n_units, n_columns) or not np.isfinite(relevance).all():
        raise InputError(
            f"not an explanation: field {fields.path('relevance')!r} must be finite numbers, one row per unit and "
            f"one column per target token ({n_units} x {n_columns})"
        )
    return relevance.astype(np.float32)
