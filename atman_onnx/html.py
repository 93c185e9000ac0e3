"""Self-contained HTML report of an explanation: the prompt as a relevance heatmap, its images (data URIs) with
each image unit's box drawn over them, a target-token selector, each unit's score on hover or tap, and the settings
used. Inline CSS and JS only, no network assets."""

from __future__ import annotations

import base64
import io
import json
import re
from html import escape
from typing import TYPE_CHECKING

import numpy as np

from atman_onnx.palette import NEGATIVE, OPACITY, POSITIVE, css

if TYPE_CHECKING:
    from atman_onnx.explanation import Explanation
    from atman_onnx.runtime.units import ImageBox

NL, MARK = "\n", '<i class="nl"></i>\n'  # a visible, hoverable mark on line breaks (CSS ::before: no text)
SPECIAL = re.compile(r"<[^<>\s]+>")  # a special token's text, such as <fake_token_around_image> or <row_1_col_2>
MIME = {b"\x89PNG": "image/png", b"\xff\xd8\xff": "image/jpeg", b"GIF8": "image/gif", b"BM": "image/bmp"}

CSS = """
body{font:16px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#222;max-width:60rem;margin:1.5rem auto}
body{padding:0 1rem}h1{font-size:1.5rem;margin:0 0 .25rem}h2{font-size:1.05rem;margin:1.4rem 0 .4rem}
dl{display:flex;flex-wrap:wrap;gap:.2rem 1.4rem;margin:.8rem 0;font-size:.9rem}dl div{display:flex;gap:.4rem}
dt{color:#666}dd{margin:0}.text,.heatmap{white-space:pre-wrap;overflow-wrap:anywhere}
.text{background:#f6f6f6;padding:.5rem .7rem;border-radius:4px}.lead{color:#555;margin:0}
.heatmap{border:1px solid #ddd;border-radius:4px;padding:.7rem;line-height:1.9}
.unit{border-radius:2px;cursor:pointer}.unit:hover,.unit.picked{outline:2px solid #222}
.unit.target{border-bottom:2px dashed #666}.nl::before{content:"\\21b5";opacity:.45}.sep{color:#999;user-select:none}
.selector{display:flex;flex-wrap:wrap;gap:.3rem;align-items:center}button{font:inherit;font-size:.9rem;white-space:pre}
button{border:1px solid #bbb;background:#fff;border-radius:4px;padding:.1rem .45rem;cursor:pointer}
button.active{background:#222;color:#fff;border-color:#222}
.legend{display:flex;align-items:center;gap:.5rem;font-size:.85rem;color:#555;flex-wrap:wrap}
.bar{width:12rem;height:.8rem;border:1px solid #ccc;background:linear-gradient(to right,rgb(%s),#fff,rgb(%s))}
.info{margin-top:.6rem;padding:.4rem .7rem;background:#f6f6f6;border-radius:4px;min-height:1.5em;font-size:.95rem}
.images{display:flex;flex-wrap:wrap;gap:1rem;margin:.6rem 0}figure{margin:0;width:min(100%%,26rem)}
figcaption{font-size:.85rem;color:#555}.frame{position:relative}.frame img{display:block;width:100%%}
.box{position:absolute;box-sizing:border-box;opacity:%s;font-size:0;overflow:hidden}.box:hover,.box.picked{z-index:1}
.imgref{color:#555;border:1px solid #bbb;border-radius:3px;padding:0 .3rem;font-size:.9rem}
""" % (",".join(map(str, NEGATIVE)), ",".join(map(str, POSITIVE)), OPACITY)

JS = """
const units = document.querySelectorAll(".unit"), info = document.getElementById("info");
const fmt = v => (v >= 0 ? "+" : "") + v.toFixed(4);
const show = s => s.replace(/\\n/g, "\\u21b5").replace(/\\t/g, "\\u21e5");
let current = -1;
function colour(v) {
  const end = v >= 0 ? DATA.pos : DATA.neg, a = Math.min(Math.abs(v), 1);
  return "rgb(" + end.map(c => Math.round(255 + (c - 255) * a)).join(", ") + ")";
}
function values(t) { return t < 0 ? DATA.total : DATA.relevance.map(row => row[t]); }
function selectTarget(t) {  // t: a target token index, or -1 for all target tokens (their sum)
  current = t === "all" ? -1 : Number(t);
  const vals = values(current), scale = vals.reduce((m, v) => Math.max(m, Math.abs(v)), 0) || 1;
  units.forEach(el => {
    const i = Number(el.dataset.index);
    el.style.background = colour(vals[i] / scale);
    el.style.color = Math.abs(vals[i] / scale) > 0.6 ? "#fff" : "#000";
    el.title = show(el.textContent) + " \\u00b7 " + fmt(vals[i]);
  });
  document.getElementById("lo").textContent = fmt(-scale);
  document.getElementById("hi").textContent = fmt(scale);
  document.getElementById("for").textContent =
    current < 0 ? "all target tokens (sum)" : "target token \\u201c" + show(DATA.tokens[current]) + "\\u201d";
  document.querySelectorAll(".selector button").forEach(b => b.classList.toggle("active", +b.dataset.t === current));
}
function inspect(el) {
  const i = Number(el.dataset.index);
  units.forEach(u => u.classList.toggle("picked", u === el));
  const where = el.classList.contains("target") ? "target" : el.classList.contains("box") ? "image" : "prompt";
  info.textContent = "#" + i + " \\u201c" + show(el.textContent) + "\\u201d (" + where + "): relevance " +
    fmt(values(current)[i]) + " for " + document.getElementById("for").textContent;
}
const pick = e => { const el = e.target.closest(".unit"); if (el) inspect(el); };  // hover (desktop), tap (mobile)
document.querySelectorAll(".heatmap, .images").forEach(area => {
  area.addEventListener("mouseover", pick);
  area.addEventListener("click", pick);
});
document.querySelector(".selector").addEventListener("click", e => {
  const b = e.target.closest("button"); if (b) selectTarget(b.dataset.t);
});
"""


def _show(text: str) -> str:
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


def _uncovered(text: str, start: int, images: list[tuple[int, int, int]]) -> str:
    """Prompt text no unit covers (characters ``start`` on) as HTML: escaped, each shown image's tokens in it
    replaced by a marker."""
    out, at = [], start
    for first, end, image in images:
        if at <= first and end <= start + len(text):
            out += [escape(text[at - start : first - start]), f'<span class="imgref">[image {image + 1}]</span>']
            at = end
    return "".join(out) + escape(text[at - start :])


def _data_uri(data: bytes) -> str:
    """An image file as a data URI: PNG, JPEG, GIF, BMP and WebP as they are, others (TIFF...) converted to PNG."""
    mime = next((m for magic, m in MIME.items() if data.startswith(magic)), None)
    if mime is None and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        mime = "image/webp"
    if mime is None:  # a format browsers do not show: Pillow read it to explain it, and converts it here
        from atman_onnx.runtime.images import load_image

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
        hit = ((before[:, 0] < right - 1e-9) & (left < before[:, 2] - 1e-9)
               & (before[:, 1] < bottom - 1e-9) & (top < before[:, 3] - 1e-9))
        taken = set(layer[:n][hit].tolist())
        layer[n] = next(k for k in range(n + 1) if k not in taken)
    return [[boxes[n][0] for n in np.flatnonzero(layer == k)] for k in range(layer.max(initial=-1) + 1)]


def _figures(explanation: Explanation, total: np.ndarray, scale: float) -> str:
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
                unit, a = explanation.units[i], total[i] / scale
                box = unit.box
                place = f"left: {box.left:.3%}; top: {box.top:.3%}; width: {box.width:.3%}; height: {box.height:.3%}"
                drawn.append(f'<div class="unit box" data-index="{i}" style="{place}; background: {css(a)}" '
                             f'title="{escape(unit.text)} \u00b7 {total[i]:+.4f}">{escape(unit.text)}</div>')
            figures.append(f'<figure><div class="frame"><img src="{uri}" alt="image {image + 1}">{"".join(drawn)}'
                           f"</div><figcaption>{escape(caption)}</figcaption></figure>")
    return f'<div class="images">{"".join(figures)}</div>' if figures else ""


def render_html(explanation: Explanation) -> str:
    """The explanation as one HTML page; the "all target tokens" colours are inline, JS re-colours per token."""
    total = np.asarray(explanation.total, dtype=float)
    scale = float(np.abs(total).max()) if total.size else 0.0
    scale = scale or 1.0
    spans, marked = [], False
    ends = [u.end for u in explanation.units if u.segment == "prompt"]
    images = _image_ranges(explanation)
    tail = _uncovered(explanation.prompt[max(ends, default=0) :].rstrip("\n"), max(ends, default=0), images)
    tail = tail.replace(NL, MARK)
    for i, (unit, (at, gap, text)) in enumerate(zip(explanation.units, _pieces(explanation))):
        if unit.box is not None and explanation.images:
            continue  # drawn over its image instead
        target = unit.segment == "target"
        if target and not marked:
            spans.append(tail + '<span class="sep" title="the target tokens fed to the model start here">\u25b8</span>')
            marked = True
        a = total[i] / scale
        style = f"background: {css(a)}; color: {'#fff' if abs(a) > 0.6 else '#000'}"
        title = escape(f"{_show(text)} \u00b7 {total[i]:+.4f}")
        gap = escape(gap) if target else _uncovered(gap, at, images)
        spans.append(f'{gap}<span class="unit{" target" if target else ""}" data-index="{i}" '
                     f'style="{style}" title="{title}">{escape(text).replace(NL, MARK)}</span>')
    if not marked:
        spans.append(tail)
    buttons = ['<button data-t="-1" class="active">all tokens</button>'] + [
        f'<button data-t="{t}" title="target token #{t}">{escape(_show(tok))}</button>'
        for t, tok in enumerate(explanation.target_tokens)
    ]
    data = {
        "relevance": np.asarray(explanation.relevance, dtype=float).tolist(), "total": total.tolist(),
        "tokens": list(explanation.target_tokens), "pos": POSITIVE, "neg": NEGATIVE,
    }
    threshold = explanation.conceptual_threshold
    settings = {
        "model": explanation.model or "?", "mode": explanation.mode,
        "suppression factor": f"{explanation.suppression_factor:g}",
        "conceptual threshold": "off" if threshold is None else f"{threshold:g}",
        "granularity": explanation.granularity, "provider": explanation.provider or "?",
    }
    if "total_s" in explanation.timings:
        settings["time"] = f"{explanation.timings['total_s']:.2f} s, {int(explanation.timings.get('passes', 0))} passes"
    payload = json.dumps(data).replace("<", "\\u003c")  # no "</script>" inside the script
    hover = escape(explanation.granularity) + (" or an image box" if explanation.images else "")
    dl = "".join(f"<div><dt>{escape(k)}</dt><dd>{escape(str(v))}</dd></div>" for k, v in settings.items())
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>AtMan explanation</title><style>{CSS}</style></head><body>
<h1>AtMan explanation</h1>
<p class="lead">Each {escape(explanation.granularity)} of the input was suppressed in turn; its score is how much the
target's loss (cross-entropy) rose. <b style="color:rgb{POSITIVE}">Red</b>: the target depends on it.
<b style="color:rgb{NEGATIVE}">Blue</b>: the target is more likely without it.</p>
<dl>{dl}</dl>
<h2>Target</h2><div class="text">{escape(explanation.target)}</div>
<h2>Explain which target tokens?</h2><div class="selector" role="group">{"".join(buttons)}</div>
<h2>Prompt</h2>
<div class="legend"><span>colours for <b id="for">all target tokens (sum)</b>:</span><span id="lo">{-scale:+.4f}</span>
<span class="bar"></span><span id="hi">{scale:+.4f}</span>
<span>\u00b7 dashed underline: target tokens fed to the model</span></div>
{_figures(explanation, total, scale)}<div class="heatmap">{"".join(spans)}</div>
<div class="info" id="info" aria-live="polite">Hover over or tap a {hover} to see its score.
</div>
<script>const DATA = {payload};
{JS}</script></body></html>
"""
