"""A griffe extension for the docs: find the subpackages that pyproject.toml maps to folders of their own.

``atman_onnx.core`` lives in ``core/``, ``atman_onnx.runtime`` in ``runtime/`` and so on (``[tool.setuptools]
package-dir``). Griffe finds a package's submodules inside the package's own folder only, so ``::: atman_onnx.runtime
.execute.Stop`` would not be found. When griffe has loaded ``atman_onnx``, this loads each mapped folder and attaches
it under its dotted name. mkdocs.yml names it under mkdocstrings' ``extensions``; nothing is imported or run.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import griffe

ROOT = Path(__file__).resolve().parents[1]


def package_dirs(pyproject: Path = ROOT / "pyproject.toml") -> dict[str, Path]:
    """``{dotted name: folder}`` from ``package-dir``, for the subpackages that live outside their parent's folder."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib

    mapping = tomllib.loads(pyproject.read_text())["tool"]["setuptools"].get("package-dir", {})
    out = {}
    for name, folder in mapping.items():
        path = (pyproject.parent / folder).resolve()
        parent = name.rpartition(".")[0]
        if parent and path.parent != (pyproject.parent / mapping.get(parent, parent.replace(".", "/"))).resolve():
            out[name] = path
    return out


class PackageDirs(griffe.Extension):
    """Attach ``package-dir``'s subpackages to their parent package once griffe has loaded it."""

    def __init__(self, pyproject: str | None = None) -> None:
        super().__init__()
        self.dirs = package_dirs(Path(pyproject) if pyproject else ROOT / "pyproject.toml")

    def on_package(self, *, pkg: griffe.Module, loader: griffe.GriffeLoader, **kwargs: Any) -> None:
        for name, folder in sorted(self.dirs.items()):
            parent, _, short = name.rpartition(".")
            if parent.split(".", 1)[0] != pkg.name or not re.fullmatch(r"\w+", short) or short != folder.name:
                continue
            owner = pkg if parent == pkg.name else pkg.get_member(parent.split(".", 1)[1])
            if short in owner.members and not owner.members[short].is_alias:
                continue
            sub = loader.load(folder, try_relative_path=True)  # loaded as top-level `short`: moved under its parent
            loader.modules_collection.del_member(short)
            owner.set_member(short, sub)
