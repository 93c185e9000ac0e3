"""The command line's output files (``--json``, ``--html``, ``--overlay``): paths checked before an explanation runs,
then written whole or not at all."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from atman_onnx.core.errors import AtmanError, InputError


def write_all(files: list[tuple[Path, bytes]]) -> None:
    """Write every file through a temporary file beside it, then move them all into place: a failure leaves no
    half-written file, and none of the set unless it fails in the final moves. Files get the usual mode (0666 less
    the umask), not ``mkstemp``'s 0600."""
    umask = os.umask(0)
    os.umask(umask)
    staged: list[tuple[str, Path]] = []
    try:
        for path, data in files:
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
            staged.append((tmp, path))
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.chmod(tmp, 0o666 & ~umask)
        while staged:
            tmp, path = staged[0]
            os.replace(tmp, path)
            staged.pop(0)
    except OSError as exc:
        raise AtmanError(f"cannot write {path}: {exc.strerror or exc}") from None
    finally:
        for tmp, _ in staged:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


def check_writable(path: Path) -> None:
    """Refuse an output path that cannot be written, before the explanation runs."""
    if not path.parent.is_dir():
        raise InputError(f"cannot write {path}: folder {path.parent} does not exist")
    if path.is_dir():
        raise InputError(f"cannot write {path}: it is a folder")
    if not os.access(path.parent, os.W_OK):
        raise InputError(f"cannot write {path}: folder {path.parent} is not writable")


def overlay_paths(path: Path, count: int) -> list[Path]:
    """Where ``--overlay PATH`` writes each image's overlay: PATH for the first, PATH-2, PATH-3... (before the
    suffix) for the others."""
    return [path] + [path.with_name(f"{path.stem}-{n}{path.suffix}") for n in range(2, count + 1)]
