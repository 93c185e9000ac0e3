"""Write generated reference files, or with ``--check`` report those out of date (the tests run the check)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def write_or_check(files: dict[Path, str], command: str, description: str) -> int:
    """Write each file's text, or (``--check`` on the command line) exit 1 naming those whose text differs."""
    args = argparse.ArgumentParser(description=description)
    args.add_argument("--check", action="store_true", help="exit 1 if a committed file is out of date")
    check = args.parse_args().check
    stale = [path for path, text in files.items() if not path.exists() or path.read_text(encoding="utf-8") != text]
    if check:
        for path in stale:
            print(f"{path} is out of date: run {command}", file=sys.stderr)
        return 1 if stale else 0
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        print(f"wrote {path.relative_to(ROOT)}")
    return 0
