"""Images for Idefics3 and SmolVLM, without torch: tiles of pixels, the prompt's image tokens, and where each lies.

``preprocess`` reproduces transformers' ``Idefics3ImageProcessorPil`` and ``SmolVLMImageProcessorPil`` (the two
are the same code) pixel for pixel, with Pillow's own resize:

1. the longest edge is scaled to ``longest_edge`` (smaller images are enlarged), the other edge kept in proportion,
   truncated and rounded up to even, then both kept under 4096;
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

import io
import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, Union

import numpy as np

from atman_onnx.core.errors import ContractError, InputError

if TYPE_CHECKING:
    from PIL.Image import Image

ImageSource = Union[str, os.PathLike, bytes, "Image"]
Box = tuple[float, float, float, float]  # left, top, width, height, as fractions of the original image

MAX_IMAGE_SIZE = 4096  # transformers' absolute bound on an edge after the first resize
PROCESSORS = ("Idefics3Processor", "SmolVLMProcessor")
FILES = ("processor_config.json", "preprocessor_config.json")


def _pil():
    """PIL.Image, imported when images are first used: Pillow is the optional ``images`` extra."""
    try:
        from PIL import Image
    except ImportError:
        raise InputError("images need Pillow: pip install 'atman-onnx[images]'") from None
    return Image


@dataclass(frozen=True)
class ImageConfig:
    """How a model's processor turns images into tiles and prompt tokens (the image processor's settings with
    transformers' names, plus the processor's ``image_seq_len`` and token strings).

    Images are always converted to RGB, which the vision encoder needs whatever ``do_convert_rgb`` says.
    """

    tile_size: int = 364  # max_image_size["longest_edge"]: the side of the square tiles the vision encoder takes
    longest_edge: int = 4 * 364  # size["longest_edge"]: the first resize (when do_resize)
    do_resize: bool = True
    do_image_splitting: bool = True
    resample: int = 1  # a PIL filter: 1 is LANCZOS
    do_rescale: bool = True
    rescale_factor: float = 1 / 255
    do_normalize: bool = True
    image_mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    image_std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    image_seq_len: int = 169  # image tokens per tile: a square grid after the connector's pixel shuffle
    image_token: str = "<image>"
    fake_image_token: str = "<fake_token_around_image>"
    global_image_token: str = "<global-img>"

    def __post_init__(self):
        for name in ("tile_size", "longest_edge", "image_seq_len"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ContractError(f"image config: {name} must be a positive integer, got {value!r}")
        if math.isqrt(self.image_seq_len) ** 2 != self.image_seq_len:
            raise ContractError(f"image config: image_seq_len must be a square number, got {self.image_seq_len}")
        if self.resample not in range(6):
            raise ContractError(f"image config: resample must be a PIL filter 0-5, got {self.resample!r}")
        for name in ("image_mean", "image_std"):
            if len(getattr(self, name)) != 3:
                raise ContractError(f"image config: {name} must have 3 values, got {getattr(self, name)!r}")

    @property
    def grid(self) -> int:
        """Image tokens along each side of a tile."""
        return math.isqrt(self.image_seq_len)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ImageConfig:
        """From a processor's saved settings: the image processor's keys, flat or under ``"image_processor"``,
        with ``image_seq_len`` and the token strings beside them; missing keys take transformers' defaults."""
        known = data.get("processor_class")
        if known is not None and known not in PROCESSORS:
            raise ContractError(f"image config: processor {known!r} is not supported ({', '.join(PROCESSORS)} are)")
        settings = {**data, **data.get("image_processor", {})}

        def edge(key: str, default: int) -> int:
            value = settings.get(key, {"longest_edge": default})
            if not isinstance(value, dict) or "longest_edge" not in value:
                raise ContractError(f"image config: {key} must give a longest_edge, got {value!r}")
            return value["longest_edge"]

        defaults = cls()
        fields = {
            "tile_size": edge("max_image_size", defaults.tile_size),
            "longest_edge": edge("size", defaults.longest_edge),
            "image_mean": _per_channel(settings.get("image_mean", defaults.image_mean)),
            "image_std": _per_channel(settings.get("image_std", defaults.image_std)),
        }
        for name in ("do_resize", "do_image_splitting", "resample", "do_rescale", "rescale_factor", "do_normalize",
                     "image_seq_len", "image_token", "fake_image_token", "global_image_token"):
            if name in settings:
                fields[name] = settings[name]
        return cls(**fields)

    @classmethod
    def load(cls, folder: str | Path) -> ImageConfig:
        """Read what ``Idefics3Processor`` or ``SmolVLMProcessor.save_pretrained`` wrote to ``folder``.

        transformers 5 writes one ``processor_config.json`` with the image processor under ``"image_processor"``;
        hub checkpoints have the image processor in ``preprocessor_config.json`` and ``image_seq_len`` in
        ``processor_config.json``. SmolVLM's processor takes its token strings from the tokenizer's attributes
        (``tokenizer_config.json``); Idefics3's are fixed.
        """
        folder = Path(folder)
        found = [_read_json(folder / name) for name in FILES if (folder / name).is_file()]
        if not found:
            raise ContractError(f"{folder} has no {' or '.join(FILES)}")
        data = {key: value for part in reversed(found) for key, value in part.items()}
        tokenizer_config = folder / "tokenizer_config.json"
        if data.get("processor_class") == "SmolVLMProcessor" and tokenizer_config.is_file():
            tokenizer = _read_json(tokenizer_config)
            extra = tokenizer.get("extra_special_tokens")
            tokens = {**(extra if isinstance(extra, dict) else {}), **tokenizer}
            data.update({name: tokens[name] for name in ("image_token", "fake_image_token", "global_image_token")
                         if isinstance(tokens.get(name), str)})
        return cls.from_dict(data)


def _per_channel(value: Any) -> tuple[float, ...]:
    """A mean or std as one value per channel (transformers also takes a single number for all three)."""
    return (value,) * 3 if isinstance(value, (int, float)) else tuple(value)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ContractError(f"cannot read {path}: {error}") from None
    if not isinstance(data, dict):
        raise ContractError(f"{path} does not hold a JSON object")
    return data


def load_image(source: ImageSource) -> Image:
    """An RGB PIL image from a file path, encoded bytes, or a PIL image.

    Files and bytes are decoded and turned upright by their EXIF orientation, as transformers' ``load_image``
    does. Transparency is composited onto white, as the processors' ``convert_to_rgb`` does for PIL images
    (transformers' ``load_image`` of a path drops the alpha channel instead).
    """
    pil = _pil()
    if isinstance(source, pil.Image):
        return _to_rgb(source)
    if isinstance(source, (bytes, bytearray)):
        name, stream = f"{len(source)} bytes", io.BytesIO(source)
    elif isinstance(source, (str, os.PathLike)):
        name, stream = str(source), source
        if not Path(source).is_file():
            raise InputError(f"no such image file: {name}")
    else:
        raise InputError(f"an image must be a path, bytes or a PIL image, got {type(source).__name__}")
    try:
        image = pil.open(stream)
        image.load()
    except pil.DecompressionBombError:
        raise InputError(f"{name} has more pixels than Pillow opens (over {2 * pil.MAX_IMAGE_PIXELS})") from None
    except (pil.UnidentifiedImageError, OSError, ValueError) as error:
        raise InputError(f"not an image Pillow can read: {name} ({error.__class__.__name__})") from None
    from PIL import ImageOps

    return _to_rgb(ImageOps.exif_transpose(image))


def _to_rgb(image: Image) -> Image:
    """RGB, with any transparency composited onto white (transformers' ``convert_to_rgb``)."""
    pil = _pil()
    if "A" in image.getbands() or image.info.get("transparency") is not None:
        image = image.convert("RGBA")
        return pil.alpha_composite(pil.new("RGBA", image.size, (255, 255, 255, 255)), image).convert("RGB")
    return image.convert("RGB")


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
        image = image.resize(_fit_longest_edge(*image.size, config.longest_edge), resample=config.resample)
    tiles, rows, cols = _split(image, config)
    boxes = [(c / cols, r / rows, 1 / cols, 1 / rows) for r in range(rows) for c in range(cols)]
    return ProcessedImage(_normalise(np.stack(tiles).transpose(0, 3, 1, 2), config), rows, cols, size,
                          (*boxes, (0.0, 0.0, 1.0, 1.0)))


def _split(image: Image, config: ImageConfig) -> tuple[list[np.ndarray], int, int]:
    """The tiles (uint8 [S, S, 3]) of a resized image, the global one last, and its rows and cols (0 if unsplit)."""
    tile, resample = config.tile_size, config.resample
    if not config.do_image_splitting:
        return [np.asarray(image.resize((tile, tile), resample=resample))], 0, 0
    image = image.resize(_multiple_of_tile(*image.size, tile), resample=resample)
    if image.width == tile and image.height == tile:
        return [np.asarray(image)], 0, 0
    pixels, rows, cols = np.asarray(image), image.height // tile, image.width // tile
    tiles = [pixels[r * tile:(r + 1) * tile, c * tile:(c + 1) * tile] for r in range(rows) for c in range(cols)]
    return [*tiles, np.asarray(image.resize((tile, tile), resample=resample))], rows, cols


def _fit_longest_edge(width: int, height: int, longest: int) -> tuple[int, int]:
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


def _multiple_of_tile(width: int, height: int, tile: int) -> tuple[int, int]:
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


def _normalise(tiles: np.ndarray, config: ImageConfig) -> np.ndarray:
    """uint8 [n, 3, S, S] to float32, with transformers' rescale and normalise, operation for operation."""
    pixels = (tiles.astype(np.float64) * config.rescale_factor).astype(np.float32) if config.do_rescale \
        else tiles.astype(np.float32)
    if config.do_normalize:
        mean = np.array(config.image_mean, dtype=np.float32)[:, None, None]
        std = np.array(config.image_std, dtype=np.float32)[:, None, None]
        pixels = (pixels - mean) / std
    return pixels


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
        raise InputError(f"the prompt has {len(pieces) - 1} {config.image_token} markers but {len(layouts)} images "
                         "were given; put one marker where each image goes")
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
