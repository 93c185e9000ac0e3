"""Where a prompt's images lie in its tokens, and what each image token shows: the tokens an image stands for (as
``Idefics3Processor`` and ``SmolVLMProcessor`` write them) and each image token's box of its original image, which
the image units and every rendering of them (the HTML report's boxes, the PNG overlay) are placed by."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from atman_onnx.core.errors import InputError
from atman_onnx.runtime.image_config import ImageConfig
from atman_onnx.runtime.image_tiles import Box, Processed


def image_prompt(rows: int, cols: int, config: ImageConfig) -> str:
    """The tokens one image stands for in the prompt, as ``Idefics3Processor`` and ``SmolVLMProcessor`` write
    them: per split tile ``<fake_token_around_image><row_r_col_c>`` and its image tokens, a newline after each row,
    then a newline and the global image; an unsplit image is only the global image."""
    fake, run = config.fake_image_token, config.image_token * config.image_seq_len
    whole = f"{fake}{config.global_image_token}{run}{fake}"
    if rows == 0 and cols == 0:
        return whole
    grid = "".join("".join(f"{fake}<row_{r + 1}_col_{c + 1}>{run}" for c in range(cols)) + "\n" for r in range(rows))
    return f"{grid}\n{whole}"


def expand_prompt(text: str, layouts: Sequence[tuple[int, int]], config: ImageConfig) -> str:
    """``text`` with its i-th image marker (``<image>``) replaced by image i's tokens (``layouts``: each image's
    (rows, cols), e.g. ``Processed.layouts``)."""
    pieces = text.split(config.image_token)
    if len(pieces) - 1 != len(layouts):
        raise InputError(
            f"the prompt has {len(pieces) - 1} {config.image_token} markers but {len(layouts)} images "
            "were given; put one marker where each image goes"
        )
    expanded = [pieces[0]]
    for (rows, cols), piece in zip(layouts, pieces[1:]):
        expanded += [image_prompt(rows, cols, config), piece]
    return "".join(expanded)


class ImageToken(NamedTuple):
    """What one image token of the expanded prompt shows: image, tile, patch, and its box of the original image."""

    image: int
    tile: int
    patch: int  # the cell of the tile's grid x grid token grid, row-major
    box: Box


def token_boxes(processed: Processed, config: ImageConfig) -> list[ImageToken]:
    """One entry per image token of the expanded prompt, in prompt order.

    The model fills the prompt's image tokens in order with every tile's ``image_seq_len`` features, tiles in
    ``pixel_values`` order, which is the prompt's order. Within a tile, the connector's pixel shuffle
    (``Idefics3Connector.pixel_shuffle``, the same in SmolVLM) turns the encoder's n x n patches (row-major) into
    (n/s)^2 tokens, where token t = i * (n/s) + j concatenates the s x s block of patches in rows i*s .. i*s+s-1
    and columns j*s .. j*s+s-1: the tokens are a row-major grid of equal squares over the tile.
    """
    grid, tokens = config.grid, []
    for index, image in enumerate(processed.images):
        for tile, (left, top, width, height) in enumerate(image.boxes):
            for patch in range(grid * grid):
                row, col = divmod(patch, grid)
                box = (left + col * width / grid, top + row * height / grid, width / grid, height / grid)
                tokens.append(ImageToken(index, tile, patch, box))
    return tokens
