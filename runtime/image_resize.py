"""The sizes the Idefics3 and SmolVLM processors resize an image to, with transformers' float arithmetic, so that
the pixels match theirs exactly: first the longest edge to ``longest_edge`` (kept under 4096), then, to split it,
each edge up to a multiple of the tile size."""

from __future__ import annotations

import math

MAX_IMAGE_SIZE = 4096  # transformers' absolute bound on an edge after the first resize


def fit_longest_edge(width: int, height: int, longest: int) -> tuple[int, int]:
    """(width, height) with the longest edge at ``longest``, the other truncated and made even, then kept under
    MAX_IMAGE_SIZE (transformers' ``get_resize_output_image_size``, float arithmetic and all)."""
    aspect = width / height
    if width >= height:
        width, height = longest, int(longest / aspect)
        height += height % 2
    else:
        width, height = int(longest * aspect), longest
        width += width % 2
    width, height = max(width, 1), max(height, 1)
    aspect = width / height
    if width >= height and width > MAX_IMAGE_SIZE:
        width, height = MAX_IMAGE_SIZE, int(MAX_IMAGE_SIZE / aspect)
    elif height > width and height > MAX_IMAGE_SIZE:
        width, height = int(MAX_IMAGE_SIZE * aspect), MAX_IMAGE_SIZE
    return max(width, 1), max(height, 1)


def multiple_of_tile(width: int, height: int, tile: int) -> tuple[int, int]:
    """(width, height) rounded up to multiples of ``tile``, the shorter edge from the longer one's new length
    (transformers' ``resize_for_vision_encoder``)."""
    aspect = width / height
    if width >= height:
        width = math.ceil(width / tile) * tile
        height = math.ceil(int(width / aspect) / tile) * tile
    else:
        height = math.ceil(height / tile) * tile
        width = math.ceil(int(height * aspect) / tile) * tile
    return width, height
