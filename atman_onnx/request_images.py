"""A request's images: what the ``images`` field takes from Python (paths, bytes, PIL images) and from JSON (base64
strings), as the bytes of the image files."""

from __future__ import annotations

import base64
import binascii
import os
from typing import Any

from atman_onnx.core.errors import InputError


def image_bytes(images: Any) -> tuple[bytes, ...]:
    """Images as the bytes of their files: paths are read, PIL images saved as PNG."""
    if not isinstance(images, (list, tuple)):
        raise InputError(f"field 'images' must be a list of images, got {type(images).__name__}")
    out = []
    for i, image in enumerate(images):
        if isinstance(image, (bytes, bytearray)):
            out.append(bytes(image))
        elif isinstance(image, (str, os.PathLike)):
            try:
                with open(image, "rb") as file:
                    out.append(file.read())
            except OSError as exc:
                raise InputError(f"image {i + 1}: cannot read {os.fspath(image)!r}: {exc.strerror}") from None
        elif hasattr(image, "save"):  # a PIL image
            import io

            buffer = io.BytesIO()
            image.save(buffer, format="PNG")
            out.append(buffer.getvalue())
        else:
            raise InputError(f"image {i + 1} must be a file path, bytes or a PIL image, got {type(image).__name__}")
    return tuple(out)


def decode_images(images: Any) -> list[bytes]:
    """The JSON form: a list of base64 strings, each decoded (a bad one is named)."""
    if not isinstance(images, list) or not all(isinstance(x, str) for x in images):
        raise InputError("field 'images' must be a list of base64 strings")
    decoded = []
    for i, text in enumerate(images):
        try:
            decoded.append(base64.b64decode(text, validate=True))
        except (binascii.Error, ValueError):
            raise InputError(f"field 'images': image {i + 1} is not valid base64") from None
    return decoded
