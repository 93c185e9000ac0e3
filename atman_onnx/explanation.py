"""The result of an explanation: a plain data object that round-trips through JSON and renders itself."""

from __future__ import annotations

import base64
import json
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from atman_onnx.core.errors import InputError
from atman_onnx.runtime.units import Token, Unit, box_from_dict, location_to_dict

# 2 adds each unit's typed ``location`` (a text span or an image box); 3 adds ``images`` (the prompt's images, as
# base64 strings of their files, so that a report or overlay can be drawn from the file alone). Older files load.
JSON_VERSION = 3


@dataclass(frozen=True, eq=False)
class Explanation:
    """AtMan relevance of every explained unit for every target token.

    The model is fed the prompt, then the target without its last token; ``tokens`` lists those fed positions.
    ``units`` are what was suppressed, one per fed position at the default ``token`` granularity.
    ``relevance[u, t]`` is the rise in cross-entropy of target token ``t`` when unit ``u`` is suppressed:
    positive means the target depends on that unit. ``total`` sums over the target tokens.
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
    contrast: str | None = None
    contrast_ids: list[int] | None = None
    model: str = ""
    provider: str = ""
    timings: dict[str, Any] = field(default_factory=dict)
    images: tuple[bytes, ...] = ()  # the prompt's images (their files' bytes), for an image-text model

    @property
    def total(self) -> np.ndarray:
        """Relevance of each unit for the whole target: the sum over target tokens."""
        return self.relevance.sum(axis=1)

    def top(self, k: int = 10, segment: str | None = "prompt") -> list[tuple[int, Unit, float]]:
        """The ``k`` most relevant units (index, unit, total relevance), most relevant first."""
        total = self.total
        picks = [i for i, unit in enumerate(self.units) if segment is None or unit.segment == segment]
        picks.sort(key=lambda i: -total[i])
        return [(i, self.units[i], float(total[i])) for i in picks[:k]]

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["units"] = [
            {**{k: v for k, v in asdict(u).items() if k != "box"}, "location": location_to_dict(u.location)}
            for u in self.units
        ]
        data["relevance"] = self.relevance.astype(float).tolist()
        data["relevance_total"] = self.total.astype(float).tolist()
        data["images"] = [base64.b64encode(image).decode("ascii") for image in self.images]
        return {"format_version": JSON_VERSION, **data}

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str) -> Explanation:
        """Read a file written by ``to_json`` (``format_version`` 1, 2 or 3)."""
        data = json.loads(text)
        version = data.pop("format_version", 1)
        if version not in (1, 2, JSON_VERSION):
            raise InputError(f"explanation format_version {version!r} is newer than this atman-onnx reads ({JSON_VERSION})")
        data.pop("relevance_total", None)
        data["tokens"] = [Token(**t) for t in data["tokens"]]
        data["units"] = [
            Unit(u["text"], u["start"], u["end"], u["segment"], tuple(u["positions"]), box_from_dict(u.get("location")))
            for u in data["units"]
        ]
        data["relevance"] = np.asarray(data["relevance"], dtype=np.float32).reshape(len(data["units"]), -1)
        data["images"] = tuple(base64.b64decode(image) for image in data.get("images", []))
        return cls(**data)

    def to_text(self, color: bool = False, top: int = 5) -> str:
        """A terminal heatmap of total relevance: red raises the target's likelihood, blue lowers it."""
        from atman_onnx.render import text_heatmap

        return text_heatmap(self, color=color, top=top)

    def to_html(self) -> str:
        """One self-contained HTML page (no network assets): the prompt as a heatmap, a target-token selector,
        each unit's score on hover or tap, and the settings used."""
        from atman_onnx.html import render_html

        return render_html(self)
