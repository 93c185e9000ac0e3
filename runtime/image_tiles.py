"""A prompt's images as the vision encoder takes them, without torch: resized, cut into tiles, rescaled and
normalised, with the part of the original image each tile shows.

``preprocess`` reproduces transformers' ``Idefics3ImageProcessorPil`` and ``SmolVLMImageProcessorPil`` (the two
are the same code) pixel for pixel, with Pillow's own resize:

1. the longest edge is scaled to ``longest_edge`` (smaller images are enlarged), the other edge kept in proportion,
   truncated and rounded up to even, then both kept under 4096 (``image_resize``);
2. with splitting, each edge is rounded up to a multiple of ``tile_size``, stretching the image; an image larger
   than one tile is cut into ``rows x cols`` tiles (row-major), followed by the whole image resized to one tile
   (the global image); one of a single tile's size is that one tile (``rows = cols = 0``). Without splitting, the
   image is resized to one tile;
3. pixels are rescaled (x * rescale_factor, in float64, then float32) and normalised ((x - mean) / std, float32).

Every resize stretches the whole image (nothing is cropped or padded), so a tile covers a fixed fraction of the
original: tile (r, c) is ``[c / cols, r / rows, 1 / cols, 1 / rows]`` and the global image ``[0, 0, 1, 1]``.

One prompt's images go in one call and their tiles are concatenated, as transformers does for one sample; padding
(``do_pad``) only evens out tile counts between samples of a batch, so it never applies here, and the pixel
attention mask it would return is all ones, which is what the model assumes when it gets none.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from atman_onnx.core.errors import InputError
from atman_onnx.runtime.image_config import ImageConfig
from atman_onnx.runtime.image_load import ImageSource, load_image
from atman_onnx.runtime.image_resize import fit_longest_edge, multiple_of_tile

if TYPE_CHECKING:
    from PIL.Image import Image

Box = tuple[float, float, float, float]  # left, top, width, height, as fractions of the original image


@dataclass(frozen=True)
class ProcessedImage:
    """One image as the model takes it: its tiles' pixels, its split, its size, and each tile's box."""

    pixel_values: np.ndarray  # float32 [tiles, 3, tile_size, tile_size]: split tiles row-major, then the global one
    rows: int  # 0 (and cols 0) when the image is one tile
    cols: int
    size: tuple[int, int]  # the original width and height
    boxes: tuple[Box, ...]  # per tile: the part of the original image it shows


@dataclass(frozen=True)
class Processed:
    """A prompt's images in order."""

    images: tuple[ProcessedImage, ...]

    @property
    def pixel_values(self) -> np.ndarray:
        """Every image's tiles in order, float32 [tiles, 3, S, S] (transformers adds a batch axis in front)."""
        return np.concatenate([image.pixel_values for image in self.images])

    @property
    def layouts(self) -> list[tuple[int, int]]:
        """Each image's (rows, cols), for ``expand_prompt``."""
        return [(image.rows, image.cols) for image in self.images]


def preprocess(images: Sequence[ImageSource], config: ImageConfig) -> Processed:
    """The pixel values, split and tile boxes of a prompt's images, equal to transformers' processors."""
    if isinstance(images, (str, bytes, bytearray, os.PathLike)) or not isinstance(images, Sequence):
        raise InputError(f"preprocess takes a list of images, got {type(images).__name__}")
    if not images:
        raise InputError("no images to preprocess")
    processed = []
    for i, image in enumerate(images):
        try:
            processed.append(_process_one(load_image(image), config))
        except InputError as exc:
            raise InputError(f"image {i + 1}: {exc}") from None
    return Processed(tuple(processed))


def _process_one(image: Image, config: ImageConfig) -> ProcessedImage:
    """One RGB image: resized, split, rescaled and normalised, with its tiles' boxes."""
    size = image.size
    if config.do_resize:
        image = image.resize(fit_longest_edge(*image.size, config.longest_edge), resample=config.resample)
    tiles, rows, cols = _split(image, config)
    boxes = [(c / cols, r / rows, 1 / cols, 1 / rows) for r in range(rows) for c in range(cols)]
    return ProcessedImage(
        _normalise(np.stack(tiles).transpose(0, 3, 1, 2), config), rows, cols, size, (*boxes, (0.0, 0.0, 1.0, 1.0))
    )


def _split(image: Image, config: ImageConfig) -> tuple[list[np.ndarray], int, int]:
    """The tiles (uint8 [S, S, 3]) of a resized image, the global one last, and its rows and cols (0 if unsplit)."""
    tile, resample = config.tile_size, config.resample
    if not config.do_image_splitting:
        return [np.asarray(image.resize((tile, tile), resample=resample))], 0, 0
    image = image.resize(multiple_of_tile(*image.size, tile), resample=resample)
    if image.width == tile and image.height == tile:
        return [np.asarray(image)], 0, 0
    pixels, rows, cols = np.asarray(image), image.height // tile, image.width // tile
    tiles = [pixels[r * tile : (r + 1) * tile, c * tile : (c + 1) * tile] for r in range(rows) for c in range(cols)]
    return [*tiles, np.asarray(image.resize((tile, tile), resample=resample))], rows, cols


def _normalise(tiles: np.ndarray, config: ImageConfig) -> np.ndarray:
    """uint8 [n, 3, S, S] to float32, with transformers' rescale and normalise, operation for operation."""
    pixels = (
        (tiles.astype(np.float64) * config.rescale_factor).astype(np.float32)
        if config.do_rescale
        else tiles.astype(np.float32)
    )
    if config.do_normalize:
        mean = np.array(config.image_mean, dtype=np.float32)[:, None, None]
        std = np.array(config.image_std, dtype=np.float32)[:, None, None]
        pixels = (pixels - mean) / std
    return pixels
