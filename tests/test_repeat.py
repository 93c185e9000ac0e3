"""Exports that trace two decoder layers and repeat the second (atman_onnx.export.repeat): the graph computes what a
trace of every layer computes, and models whose layers differ are traced whole."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from atman_onnx.core.contract import load_manifest, past_names, row_past_names
from atman_onnx.export import exporter
from atman_onnx.export.alike import alike, decoder_layers
from atman_onnx.export.validate import random_case
from atman_onnx.models.graph import AtmanGraph
from atman_onnx.models.registry import ARCHITECTURES
from conftest import tiny_config

DEPTH = 4


def deep_model(arch: str, vocab_size: int, uniform: bool = False):
    """A tiny random model of ``arch`` with DEPTH layers: the per-layer lists of its config (layer_types,
    no_rope_layers) repeated, or with ``uniform`` their last value throughout."""
    import torch
    from transformers import AutoModelForCausalLM

    config = tiny_config(arch, vocab_size)
    for key, value in list(vars(config).items()):
        if isinstance(value, list) and len(value) == 2:
            setattr(config, key, [value[-1]] * DEPTH if uniform else value * (DEPTH // 2))
    config.num_hidden_layers = DEPTH
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config)


def export_deep(arch: str, mode: str, tokenizer, tmp_path) -> list[str]:
    """Export the deep model (uniform) to tmp_path / "chosen" as the exporter chooses; its log."""
    folder = tmp_path / "model"
    deep_model(arch, len(tokenizer), uniform=True).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    chosen: list[str] = []
    exporter.export(str(folder), tmp_path / "chosen", mode=mode, log=chosen.append)
    return chosen


def export_both(arch: str, mode: str, tokenizer, tmp_path, monkeypatch) -> tuple[list[str], list[str]]:
    """Export the deep model twice, as the exporter chooses and with every layer traced; the two logs."""
    folder = tmp_path / "model"
    chosen = export_deep(arch, mode, tokenizer, tmp_path)
    whole: list[str] = []
    with monkeypatch.context() as patched:
        patched.setattr(exporter, "alike", lambda config, layers: False)
        exporter.export(str(folder), tmp_path / "whole", mode=mode, log=whole.append)
    return chosen, whole


def outputs(folder, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


@pytest.mark.parametrize(
    ("arch", "mode"),
    [
        ("llama", "log_additive"),
        ("llama", "multiplicative"),
        ("gpt2", "multiplicative"),
        ("qwen3_moe", "log_additive"),
    ],
)
def test_a_repeated_graph_computes_what_a_whole_trace_does(arch, mode, tiny_tokenizer, tmp_path, monkeypatch):
    chosen, whole = export_both(arch, mode, tiny_tokenizer, tmp_path, monkeypatch)
    assert f"(2 of {DEPTH} layers traced, the rest repeated)" in chosen[1]
    assert f"(all {DEPTH} layers traced" in whole[1]
    manifest, theirs = load_manifest(tmp_path / "chosen"), load_manifest(tmp_path / "whole")
    assert manifest.validation["passed"] and manifest.dims["num_layers"] == DEPTH
    assert (manifest.inputs, manifest.outputs, manifest.dims) == (theirs.inputs, theirs.outputs, theirs.dims)
    kv, head = manifest.dims["kv_heads"], manifest.dims["head_dim"]
    rng = np.random.default_rng(3)
    batch, past, rows = 3, 5, 2
    feeds = random_case(len(tiny_tokenizer), batch, 6, 4, seed=5, past=past + rows)
    feeds.update({n: rng.standard_normal((1, kv, past, head)).astype(np.float32) for n in past_names(DEPTH)})
    feeds.update({n: rng.standard_normal((batch, kv, rows, head)).astype(np.float32) for n in row_past_names(DEPTH)})
    for mine, theirs in zip(outputs(tmp_path / "chosen", feeds), outputs(tmp_path / "whole", feeds), strict=True):
        np.testing.assert_allclose(mine, theirs, rtol=0, atol=1e-6)


@pytest.mark.parametrize("arch", [a for a, spec in ARCHITECTURES.items() if spec.repeat_layers])
def test_every_family_that_allows_it_is_repeated_and_validated(arch, tiny_tokenizer, tmp_path):
    """Each family whose row allows the two-layer trace, at DEPTH alike layers (sliding windows of 8, shorter
    than the validation's prompts): traced at two layers, and the grown graph within tolerance of PyTorch."""
    log = export_deep(arch, "log_additive", tiny_tokenizer, tmp_path)
    assert f"(2 of {DEPTH} layers traced, the rest repeated)" in log[1]
    assert load_manifest(tmp_path / "chosen").validation["passed"]


@pytest.mark.parametrize("arch", ["gemma2", "gemma3_text", "smollm3", "qwen2"])
def test_models_whose_layers_differ_are_traced_whole(arch, tiny_tokenizer):
    """Alternating sliding and full attention, layers without rotary positions, sliding windows from a layer on:
    each layer's code or settings differ, so none is a copy of another."""
    graph = AtmanGraph(deep_model(arch, len(tiny_tokenizer)))
    found = decoder_layers(graph.body, DEPTH)
    assert found is not None
    assert not alike(graph.config, found[1])


def test_models_whose_layers_are_alike_are_repeated(tiny_tokenizer):
    graph = AtmanGraph(deep_model("llama", len(tiny_tokenizer)))
    found = decoder_layers(graph.body, DEPTH)
    assert found is not None and found[0] == "layers"
    assert alike(graph.config, found[1])
