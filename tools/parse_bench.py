"""The service's request parsing: microseconds for ``ExplainRequest.from_dict`` on the bodies the service takes, in
this tree and in an earlier revision, each in a fresh process, in one run.

The earlier revision is taken with ``git archive`` and installed (``pip install --no-deps --target``) into a
temporary folder, so both are measured the same way on the same machine. Medians of ``--repeats`` rounds of
``--calls`` parses each.

Usage: python tools/parse_bench.py [--baseline f741531] [--calls 2000] [--repeats 15] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BODIES = {
    "minimal": {"prompt": "The capital of France is", "target": " Paris"},
    "options": {
        "prompt": "Alice gave Bob a red apple. Bob thanked",
        "target": " Alice",
        "factor": 0.1,
        "conceptual": 0.7,
        "granularity": "word",
        "batch_size": 8,
        "schedule": "prefix",
        "contrast": " Carol",
    },
    "chat": {
        "prompt": [
            {"role": "system", "content": "Answer briefly."},
            {"role": "user", "content": "Where is the Eiffel tower?"},
        ],
        "target": "In Paris.",
        "granularity": "sentence",
    },
    "spans": {"prompt": "one two three four five six", "target": " seven", "granularity": "spans",
              "spans": [[0, 3], [4, 7], [8, 13], [14, 18]]},
}  # fmt: skip


def worker(calls: int, repeats: int) -> dict:
    """Median microseconds per parse of each body, in this process, and the module measured."""
    import atman_onnx.request
    from atman_onnx.request import ExplainRequest

    medians: dict = {"module": atman_onnx.request.__file__}
    for name, body in BODIES.items():
        rounds = []
        for _ in range(repeats):
            started = time.perf_counter()
            for _ in range(calls):
                ExplainRequest.from_dict(body)
            rounds.append((time.perf_counter() - started) / calls * 1e6)
        medians[name] = statistics.median(rounds)
    return medians


def measure(path: str | None, calls: int, repeats: int) -> dict:
    """Run ``worker`` in a fresh process, with ``path`` (an installed earlier revision) first on the path; the
    package file it imported is returned with the figures, to show which tree was measured."""
    env = dict(os.environ, PYTHONPATH=path) if path else dict(os.environ)
    command = [sys.executable, __file__, "--worker", "--calls", str(calls), "--repeats", str(repeats)]
    out = subprocess.run(command, env=env, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def install(revision: str, into: Path) -> None:
    """``revision`` of this repository, installed without dependencies into ``into``."""
    source = into / "src"
    source.mkdir()
    archive = subprocess.run(["git", "archive", revision], cwd=ROOT, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(source)], input=archive, check=True)
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(into / "site"), str(source)],
        check=True,
        capture_output=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", default="f741531", help="the earlier revision (default: before one schema)")
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.calls, args.repeats)))
        return
    with tempfile.TemporaryDirectory() as folder:
        install(args.baseline, Path(folder))
        before = measure(str(Path(folder) / "site"), args.calls, args.repeats)
    after = measure(None, args.calls, args.repeats)
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout
    print(f"{'body':<8} {args.baseline + ' µs':>14} {head.strip() + ' (tree) µs':>18} {'ratio':>6}")
    for name in BODIES:
        print(f"{name:<8} {before[name]:>14.1f} {after[name]:>18.1f} {after[name] / before[name]:>6.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"baseline": args.baseline, "before": before, "after": after}, indent=2))


if __name__ == "__main__":
    main()
