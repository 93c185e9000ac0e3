"""The base install (``pip install atman-onnx``, no extras) explains from an exported folder, with no PyTorch.

Builds a fresh virtualenv in a temporary folder, installs the package from a copy of this checkout (only what the
wheel needs, so no build files land in the working tree; pip's cache is used as usual), checks that none of the
export-time packages came along, that ONNX Runtime is the CPU build (``onnxruntime``, not ``onnxruntime-gpu``: that
is the ``gpu`` extra), runs that environment's ``atman-onnx explain`` on a tiny exported model (which says nothing
about providers: the CPU build has no choice of one), reads its ``atman-onnx info --json``, and runs the runtime's
tests there (``RUNTIME_TESTS``: the conformance kit, and the search, documents, plans, requests and command line on
its committed folders; those that need a fresh export skip).
Needs network access to the package index (or a warm pip cache); about a minute (55 s measured, 2.5 minutes on a
heavily loaded machine), most of it installing onnxruntime, so it is not marked slow.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import tomllib

ROOT = Path(__file__).resolve().parents[1]
# the runtime's tests, run again in the base install: on the conformance kit's committed graphs (``runtime_model``);
# those that need an export (``tiny_export``: torch) skip there
RUNTIME_TESTS = ("conformance", "levels", "documents", "plan", "request", "prepare", "cli")
EXPORT_ONLY = {"torch", "transformers", "onnx", "onnxscript", "accelerate", "gguf"}
PROMPT = "The dog met the fox in the garden. The capital of France is"
TARGET = " Paris is the capital"


def package_source(dest: Path) -> Path:
    """Copy what building the wheel reads: pyproject.toml, the readme and the package folders it maps."""
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    dest.mkdir()
    shutil.copy(ROOT / "pyproject.toml", dest)
    shutil.copy(ROOT / meta["project"]["readme"], dest)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for folder in sorted(set(meta["tool"]["setuptools"]["package-dir"].values())):
        shutil.copytree(ROOT / folder, dest / folder, ignore=ignore)
    return dest


def run(command: list, **kwargs) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    done = subprocess.run([str(c) for c in command], capture_output=True, text=True, env=env, **kwargs)
    assert done.returncode == 0, f"{' '.join(map(str, command))} failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
    return done


def test_base_install_explains_without_torch(tmp_path):
    folder = ROOT / "conformance" / "models" / "llama-log_additive"
    source = package_source(tmp_path / "src")
    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", venv])
    python, cli = venv / "bin" / "python", venv / "bin" / "atman-onnx"
    done = run([python, "-m", "pip", "install", "--no-compile", source], timeout=900)
    warned = re.findall(r"\w+Warning: .*", done.stdout + done.stderr)  # a build backend's, not pip's "WARNING:"
    assert not warned, f"installing printed warnings: {warned}"

    installed = {p["name"].lower() for p in json.loads(run([python, "-m", "pip", "list", "--format=json"]).stdout)}
    assert {"atman-onnx", "onnxruntime"} <= installed and "onnxruntime-gpu" not in installed
    assert not installed & EXPORT_ONLY, f"the base install pulled in {sorted(installed & EXPORT_ONLY)}"

    out = tmp_path / "explanation.json"
    done = run(
        [cli, "explain", folder, "--prompt", PROMPT, "--target", TARGET, "--json", out], cwd=tmp_path, timeout=300
    )
    said = [line for line in done.stderr.splitlines() if "provider" in line or "CUDA" in line]
    assert not said, f"the CPU build has no choice of provider to report, but the command line said {said}"
    got = json.loads(out.read_text())
    assert got["target"] == TARGET and len(got["relevance_total"]) == len(got["tokens"])

    from atman_onnx import Explainer

    want = Explainer.load(folder, provider="cpu").explain(PROMPT, TARGET)
    assert got["prompt_ids"] == want.prompt_ids and got["target_ids"] == want.target_ids
    assert np.abs(np.array(got["relevance"]) - want.relevance).max() < 1e-5

    info = json.loads(run([cli, "info", "--json"], cwd=tmp_path, timeout=120).stdout)
    assert info["onnxruntime"]["distribution"] == "onnxruntime" and info["onnxruntime"]["problem"] is None
    assert {"name": "CPUExecutionProvider", "loads": True} in info["providers"]
    assert not any(p["name"] == "CUDAExecutionProvider" for p in info["providers"])
    assert not info["extras"]["export"]["installed"] and not info["extras"]["gpu"]["installed"]

    run([python, "-m", "pip", "install", "--no-compile", "pytest"], timeout=300)
    files = [ROOT / "tests" / f"test_{name}.py" for name in RUNTIME_TESTS]
    tests = run([venv / "bin" / "pytest", "-q", "-p", "no:cacheprovider", *files], cwd=tmp_path, timeout=900)
    ran = re.search(r"(\d+) passed", tests.stdout)
    assert ran and int(ran[1]) > 100 and "failed" not in tests.stdout, tests.stdout[-2000:]
