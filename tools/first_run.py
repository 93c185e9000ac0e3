"""Time a newcomer's first run of the demo at one or more revisions, each from a fresh clone with an empty cache.

For each revision: clone this repository into a temporary folder, check the revision out, and run the three steps
of its ``tools/demo.sh`` one by one under an empty ``ATMAN_ONNX_CACHE`` (so the GGUF is converted again): the
set-up (``tools/setup.sh``: a new virtualenv and what the demo installs; pip's own cache is the machine's, shared by
every revision), the export of SmolLM2, and the explanation. The whole first run is their sum. The export's stage
lines (load, trace, optimise, save, validate) are kept where the revision prints them, and its trace line's note.
Revisions run one after another on the same machine: run it on a quiet one, and read the ratios.

Usage: python tools/first_run.py f741531 HEAD [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT_DIR = ".atman/smollm2-log_additive"
PROMPT = "Alice lives in Paris and Bob lives in Rome. Bob lives in the city of"
STAGE = re.compile(r"^(load|trace|optimise|save|validate) +(\d+\.\d) s  (.*)$")  # stages.py's line


def step(command: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, str]:
    """Run ``command`` to the end; its seconds and its output (stdout and stderr together)."""
    started = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    output = done.stdout + done.stderr
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed in {cwd} (exit {done.returncode}):\n{output[-2000:]}")
    return seconds, output


def first_run(revision: str) -> dict:
    """The three steps of the demo at ``revision``, from a fresh clone and an empty cache."""
    with tempfile.TemporaryDirectory(prefix="first-run-") as tmp:
        clone, cache = Path(tmp) / "clone", Path(tmp) / "cache"
        subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True)
        subprocess.run(["git", "checkout", "--quiet", revision], cwd=clone, check=True)
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=clone, capture_output=True, text=True)
        env = {**os.environ, "ATMAN_ONNX_CACHE": str(cache)}
        env.pop("VIRTUAL_ENV", None)
        setup, installed = step(["bash", "tools/setup.sh"], clone, env)
        cli = str(clone / ".venv/bin/atman-onnx")
        export, log = step([cli, "export", "bundled:smollm2", OUT_DIR, "--mode", "log_additive"], clone, env)
        explain, said = step([cli, "explain", OUT_DIR, "--prompt", PROMPT, "--max-new-tokens", "4"], clone, env)
    lines = [m for m in map(STAGE.match, log.splitlines()) if m]
    stages = {m[1]: float(m[2]) for m in lines}
    # a provider fallback, or a Python warning (a build backend's too); not pip's own "WARNING:" about the machine
    warnings = [line for line in (installed + log + said).splitlines() if "fall" in line.lower() or "Warning" in line]
    return {
        "revision": revision,
        "commit": commit.stdout.strip(),
        "setup_s": setup,
        "export_s": export,
        "explain_s": explain,
        "first_run_s": setup + export + explain,
        "export_stages_s": stages,
        "trace_note": next((m[3] for m in lines if m[1] == "trace"), None),
        "warning_lines": warnings,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("revisions", nargs="+", help="revisions of this repository, the baseline first")
    parser.add_argument("--json", help="write the results here as well")
    args = parser.parse_args()
    results = []
    for revision in args.revisions:
        results.append(first_run(revision))
        print(json.dumps(results[-1]), flush=True)
    base = results[0]
    ratios = f"export / {base['commit']} | run / {base['commit']}"
    print(f"| revision | set-up s | export s | explain s | first run s | {ratios} |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r['commit']} | {r['setup_s']:.1f} | {r['export_s']:.1f} | {r['explain_s']:.1f} | "
            f"{r['first_run_s']:.1f} | {r['export_s'] / base['export_s']:.2f} | "
            f"{r['first_run_s'] / base['first_run_s']:.2f} |"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
