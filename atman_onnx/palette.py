"""The one colour ramp of every rendering (terminal heatmap, HTML report, image overlay): white at 0, red for
relevance that raises the target's likelihood, blue for relevance that lowers it."""

from __future__ import annotations

POSITIVE, NEGATIVE = (214, 39, 40), (33, 102, 196)  # the colours of +max and -max
OPACITY = 0.5  # how much of an image a heatmap over it covers (the PNG overlay and the HTML report alike)


def shade(value: float) -> tuple[int, int, int]:
    """The colour of a relevance scaled to [-1, 1] (clipped): linear from white to the end colour of its sign."""
    end, a = (POSITIVE if value >= 0 else NEGATIVE), min(abs(value), 1.0)
    red, green, blue = (int(255 + (c - 255) * a + 0.5) for c in end)
    return red, green, blue


def css(value: float) -> str:
    """``shade`` as a CSS colour."""
    return "rgb({}, {}, {})".format(*shade(value))
