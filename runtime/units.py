"""What an explanation is about: the fed tokens, and the units suppressed one per pass, each with a typed location.

A unit's location says where it lies in the input: a ``TextSpan`` (a character range of the prompt or the target)
or an ``ImageBox`` (a rectangle of one input image, in 0-1 coordinates). The engine below never asks which: it
sees only a unit's fed positions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from atman_onnx.core.errors import InputError
from atman_onnx.runtime.groups import text_spans, token_groups


@dataclass(frozen=True)
class Token:
    """One fed token: its text, its character span in ``prompt`` (or ``target``), and which of the two it is in."""

    text: str
    start: int
    end: int
    segment: str  # "prompt" or "target"


@dataclass(frozen=True)
class TextSpan:
    """Characters ``start:end`` of the prompt or of the target (``segment``)."""

    segment: str
    start: int
    end: int
    kind = "text"


@dataclass(frozen=True)
class ImageBox:
    """A rectangle of input image ``image``: left, top, width and height as fractions of its width and height."""

    image: int
    left: float
    top: float
    width: float
    height: float
    kind = "image"


Location = TextSpan | ImageBox


@dataclass(frozen=True)
class Unit:
    """What one row of relevance is about: a token, a word, a sentence, a span or an image region, suppressed in
    one pass.

    ``positions`` are the fed positions it covers. A text unit's ``start``/``end`` are its character span in
    ``prompt`` (or ``target`` for segment "target"); an image unit carries its ``box``.
    """

    text: str
    start: int
    end: int
    segment: str
    positions: tuple[int, ...]
    box: ImageBox | None = None

    @property
    def location(self) -> Location:
        """Where the unit lies: its image box, else its text span."""
        return self.box if self.box is not None else TextSpan(self.segment, self.start, self.end)


def location_to_dict(location: Location) -> dict[str, Any]:
    """The JSON form of a location: ``{"type": "text" | "image", ...fields}``."""
    return {"type": location.kind, **vars(location)}


def make_units(
    prompt_text: str,
    target_text: str,
    tokens: list[Token],
    n_prompt: int,
    granularity: str,
    spans: list[tuple[int, int]] | None,
    delimiter: str | None,
    within: list[tuple[int, int]] | None,
    with_target: bool,
    target_level: str | None = None,
) -> list[Unit]:
    """The units to suppress: prompt groups (only inside ``within`` when given, e.g. chat message contents), then,
    when ``with_target``, the fed target tokens grouped alike, or at ``target_level`` when given, "whole" making them
    one unit (spans are the prompt's, so under "spans" the target goes token by token unless told otherwise)."""
    segments = [("prompt", prompt_text, range(n_prompt), within, granularity)]
    if with_target:  # only the fed part of the target (all but its last token) can be suppressed
        fed_target = target_text[: tokens[-1].end] if len(tokens) > n_prompt else ""
        level = target_level or ("token" if granularity == "spans" else granularity)
        segments.append(("target", fed_target, range(n_prompt, len(tokens)), None, level))
    units = []
    for segment, text, positions, inside, level in segments:
        if level == "whole":
            if positions:
                start = tokens[positions[0]].start
                units.append(Unit(text[start:], start, len(text), segment, tuple(positions)))
            continue
        if level == "token":
            for p in positions:
                start, end = tokens[p].start, tokens[p].end
                if inside is None or any(lo < end and start < hi for lo, hi in inside):
                    units.append(Unit(tokens[p].text, start, end, segment, (p,)))
            continue
        offsets = [(tokens[p].start, tokens[p].end) for p in positions]
        for group in token_groups(offsets, text, text_spans(text, level, spans, delimiter, inside)):
            members = tuple(positions[i] for i in group.positions)
            units.append(Unit(text[group.start : group.end], group.start, group.end, segment, members))
    if not units:
        raise InputError(f"nothing to explain: no {granularity} units in the prompt")
    return units
