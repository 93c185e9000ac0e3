"""On a CUDA device: the runtime's relevance against the PyTorch reference, fp16 on the GPU, and the benchmark.

Every test here is marked ``gpu`` and skipped, with the reason shown, where onnxruntime has no CUDA provider or the
provider cannot load its CUDA libraries or find a device.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from test_runtime_parity import TINY_PROMPT, TINY_TARGET, assert_parity

from atman_onnx import Explainer
from atman_onnx.core.errors import ProviderError
from conftest import ARCHS, MODES

pytestmark = pytest.mark.gpu
BENCH = Path(__file__).resolve().parents[1] / "tools" / "bench.py"


@pytest.fixture(scope="module")
def on_cuda(tiny_export):
    """Factory: folder -> an Explainer on the CUDA provider; skips the test where none can load."""
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("this onnxruntime has no CUDA provider")
    try:
        Explainer.load(tiny_export("llama", "log_additive"), provider="cuda")
    except ProviderError as exc:
        pytest.skip(f"no usable CUDA device: {exc}")
    return lambda folder: Explainer.load(folder, provider="cuda")


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("arch", ARCHS)
def test_cuda_parity_with_reference(arch, mode, on_cuda, tiny_export, tiny_model_dir):
    from transformers import AutoModelForCausalLM

    from atman_onnx.models.reference import reference_relevance

    explainer = on_cuda(tiny_export(arch, mode))
    assert explainer.graph.device == "cuda"
    result = explainer.explain(TINY_PROMPT, TINY_TARGET, conceptual=0.2, batch_size=5)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir(arch))
    want = reference_relevance(
        model, mode, result.prompt_ids, result.target_ids, factor=result.suppression_factor, conceptual=0.2
    )
    assert_parity(result.relevance, want, atol=1e-4)


def test_fp16_on_cuda(on_cuda, tiny_light_export):
    folder = tiny_light_export("llama", "fp16")
    gpu = on_cuda(folder).explain(TINY_PROMPT, TINY_TARGET).relevance
    cpu = Explainer.load(folder, provider="cpu").explain(TINY_PROMPT, TINY_TARGET).relevance
    assert np.abs(gpu - cpu).max() < 1e-2
    assert np.abs(cpu).max() > 0.1


def test_benchmark_on_cuda(on_cuda, tiny_export, tmp_path):
    out = tmp_path / "bench.json"
    command = [
        sys.executable,
        str(BENCH),
        str(tiny_export("llama", "log_additive")),
        "--provider",
        "cuda",
        "--lengths",
        "16",
        "48",
        "--target-tokens",
        "4",
        "--repeats",
        "2",
        "--json",
        str(out),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    print(done.stdout)  # the table, for the log
    report = json.loads(out.read_text())
    assert report["provider"] == "cuda"
    rows = {(r["length"], r["schedule"]): r for r in report["rows"]}
    for length in (16, 48):
        assert all(rows[length, s]["median_s"] > 0 for s in ("plain", "naive", "prefix"))
        assert rows[length, "prefix"]["positions"] < 0.7 * rows[length, "naive"]["positions"]
