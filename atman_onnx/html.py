"""Self-contained HTML report of an explanation: the prompt as a relevance heatmap, its images (data URIs) with
each image unit's box drawn over them, a target-token selector, each unit's score on hover or tap, and the settings
used. Inline CSS and JS only, no network assets.

This module computes what the report shows (the pieces of text, the image markers, the boxes and their layers, the
colours from the palette, the scores); the markup, CSS and JS are the templates ``report.html``, ``report.css``
and ``report.js`` (``atman_onnx.templating``)."""

from __future__ import annotations

import base64
import io
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from atman_onnx.palette import NEGATIVE, OPACITY, POSITIVE, css
from atman_onnx.runtime.search import GROUP
from atman_onnx.templating import render

if TYPE_CHECKING:
    from atman_onnx.explanation import Explanation
    from atman_onnx.runtime.units import ImageBox

SPECIAL = re.compile(r"<[^<>\s]+>")  # a special token's text, such as <fake_token_around_image> or <row_1_col_2>
MIME = {b"\x89PNG": "image/png", b"\xff\xd8\xff": "image/jpeg", b"GIF8": "image/gif", b"BM": "image/bmp"}
INK_FLIP = 0.6  # white text on a unit whose colour is stronger than this (of the scale), black below


@dataclass(frozen=True)
class Run:
    """Prompt text no unit covers, then the marker of the shown image whose tokens follow it (None: none)."""

    text: str
    image: int | None


@dataclass(frozen=True)
class Piece:
    """One text unit of the heatmap, with the uncovered text before it."""

    index: int
    gap: list[Run]
    text: str
    target: bool
    opens_target: bool  # the first target unit: the prompt's uncovered end and a separator go before it
    background: str
    ink: str
    title: str


@dataclass(frozen=True)
class Box:
    """One image unit's box over its image (fractions of the image), coloured like a text unit."""

    index: int
    left: float
    top: float
    width: float
    height: float
    background: str
    title: str
    text: str


@dataclass(frozen=True)
class Figure:
    """One view of an image: the image and a layer of its units' boxes that do not overlap."""

    uri: str
    image: int
    caption: str
    boxes: list[Box]


NOUNS = {"token": "target token", "sentence": "answer sentence", "complete": "target"}  # what a column is
TOP_SOURCES = 10  # the ranked list of sources under the heatmap


def _show(text: str) -> str:
    """Line breaks and tabs as visible arrows, where they would otherwise not show (titles, buttons)."""
    return text.replace("\n", "\u21b5").replace("\t", "\u21e5")


def _pieces(explanation: Explanation) -> list[tuple[int, str, str]]:
    """(where the uncovered text before starts, that text, text) of each unit: its slice of the prompt or target,
    else its own text."""
    source = {"prompt": explanation.prompt, "target": explanation.target}
    cursor = {"prompt": 0, "target": 0}
    pieces = []
    for unit in explanation.units:
        text, at = source.get(unit.segment, ""), cursor.get(unit.segment, 0)
        if unit.end > max(unit.start, at) and unit.end <= len(text):
            pieces.append((at, text[at : unit.start], text[max(unit.start, at) : unit.end]))
            cursor[unit.segment] = unit.end
        else:  # special tokens (no characters of their own), image units, and anything out of order
            pieces.append((at, "", unit.text))
    return pieces


def _image_ranges(explanation: Explanation) -> list[tuple[int, int, int]]:
    """(start, end, image) of each shown image, in prompt order: the characters of the prompt its tokens take, from
    its first image token to its last, widened over the unexplained special tokens (``<...>``) that open and close
    it. The report shows a marker there instead (the expanded prompt repeats ``<image>`` per image token)."""
    tokens, explained = explanation.tokens, {p for unit in explanation.units for p in unit.positions}
    runs: dict[int, list[int]] = {}
    for unit in explanation.units:
        if unit.box is not None and unit.box.image < len(explanation.images):
            runs.setdefault(unit.box.image, []).extend(unit.positions)
    ordered = sorted((min(p), max(p), image) for image, p in runs.items())

    def wrapper(p: int) -> bool:
        return p not in explained and tokens[p].segment == "prompt" and bool(SPECIAL.fullmatch(tokens[p].text))

    ranges, floor = [], -1
    for n, (lo, hi, image) in enumerate(ordered):
        ceiling = ordered[n + 1][0] if n + 1 < len(ordered) else len(tokens)
        while lo - 1 > floor and wrapper(lo - 1):
            lo -= 1
        while hi + 1 < ceiling and wrapper(hi + 1):
            hi += 1
        ranges.append((tokens[lo].start, tokens[hi].end, image))
        floor = hi
    return ranges


def _uncovered(text: str, start: int, images: list[tuple[int, int, int]]) -> list[Run]:
    """Prompt text no unit covers (characters ``start`` on), cut where each shown image's tokens in it are: the
    report shows that image's marker instead of them."""
    runs, at = [], start
    for first, end, image in images:
        if at <= first and end <= start + len(text):
            runs.append(Run(text[at - start : first - start], image))
            at = end
    return [*runs, Run(text[at - start :], None)]


def _data_uri(data: bytes) -> str:
    """An image file as a data URI: PNG, JPEG, GIF, BMP and WebP as they are, others (TIFF...) converted to PNG."""
    mime = next((m for magic, m in MIME.items() if data.startswith(magic)), None)
    if mime is None and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        mime = "image/webp"
    if mime is None:  # a format browsers do not show: Pillow read it to explain it, and converts it here
        from atman_onnx.runtime.image_load import load_image

        buffer = io.BytesIO()
        load_image(data).save(buffer, format="PNG")
        data, mime = buffer.getvalue(), "image/png"
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def _layers(boxes: list[tuple[int, ImageBox]]) -> list[list[int]]:
    """The unit indices of ``boxes`` split greedily, in order, into layers of boxes that do not overlap: one layer
    for regions; for tiles or tokens of a split image, the split tiles' units, then the global image's."""
    edges = np.array([(b.left, b.top, b.left + b.width, b.top + b.height) for _, b in boxes]).reshape(-1, 4)
    layer = np.zeros(len(boxes), dtype=int)
    for n, (left, top, right, bottom) in enumerate(edges):
        before = edges[:n]  # boxes that touch only along an edge do not overlap
        hit = (
            (before[:, 0] < right - 1e-9)
            & (left < before[:, 2] - 1e-9)
            & (before[:, 1] < bottom - 1e-9)
            & (top < before[:, 3] - 1e-9)
        )
        taken = set(layer[:n][hit].tolist())
        layer[n] = next(k for k in range(n + 1) if k not in taken)
    return [[boxes[n][0] for n in np.flatnonzero(layer == k)] for k in range(layer.max(initial=-1) + 1)]


def _figures(explanation: Explanation, total: np.ndarray, scale: float) -> list[Figure]:
    """Each image of the explanation with its units' boxes over it, coloured like text units; an image whose boxes
    overlap is shown once per layer of ``_layers``, so that no box hides another."""
    figures = []
    for image, data in enumerate(explanation.images):
        uri = _data_uri(data)
        boxes = [(i, u.box) for i, u in enumerate(explanation.units) if u.box is not None and u.box.image == image]
        layers = _layers(boxes) or [[]]
        for n, layer in enumerate(layers):
            caption = f"image {image + 1}"
            if len(layers) > 1:
                caption += f", view {n + 1} of {len(layers)}" + (": boxes that overlap view 1" if n else "")
            drawn = []
            for i in layer:
                unit = explanation.units[i]
                box = unit.box
                drawn.append(
                    Box(
                        i,
                        box.left,
                        box.top,
                        box.width,
                        box.height,
                        css(total[i] / scale),
                        f"{unit.text} \u00b7 {total[i]:+.4f}",
                        unit.text,
                    )
                )
            figures.append(Figure(uri, image, caption, drawn))
    return figures


def _heatmap(
    explanation: Explanation, total: np.ndarray, scale: float, images: list[tuple[int, int, int]]
) -> list[Piece]:
    """The text units in order (image units are drawn over their images instead), coloured by relevance."""
    pieces, opened = [], False
    for i, (unit, (at, gap, text)) in enumerate(zip(explanation.units, _pieces(explanation))):
        if unit.box is not None and explanation.images:
            continue
        target = unit.segment == "target"
        a = total[i] / scale
        pieces.append(
            Piece(
                i,
                [Run(gap, None)] if target else _uncovered(gap, at, images),
                text,
                target,
                target and not opened,
                css(a),
                "#fff" if abs(a) > INK_FLIP else "#000",
                f"{_show(text)} \u00b7 {total[i]:+.4f}",
            )
        )
        opened = opened or target
    return pieces


def _settings(explanation: Explanation) -> dict[str, str]:
    """The settings the report lists, by name."""
    threshold = explanation.conceptual_threshold
    settings = {
        "model": explanation.model or "?",
        "mode": explanation.mode,
        "suppression factor": f"{explanation.suppression_factor:g}",
        "conceptual threshold": "off" if threshold is None else f"{threshold:g}",
        "granularity": explanation.granularity,
        "provider": explanation.provider or "?",
    }
    if "total_s" in explanation.timings:
        settings["time"] = f"{explanation.timings['total_s']:.2f} s, {int(explanation.timings.get('passes', 0))} passes"
    return settings


def _excerpt(text: str, most: int = 120) -> str:
    """A coarse unit's text as its ranked list shows it: a document's opening, not all of it again."""
    return text if len(text) <= most else text[: most - 1].rstrip() + "\u2026"


def render_html(explanation: Explanation) -> str:
    """The explanation as one HTML page; the "all target tokens" colours are inline, JS re-colours per token."""
    total = np.asarray(explanation.total, dtype=float)
    scale = float(np.abs(total).max()) if total.size else 0.0
    scale = scale or 1.0
    images = _image_ranges(explanation)
    end = max((u.end for u in explanation.units if u.segment == "prompt"), default=0)
    coarse = [  # the coarser levels of a search (documents, paragraphs), ranked beside the finest; not its own groups
        {
            "granularity": level.granularity,
            "sources": [_excerpt(u.text) for u in level.units if u.segment == "prompt"],
            "relevance": [
                np.asarray(r, float).tolist() for u, r in zip(level.units, level.relevance) if u.segment == "prompt"
            ],
        }
        for level in explanation.levels[:-1]
        if level.granularity != GROUP
    ]
    data = {
        "relevance": np.asarray(explanation.relevance, dtype=float).tolist(),
        "total": total.tolist(),
        "tokens": list(explanation.target_tokens),
        "noun": NOUNS[explanation.target_granularity],
        "sources": [u.text for u in explanation.units if u.segment == "prompt"],
        "source_index": [i for i, u in enumerate(explanation.units) if u.segment == "prompt"],
        "coarse": coarse,
        "top": TOP_SOURCES,
        "pos": POSITIVE,
        "neg": NEGATIVE,
    }
    return render(
        "report.html",
        granularity=explanation.granularity,
        noun=NOUNS[explanation.target_granularity],
        target=explanation.target,
        target_tokens=[_show(t) for t in explanation.target_tokens],
        settings=_settings(explanation),
        scale=scale,
        figures=_figures(explanation, total, scale),
        heatmap=_heatmap(explanation, total, scale, images),
        tail=_uncovered(explanation.prompt[end:].rstrip("\n"), end, images),
        has_images=bool(explanation.images),
        coarse=[level["granularity"] for level in coarse],
        data=data,
        positive=POSITIVE,
        negative=NEGATIVE,
        opacity=OPACITY,
    )
