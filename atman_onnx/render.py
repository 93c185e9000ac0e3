"""Terminal rendering of an explanation: 24-bit ANSI background colours, or bracketed scores in plain text."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from atman_onnx.explanation import Explanation


def _shade(value: float) -> str:
    """ANSI background for a relevance in [-1, 1]: white at 0, red towards 1, blue towards -1."""
    level = int(255 * (1 - min(abs(value), 1.0)))
    rgb = (255, level, level) if value >= 0 else (level, level, 255)
    return "\x1b[48;2;{};{};{}m\x1b[38;2;0;0;0m".format(*rgb)


def text_heatmap(explanation: Explanation, color: bool = False, top: int = 5) -> str:
    total = explanation.total
    scale = float(np.abs(total).max()) or 1.0
    parts = []
    for unit, value in zip(explanation.units, total):
        shown = unit.text.replace("\n", "\\n")
        if color:
            parts.append(f"{_shade(value / scale)}{shown}\x1b[0m")
        else:
            parts.append(f"{shown}[{value:+.3f}]")
    lines = [
        f"target: {explanation.target!r} ({len(explanation.target_ids)} tokens)",
        f"AtMan {explanation.mode}, suppression factor {explanation.suppression_factor}"
        + (f", conceptual threshold {explanation.conceptual_threshold}" if explanation.conceptual_threshold else ""),
        "",
        ("" if color else " ").join(parts),
        "",
        f"most relevant prompt {explanation.granularity}s (sum over target tokens; max |relevance| {scale:.3f}):",
    ]
    for index, unit, value in explanation.top(top):
        lines.append(f"  {value:+.4f}  #{index:<4} {unit.text!r}")
    return "\n".join(lines)
