"""Measure in a fresh process: a tool re-runs itself with ``--worker ...`` so that peak RSS and load time belong
to one measurement alone; the worker prints one JSON object as its last line.

Used by bench.py, bench_long.py and agreement.py (``sys.path`` holds tools/ when they run as scripts).
"""

from __future__ import annotations

import ctypes
import json
import resource
import subprocess
import sys
from pathlib import Path


def peak_rss_mb() -> float:
    """This process's peak resident set size so far, in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def reset_peak_rss() -> float:
    """Start this process's peak RSS afresh from now (Linux: VmHWM, reset through /proc/self/clear_refs), so that
    ``peak_rss_since_reset_mb`` sees what comes after, not a transient of loading; the heap that loading freed is
    handed back to the system first (glibc's ``malloc_trim``), else later allocations reuse it unseen. Returns the
    RSS now, in MiB."""
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    Path("/proc/self/clear_refs").write_text("5")
    return _status_mb("VmRSS")


def peak_rss_since_reset_mb() -> float:
    """This process's peak RSS since ``reset_peak_rss``, in MiB."""
    return _status_mb("VmHWM")


def _status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def run_worker(script: str, *args: str) -> dict:
    """Run ``python script *args`` and return the JSON its last output line holds; stop with its stderr if it fails."""
    done = subprocess.run([sys.executable, script, *map(str, args)], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{script} {' '.join(map(str, args))} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def load_explainer(folder: str, provider: str = "cpu", threads: int | None = None):
    """The runtime's explainer on ``folder``, as every measuring worker opens it."""
    from atman_onnx import Explainer

    return Explainer.load(folder, provider=provider, threads=threads)
