"""Images into an image-text model's input: the vision graph's features in the place of the prompt's image tokens,
and the image units a relevance row can be about (regions of a grid, tiles, or single image tokens).

The decoder of an image-text export takes input embeddings (contract version 2): the text embedding matrix's rows
for the prompt's ids, with the rows of the image tokens replaced, in order, by the features of every tile of every
image, as the model's own ``masked_scatter`` does. What AtMan suppresses is the attention paid to those positions.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from atman_onnx.core.contract import VISION_FILE, Manifest
from atman_onnx.core.errors import InputError
from atman_onnx.runtime.encode import Prompt
from atman_onnx.runtime.image_config import ImageConfig
from atman_onnx.runtime.image_layout import expand_prompt, token_boxes
from atman_onnx.runtime.image_load import ImageSource
from atman_onnx.runtime.image_tiles import Processed, preprocess
from atman_onnx.runtime.session import Graph, open_session
from atman_onnx.runtime.text import TextCodec
from atman_onnx.runtime.units import ImageBox, Unit

IMAGE_UNITS = ("region", "tile", "token")  # (the request checks the same names)
DEFAULT_GRID = 4  # regions: a 4 x 4 grid over each image
NO_IMAGES = "this model takes no images: export an image-text model (idefics3, smolvlm)"
MAX_SPLIT = 8  # row/column tags looked for: <row_r_col_c> for r, c up to this


class VisionEncoder:
    """An image-text export's vision graph and image settings."""

    def __init__(self, folder: str | Path, manifest: Manifest, provider: str | None = None, threads: int | None = None):
        self.session, _ = open_session(Path(folder) / VISION_FILE, provider, threads)
        self.config = ImageConfig.load(folder)
        self.image_token_id = int(manifest.vision["image_token_id"])

    def prepare(self, prompt: Prompt, images: Sequence[ImageSource]) -> tuple[Prompt, Processed]:
        """The prompt (text, or chat messages) with each ``<image>`` marker expanded into its image's tokens, in
        order, and the processed images. Chat messages without markers get the images at the start of the first
        user message, where Idefics3's and SmolVLM's templates put a message's image parts."""
        processed = preprocess(images, self.config)
        if isinstance(prompt, str):
            return expand_prompt(prompt, processed.layouts, self.config), processed
        marker, layouts, messages = self.config.image_token, processed.layouts, []
        if not any(marker in m["content"] for m in prompt):
            first = next((i for i, m in enumerate(prompt) if m.get("role") == "user"), 0)
            prompt = [
                {**m, "content": marker * len(layouts) + m["content"]} if i == first else m
                for i, m in enumerate(prompt)
            ]
        counts = [m["content"].count(marker) for m in prompt]
        if sum(counts) != len(layouts):
            raise InputError(
                f"the messages have {sum(counts)} {marker} markers but {len(layouts)} images were given; "
                "put one marker where each image goes"
            )
        for message, count in zip(prompt, counts):
            messages.append({**message, "content": expand_prompt(message["content"], layouts[:count], self.config)})
            layouts = layouts[count:]
        return messages, processed

    def layout_positions(self, codec: TextCodec, ids: Sequence[int]) -> set[int]:
        """Positions of the tokens that lay images out in the prompt: image tokens, the tokens around them, the
        global-image and row/column tags."""
        c = self.config
        names = [c.image_token, c.fake_image_token, c.global_image_token]
        names += [f"<row_{r}_col_{k}>" for r in range(1, MAX_SPLIT + 1) for k in range(1, MAX_SPLIT + 1)]
        layout = {codec.tokenizer.token_to_id(name) for name in names} - {None}
        return {i for i, token in enumerate(ids) if token in layout}

    def features(self, processed: Processed) -> np.ndarray:
        """The features of every image token, in prompt order: [tokens, hidden]."""
        (features,) = self.session.run(None, {"pixel_values": processed.pixel_values})
        return features.reshape(-1, features.shape[-1])

    def embed(self, graph: Graph, ids: list[int], processed: Processed) -> np.ndarray:
        """The decoder's input embeddings for ``ids``: text rows from the graph's embedding matrix, image rows from
        the features."""
        ids_array = np.asarray(ids)
        at = np.flatnonzero(ids_array == self.image_token_id)
        features = self.features(processed)
        if len(at) != len(features):
            raise InputError(f"the prompt has {len(at)} image tokens but its images give {len(features)} features")
        fed = graph.embed(ids_array)
        fed[at] = features
        return fed


def image_units(
    positions: Sequence[int], processed: Processed, config: ImageConfig, unit: str = "region", grid: int = DEFAULT_GRID
) -> list[Unit]:
    """Units over the image tokens at fed ``positions`` (in prompt order), each with its image box.

    ``region``: a ``grid x grid`` partition of each image; a cell holds every image token (of the split tiles and
    of the global image alike) whose box centre falls in it. ``tile``: one unit per tile (the global image is a
    tile that covers the whole image). ``token``: each image token alone.
    """
    if unit not in IMAGE_UNITS:
        raise InputError(f"unknown image unit {unit!r}; choose one of: {', '.join(IMAGE_UNITS)}")
    tokens = token_boxes(processed, config)
    if len(tokens) != len(positions):
        raise InputError(f"{len(positions)} image tokens in the prompt, {len(tokens)} in its images")
    groups: dict[tuple[int, ...], list[int]] = {}
    boxes: dict[tuple[int, ...], tuple[float, float, float, float]] = {}
    key: tuple[int, ...]
    for position, token in zip(positions, tokens):
        left, top, width, height = token.box
        if unit == "token":
            key, box = (token.image, token.tile * config.grid**2 + token.patch), token.box  # counted per image
        elif unit == "tile":
            key, box = (token.image, token.tile), processed.images[token.image].boxes[token.tile]
        else:
            row = min(int((top + height / 2) * grid), grid - 1)
            col = min(int((left + width / 2) * grid), grid - 1)
            key, box = (token.image, row, col), (col / grid, row / grid, 1 / grid, 1 / grid)
        groups.setdefault(key, []).append(position)
        boxes[key] = box
    return [
        Unit(_name(unit, key), 0, 0, "image", tuple(members), ImageBox(key[0], *boxes[key]))
        for key, members in sorted(groups.items(), key=lambda item: (item[0][0], item[1][0]))
    ]


def _name(unit: str, key: tuple[int, ...]) -> str:
    """A unit's label, e.g. ``image 1, region 2,3`` (1-based, as people count)."""
    image = f"image {key[0] + 1}"
    if unit == "region":
        return f"{image}, region {key[1] + 1},{key[2] + 1}"
    return f"{image}, {unit} {key[1] + 1}"
