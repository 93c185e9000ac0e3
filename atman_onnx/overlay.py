"""An input image with the relevance of its image units drawn over it as a heatmap, and a legend bar below.

Each pixel's value is the sum of the total relevance (over the target tokens) of the units whose boxes cover it.
Where the units partition the image (regions; the tiles or tokens of an unsplit image) that is each unit's own
total; where the global image's units lie over the split tiles' units (image units ``tile`` and ``token``), a pixel
adds both, as suppressing either changes the target. Values are scaled by the image's largest absolute value,
coloured with the palette's ``shade`` and blended over the pixel with the palette's ``OPACITY``:
``round((1 - OPACITY) * pixel + OPACITY * shade(value / scale))``. Pixels no unit covers are left as they are.
"""

from __future__ import annotations

import io
import math
from typing import TYPE_CHECKING

import numpy as np

from atman_onnx.core.errors import InputError
from atman_onnx.palette import OPACITY, shade
from atman_onnx.runtime.image_load import load_image

if TYPE_CHECKING:
    from PIL.Image import Image

    from atman_onnx.explanation import Explanation


def overlay(explanation: Explanation, image_index: int = 0) -> Image:
    """Image ``image_index`` (0-based) of the prompt, upright and RGB at its original size, with its units'
    relevance blended over it (see the module docstring), above a legend bar of the colour scale."""
    if not explanation.images:
        raise InputError("the explanation carries no images to draw on (explain an image-text model with images)")
    if not 0 <= image_index < len(explanation.images):
        raise InputError(f"image_index {image_index} is out of range: {len(explanation.images)} images were explained")
    total = np.asarray(explanation.total, dtype=np.float64)
    boxes = [(u.box, value) for u, value in zip(explanation.units, total) if u.box and u.box.image == image_index]
    if not boxes:
        raise InputError(f"the explanation has no units on image {image_index + 1}")
    pixels = np.asarray(load_image(explanation.images[image_index]), dtype=np.float64).copy()
    values, covered = np.zeros(pixels.shape[:2]), np.zeros(pixels.shape[:2], dtype=bool)
    height, width = values.shape
    for box, value in boxes:
        area = (
            slice(_edge(box.top, height), _edge(box.top + box.height, height)),
            slice(_edge(box.left, width), _edge(box.left + box.width, width)),
        )
        values[area] += value
        covered[area] = True
    scale = float(np.abs(values).max()) or 1.0
    levels, which = np.unique(values[covered], return_inverse=True)
    colours = np.array([shade(v / scale) for v in levels], dtype=np.float64).reshape(-1, 3)
    pixels[covered] = np.floor((1 - OPACITY) * pixels[covered] + OPACITY * colours[which.ravel()] + 0.5)
    return _with_legend(pixels.astype(np.uint8), scale)


def _edge(fraction: float, size: int) -> int:
    """The pixel edge nearest a 0-1 coordinate; halves round up, and a float error never splits neighbours' edges."""
    return min(max(math.floor(fraction * size + 0.5 + 1e-9), 0), size)


def _with_legend(pixels: np.ndarray, scale: float) -> Image:
    """The image above a white strip: the palette's ramp from -scale to +scale, labelled at its ends."""
    from PIL import Image, ImageDraw, ImageFont  # Pillow is there: load_image needed it

    height, width = pixels.shape[:2]
    size = max(10, width // 40)
    font, pad = ImageFont.load_default(size), size // 2
    canvas = Image.new("RGB", (width, height + 2 * size + 3 * pad), "white")
    canvas.paste(Image.fromarray(pixels), (0, 0))
    draw, bar = ImageDraw.Draw(canvas), max(width - 2 * pad, 1)
    for x in range(bar):
        colour = shade(2 * x / max(bar - 1, 1) - 1)
        draw.line([(pad + x, height + pad), (pad + x, height + pad + size - 1)], fill=colour)
    low, high, y = f"{-scale:+.4f}", f"{scale:+.4f}", height + 2 * pad + size
    if draw.textlength(low, font=font) + draw.textlength(high, font=font) + pad <= bar:
        draw.text((pad, y), low, fill="black", font=font)
        draw.text((pad + bar, y), high, fill="black", font=font, anchor="ra")
    else:  # too narrow for both: one label in the middle
        draw.text((width // 2, y), f"\u00b1{scale:.4f}", fill="black", font=font, anchor="ma")
    return canvas


def overlay_png(explanation: Explanation, image_index: int = 0) -> bytes:
    """``overlay`` as the bytes of a PNG file."""
    buffer = io.BytesIO()
    overlay(explanation, image_index).save(buffer, format="PNG")
    return buffer.getvalue()
