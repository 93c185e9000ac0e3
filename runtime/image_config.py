"""A model's image settings: how its Idefics3 or SmolVLM processor turns images into tiles and prompt tokens, read
from the files ``save_pretrained`` wrote (the processor's, the image processor's, the tokenizer's)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from atman_onnx.core.errors import ContractError

PROCESSORS = ("Idefics3Processor", "SmolVLMProcessor")
FILES = ("processor_config.json", "preprocessor_config.json")


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
        fields: dict[str, Any] = {
            "tile_size": edge("max_image_size", defaults.tile_size),
            "longest_edge": edge("size", defaults.longest_edge),
            "image_mean": _per_channel(settings.get("image_mean", defaults.image_mean)),
            "image_std": _per_channel(settings.get("image_std", defaults.image_std)),
        }
        for name in (
            "do_resize",
            "do_image_splitting",
            "resample",
            "do_rescale",
            "rescale_factor",
            "do_normalize",
            "image_seq_len",
            "image_token",
            "fake_image_token",
            "global_image_token",
        ):
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
            data.update(
                {
                    name: tokens[name]
                    for name in ("image_token", "fake_image_token", "global_image_token")
                    if isinstance(tokens.get(name), str)
                }
            )
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
