"""Terminal rendering of an explanation: a rich heatmap on a terminal, bracketed scores in plain text."""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

import numpy as np

from atman_onnx.palette import shade

LEGEND_CELLS = 11  # an odd count puts white (0) in the middle

if TYPE_CHECKING:
    from atman_onnx.explanation import Explanation


def _header(explanation: Explanation) -> list[str]:
    settings = f"AtMan {explanation.mode}, suppression factor {explanation.suppression_factor}"
    if explanation.conceptual_threshold:
        settings += f", conceptual threshold {explanation.conceptual_threshold}"
    what = f"target: {explanation.target!r} ({len(explanation.target_ids)} tokens)"
    if explanation.contrast is not None:
        what += f" rather than contrast {explanation.contrast!r}"
    lines = [what, f"{settings}, {explanation.granularity} granularity"]
    if explanation.levels:
        chain = " > ".join(f"{level.granularity} ({len(level.units)} scored)" for level in explanation.levels)
        lines.append(f"levels: {chain}; {int(explanation.timings.get('passes', 0))} passes")
    return [*lines, ""]


def _footer(explanation: Explanation, scale: float, top: int) -> list[str]:
    what = f"most relevant prompt {explanation.granularity}s"
    lines = ["", f"{what} (sum over target tokens; max |relevance| {scale:.3f}):"]
    for index, unit, value in explanation.top(top):
        lines.append(f"  {value:+.4f}  #{index:<4} {unit.text!r}")
    if explanation.target_granularity != "token":  # each answer sentence's own sources
        for column, text in enumerate(explanation.target_tokens):
            lines += ["", f"sources of {text.strip()!r}:"]
            for index, unit, value in explanation.top(top, column=column):
                lines.append(f"  {value:+.4f}  #{index:<4} {unit.text!r}")
    return lines + [f"warning: {warning}" for warning in explanation.warnings]


def text_heatmap(explanation: Explanation, color: bool = False, top: int = 5, width: int = 100) -> str:
    """The heatmap as a string: ANSI colours via rich when ``color``, else ``unit[+score]`` plain text."""
    total = explanation.total
    scale = float(np.abs(total).max()) or 1.0
    if not color:
        body = " ".join(f"{u.text.strip() or repr(u.text)}[{v:+.3f}]" for u, v in zip(explanation.units, total))
        return "\n".join([*_header(explanation), body, *_footer(explanation, scale, top)])
    from rich.console import Console
    from rich.text import Text

    def style(a: float) -> str:
        r, g, b = shade(a)
        return f"{'white' if abs(a) > 0.6 else 'black'} on rgb({r},{g},{b})"  # the ink as the HTML report picks it

    heat = Text()
    for unit, value in zip(explanation.units, total):
        heat.append(unit.text if explanation.granularity == "token" else unit.text + " ", style=style(value / scale))
    legend = Text(f"colour scale {-scale:+.3f} ")  # the HTML report's legend bar: blue, white at 0, red
    for step in np.linspace(-1, 1, LEGEND_CELLS):
        legend.append("  ", style=style(step))
    legend.append(f" {scale:+.3f}")
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, color_system="truecolor", width=width)
    console.print("\n".join(_header(explanation)))
    console.print(legend, highlight=False)
    console.print(heat)
    console.print("\n".join(_footer(explanation, scale, top)), highlight=False)
    return out.getvalue().rstrip("\n")
