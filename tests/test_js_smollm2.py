"""The JavaScript runtime on the real model: Node's command line (js/, onnxruntime-node) explains the 64-token
prompt that tools/js_bench.py times, with the SmolLM2 export made in this test run, as the Python runtime does: the
same token ids and units, relevance within 1e-4.

Needs the JavaScript package built (``cd js && npm ci && npm run build``; tools/test.sh does it first); skipped
with a reason where it is not."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from atman_onnx import Explainer

ROOT = Path(__file__).resolve().parents[1]
CLI = ROOT / "js" / "dist" / "src" / "cli.js"
sys.path.insert(0, str(ROOT / "tools"))
from js_bench import PROMPT, TARGET  # noqa: E402 (the prompt tools/js_bench.py times)


@pytest.mark.slow
def test_node_explains_smollm2_as_python_does(smollm2_export, tmp_path):
    node = shutil.which("node")
    if node is None or not CLI.exists() or not (ROOT / "js" / "node_modules" / "onnxruntime-node").exists():
        pytest.skip("the JavaScript package is not built (cd js && npm ci && npm run build)")
    folder = smollm2_export("log_additive")
    want = json.loads(Explainer.load(folder, provider="cpu").explain(PROMPT, TARGET).to_json())
    assert len(want["prompt_ids"]) == 64
    out = tmp_path / "node.json"
    run = subprocess.run(
        [node, str(CLI), "explain", str(folder), "--prompt", PROMPT, "--target", TARGET, "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr
    got = json.loads(out.read_text())
    for field in ("prompt", "target", "prompt_ids", "target_ids", "tokens", "target_tokens", "units", "mode"):
        assert got[field] == want[field], field
    np.testing.assert_allclose(got["relevance"], want["relevance"], rtol=0, atol=1e-4)
    assert got["timings"]["passes"] == want["timings"]["passes"] == 73  # 64 prompt and 8 target tokens, 1 unperturbed
