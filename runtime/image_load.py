"""Reading an image without torch: a path, encoded bytes or a PIL image to an upright RGB PIL image, as
transformers' ``load_image`` and the processors' ``convert_to_rgb`` do. Pillow is imported only here, when images
are first used, so that the optional ``images`` extra is needed only by those who use images."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import TYPE_CHECKING, Union

from atman_onnx.core.errors import InputError

if TYPE_CHECKING:
    from PIL.Image import Image

ImageSource = Union[str, os.PathLike, bytes, "Image"]


def _pil():
    """PIL.Image, imported when images are first used: Pillow is the optional ``images`` extra."""
    try:
        from PIL import Image
    except ImportError:
        raise InputError("images need Pillow: pip install 'atman-onnx[images]'") from None
    return Image


def load_image(source: ImageSource) -> Image:
    """An RGB PIL image from a file path, encoded bytes, or a PIL image.

    Files and bytes are decoded and turned upright by their EXIF orientation, as transformers' ``load_image``
    does. Transparency is composited onto white, as the processors' ``convert_to_rgb`` does for PIL images
    (transformers' ``load_image`` of a path drops the alpha channel instead).
    """
    pil = _pil()
    stream: str | os.PathLike | io.BytesIO
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
