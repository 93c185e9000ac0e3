"""Python, Node and the browser side by side: seconds to explain one 64-token prompt (token level, prefix schedule)
with the same exported folder, in one run.

- Python: ``atman-onnx explain`` (onnxruntime, CPU), a fresh process per repeat;
- Node: ``atman-onnx-js explain`` (js/, onnxruntime-node, CPU), a fresh process per repeat;
- browser: the demo page (js/demo/) in headless Chromium (onnxruntime-web, WebAssembly, one thread: threads need
  a cross-origin isolated page), served over loopback from the repository's root; the folder is loaded once and
  explained ``--repeats`` times after a first (warm-up) run.
Each reports the median of the explanation's own seconds (``timings.explain_s``; the page's status line), and the
largest difference of Node's relevance from Python's. Needs the JavaScript package built (``cd js && npm ci &&
npm run build``) and, for the browser, Playwright and Chromium; the folder must lie inside the repository.

Usage: python tools/js_bench.py DIR [--repeats 3] [--no-browser] [--json OUT]
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CLI = ROOT / "js" / "dist" / "src" / "cli.js"
PROMPT = (
    "The lighthouse keeper of Varrow Point logged every ship that passed the reef. In spring he wrote that the "
    "schooner Meridian had anchored in the bay while her crew mended a mast, and that her captain, a tall woman "
    "named Ilse Brandt, walked up to the lighthouse each evening. The captain was"
)
TARGET = " Ilse Brandt, a tall woman."


def explain_in_process(command: list[str], out: Path) -> dict:
    """One explanation by a command line that writes the explanation JSON to ``out``."""
    run = subprocess.run([*command, "--prompt", PROMPT, "--target", TARGET, "--json", str(out)], capture_output=True)
    if run.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed: {run.stderr.decode()[-2000:]}")
    return json.loads(out.read_text())


class Static(SimpleHTTPRequestHandler):
    """The repository's files, with the types ES modules and WebAssembly need; no request log."""

    extensions_map: ClassVar[dict[str, str]] = {
        **SimpleHTTPRequestHandler.extensions_map,
        ".mjs": "text/javascript",
        ".wasm": "application/wasm",
    }

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextlib.contextmanager
def repository_site() -> Iterator[str]:
    """The repository's root served over loopback while the block runs; yields its URL (the demo page is at
    ``/js/demo/``)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Static, directory=str(ROOT)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()


def browser_seconds(folder: Path, batch_size: int, repeats: int) -> list[float]:
    """The demo page's seconds for ``repeats`` explanations after a warm-up one (which loads the folder)."""
    from playwright.sync_api import expect, sync_playwright

    seconds = []
    with repository_site() as site, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=shutil.which("chromium") or "/usr/bin/chromium")
        page = browser.new_page()
        page.goto(f"{site}/js/demo/")
        page.fill("#folder", "/" + folder.resolve().relative_to(ROOT).as_posix() + "/")
        page.fill("#prompt", PROMPT)
        page.fill("#target", TARGET)
        page.select_option("#granularity", "token")
        page.fill("#batch", str(batch_size))
        for _ in range(repeats + 1):
            page.click("#explain")
            expect(page.locator("#status")).to_contain_text(" passes, ", timeout=1_800_000)
            status = page.locator("#status").inner_text()
            seconds.append(float(re.search(r"passes, ([\d.]+) s", status).group(1)))
            page.fill("#target", TARGET)
        browser.close()
    return seconds[1:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dir", type=Path)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-browser", action="store_true")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    node = shutil.which("node")
    if node is None or not CLI.exists():
        raise SystemExit("the JavaScript package is not built: cd js && npm ci && npm run build")
    python_cli = [sys.executable, "-m", "atman_onnx.cli", "explain", str(args.dir)]
    node_cli = [node, str(CLI), "explain", str(args.dir)]
    results: dict[str, list[dict]] = {"python": [], "node": []}
    with tempfile.TemporaryDirectory() as tmp:
        for k in range(args.repeats):  # alternating, so that a noisy moment hits both
            results["python"].append(explain_in_process(python_cli, Path(tmp) / f"python{k}.json"))
            results["node"].append(explain_in_process(node_cli, Path(tmp) / f"node{k}.json"))
    python, node_run = results["python"][0], results["node"][0]
    diff = float(np.max(np.abs(np.array(node_run["relevance"]) - np.array(python["relevance"]))))
    rows = {name: [r["timings"]["explain_s"] for r in runs] for name, runs in results.items()}
    batches = {"python": python["timings"]["batch_size"], "node": node_run["timings"]["batch_size"]}
    if not args.no_browser:
        rows["browser"] = browser_seconds(args.dir, python["timings"]["batch_size"], args.repeats)
        batches["browser"] = batches["python"]  # the page is given Python's rows per call
    print(
        f"{len(python['prompt_ids'])}-token prompt, {len(python['target_ids'])}-token target, "
        f"{python['timings']['passes']} passes; Node's relevance within {diff:.1e} of Python's"
    )
    print("| runtime | rows per call | median s | runs s | vs Python |\n|---|---:|---:|---|---:|")
    base = statistics.median(rows["python"])
    for name, seconds in rows.items():
        median = statistics.median(seconds)
        runs = ", ".join(f"{s:.2f}" for s in seconds)
        print(f"| {name} | {batches[name]} | {median:.2f} | {runs} | {median / base:.2f} |")
    if args.json:
        summary = {"dir": str(args.dir), "max_abs_diff": diff, "seconds": rows, "rows_per_call": batches}
        args.json.write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
