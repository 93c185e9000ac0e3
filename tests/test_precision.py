"""Lighter graphs (fp16, int8) on the tiny models: they load in the runtime with the unchanged contract, the manifest
records their precision and validation, and their relevance stays close to the float32 graph's.

Tolerances come from measurements on these tiny random models (relevance up to ~0.5): int8 differed from float32 by
at most 0.0095 (Spearman correlation of the totals >= 0.999), fp16 by at most 0.004 (>= 0.997).
"""

from __future__ import annotations

import numpy as np
import pytest

from atman_onnx import Explainer
from atman_onnx.core.contract import GRAPH_FILE

PROMPT = "The dog met the dog and the fox in the garden. The capital of France is"
TARGET = " Paris is the capital"
# precision -> (max abs relevance difference from float32, minimum Spearman correlation of the totals)
CLOSE = {"int8": (0.03, 0.98), "fp16": (0.01, 0.98)}


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    ranks = [np.argsort(np.argsort(x, kind="stable"), kind="stable") for x in (a, b)]
    return float(np.corrcoef(*ranks)[0, 1])


def explain(folder, **kwargs):
    return Explainer.load(folder, provider="cpu").explain(PROMPT, TARGET, **kwargs)


@pytest.mark.parametrize("precision", ["int8", "fp16"])
def test_lighter_graph_keeps_the_contract_and_records_precision(precision, tiny_light_export):
    folder = tiny_light_export("llama", precision)
    explainer = Explainer.load(folder, provider="cpu")
    manifest = explainer.manifest
    assert manifest.precision == precision
    figures = manifest.validation
    assert figures["precision"] == precision and figures["reference"] == "PyTorch float32"
    assert 0 < figures["max_abs_diff"]["label_logprobs"] <= figures["tolerance"]["label_logprobs"] < 1.0
    assert figures["float32_graph"]["passed"] and figures["float32_graph"]["max_abs_diff"]["label_logprobs"] <= 1e-4
    # every graph input and output is still float32 where the contract says so
    session = explainer.graph.session
    declared = {**manifest.inputs, **manifest.outputs}
    for arg in [*session.get_inputs(), *session.get_outputs()]:
        assert arg.type == {"float32": "tensor(float)", "int64": "tensor(int64)"}[declared[arg.name]["type"]]
    assert not list(folder.glob(".fp32-*")), "the temporary float32 graph was left behind"


@pytest.mark.parametrize(("arch", "precision"), [("llama", "int8"), ("llama", "fp16"), ("gpt2", "int8")])
def test_lighter_relevance_close_to_fp32(arch, precision, tiny_export, tiny_light_export):
    want = explain(tiny_export(arch, "log_additive"))
    got = explain(tiny_light_export(arch, precision))
    assert got.target_ids == want.target_ids and got.relevance.shape == want.relevance.shape
    atol, min_rank = CLOSE[precision]
    assert np.abs(want.relevance).max() > 0.2  # a real explanation, not noise around zero
    assert np.abs(got.relevance - want.relevance).max() <= atol
    assert spearman(got.total, want.total) >= min_rank
    top = lambda e: set(np.argsort(-e.total, kind="stable")[:5])
    assert len(top(got) & top(want)) >= 4


def test_int8_quantizes_the_linear_layers_and_is_smaller(tiny_export, tiny_light_export):
    for arch, layers in (("llama", 7 * 2), ("gpt2", 4 * 2)):  # q k v o gate up down / c_attn c_proj c_fc c_proj
        folder = tiny_light_export(arch, "int8")
        conversion = Explainer.load(folder, provider="cpu").manifest.validation["conversion"]
        assert conversion["quantized_matmuls"] == layers and len(conversion["kept_float"]) == 1  # the logits
        if arch == "gpt2":
            assert conversion["gemm_rewritten"] == layers  # GPT-2's Conv1D layers export as Gemm
        fp32_size = (tiny_export(arch, "log_additive") / GRAPH_FILE).stat().st_size
        # the tiny models are a third embeddings and head (kept float32), so the saving is smaller than SmolLM2's
        assert (folder / GRAPH_FILE).stat().st_size < 0.65 * fp32_size
    fp16 = tiny_light_export("llama", "fp16") / GRAPH_FILE
    assert fp16.stat().st_size < 0.8 * (tiny_export("llama", "log_additive") / GRAPH_FILE).stat().st_size


def test_int8_relevance_does_not_depend_on_the_batch(tiny_light_export):
    folder = tiny_light_export("llama", "int8")
    one = explain(folder, batch_size=1).relevance
    many = explain(folder, batch_size=64).relevance
    assert np.abs(one - many).max() < 1e-5


def test_int8_dynamic_shares_its_activation_scale_across_the_batch(tiny_light_export):
    """Why ``--quantize int8`` is weight-only: quantize_dynamic's per-call activation scale couples the rows of a
    batch, so a perturbation's log-probs change with the perturbations batched beside it."""
    folder = tiny_light_export("llama", "int8-dynamic")
    assert Explainer.load(folder, provider="cpu").manifest.precision == "int8-dynamic"
    one = explain(folder, batch_size=1).relevance
    many = explain(folder, batch_size=64).relevance
    assert np.abs(one - many).max() > 1e-3


def test_precision_options_are_checked_before_loading(tmp_path):
    from atman_onnx.cli import main
    from atman_onnx.export.exporter import export
    from atman_onnx.export.precision import PrecisionError

    with pytest.raises(PrecisionError, match="cannot be combined"):
        export("no-such-model", tmp_path, dtype="fp16", quantize="int8")
    with pytest.raises(PrecisionError, match="unknown dtype"):
        export("no-such-model", tmp_path, dtype="bf16")
    assert main(["export", "no-such-model", str(tmp_path), "--dtype", "fp16", "--quantize", "int8"]) == 2
    assert not list(tmp_path.iterdir())


def test_old_manifest_without_precision_loads_as_fp32(tiny_export, tmp_path):
    import json
    import shutil

    from atman_onnx.core.contract import MANIFEST_FILE, load_manifest

    folder = tmp_path / "old"
    shutil.copytree(tiny_export("llama", "log_additive"), folder)
    data = json.loads((folder / MANIFEST_FILE).read_text())
    assert data.pop("precision") == "fp32"
    (folder / MANIFEST_FILE).write_text(json.dumps(data))
    assert load_manifest(folder).precision == "fp32"
