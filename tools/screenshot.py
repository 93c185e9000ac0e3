"""Render an explanation JSON file to HTML and take a PNG screenshot of it with headless Chromium.

usage: python tools/screenshot.py explanation.json docs/report.png [--html report.html]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

from atman_onnx import Explanation


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("explanation", type=Path, help="JSON written by `atman-onnx explain --json`")
    parser.add_argument("png", type=Path, help="where to write the screenshot")
    parser.add_argument("--html", type=Path, help="also keep the HTML page here")
    parser.add_argument("--size", default="1000,700", help="window size WIDTH,HEIGHT (default 1000,700)")
    parser.add_argument("--chromium", default="/usr/bin/chromium", help="Chromium binary")
    args = parser.parse_args()

    page = Explanation.from_json(args.explanation.read_text(encoding="utf-8")).to_html()
    with tempfile.TemporaryDirectory() as tmp:
        html = args.html or Path(tmp) / "report.html"
        html.write_text(page, encoding="utf-8")
        args.png.parent.mkdir(parents=True, exist_ok=True)
        command = [
            args.chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            f"--user-data-dir={Path(tmp) / 'profile'}",
            f"--window-size={args.size}",
            f"--screenshot={args.png.resolve()}",
            html.resolve().as_uri(),
        ]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=120)
        except FileNotFoundError:
            print(f"screenshot: no Chromium at {args.chromium} (Debian: apt-get install chromium)", file=sys.stderr)
            return 1
    if done.returncode != 0 or not args.png.exists():
        print(f"screenshot: Chromium failed:\n{done.stderr[-2000:]}", file=sys.stderr)
        return 1
    print(f"wrote {args.png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
