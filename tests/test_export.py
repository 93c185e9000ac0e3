"""Export: the ONNX graph agrees with PyTorch, the manifest records the contract, bad models are refused."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest
import torch

from atman_onnx.cli import main
from atman_onnx.export.validate import random_case
from atman_onnx.models.graph import AtmanGraph, patch
from atman_onnx.runtime.contract import CONTRACT_VERSION, INPUTS, OUTPUTS, load_manifest
from conftest import ARCHS, MODES


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("arch", ARCHS)
def test_onnx_matches_torch_for_random_scales(arch, mode, tiny_export, tiny_model_dir):
    from transformers import AutoModelForCausalLM

    folder = tiny_export(arch, mode)
    graph = AtmanGraph(patch(AutoModelForCausalLM.from_pretrained(tiny_model_dir(arch)), mode)).eval()
    session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    for seed, (batch, seq, labels) in enumerate([(4, 23, 6), (1, 64, 12), (6, 5, 2)]):
        feeds = random_case(graph.embed.num_embeddings, batch, seq, labels, seed=100 + seed)
        got = session.run(["label_logprobs", "inputs_embeds"], feeds)
        with torch.no_grad():
            want = graph(*(torch.from_numpy(v) for v in feeds.values()))
        assert np.abs(got[0] - want[0].numpy()).max() < 1e-4
        assert np.abs(got[1] - want[2].numpy()).max() < 1e-6
        assert np.abs(want[0].numpy()).min() > 0  # log-probs of random labels are far from 0: a real check


@pytest.mark.parametrize("arch", ARCHS)
def test_manifest_records_contract_and_validation(arch, tiny_export):
    folder = tiny_export(arch, "multiplicative")
    manifest = load_manifest(folder)
    assert manifest.contract_version == CONTRACT_VERSION
    assert manifest.mode == "multiplicative" and manifest.architecture == arch
    assert list(manifest.inputs) == list(INPUTS) and list(manifest.outputs) == list(OUTPUTS)
    assert manifest.validation["passed"] and manifest.validation["max_abs_diff"]["label_logprobs"] < 1e-4
    session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == list(INPUTS)
    assert [o.name for o in session.get_outputs()] == list(OUTPUTS)
    assert session.get_inputs()[0].shape == ["batch", "seq"]
    assert (folder / "tokenizer.json").is_file()


def test_unsupported_architecture_fails_in_one_line(tmp_path, capsys, tiny_tokenizer):
    from transformers import OPTConfig, OPTForCausalLM

    model_dir = tmp_path / "opt"
    OPTForCausalLM(OPTConfig(vocab_size=300, hidden_size=16, num_hidden_layers=1, ffn_dim=32,
                             num_attention_heads=2, word_embed_proj_dim=16)).save_pretrained(model_dir)
    tiny_tokenizer.save_pretrained(model_dir)
    capsys.readouterr()
    assert main(["export", str(model_dir), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "unsupported architecture 'opt'" in err and "llama" in err
    assert not (tmp_path / "out" / "atman.json").exists()


@pytest.mark.slow
@pytest.mark.parametrize("mode", MODES)
def test_smollm2_exports_and_validates(mode, smollm2_export):
    folder = smollm2_export(mode)
    manifest = load_manifest(folder)
    assert manifest.architecture == "llama" and manifest.mode == mode
    assert manifest.vocab_size == 49152 and manifest.max_positions == 8192
    assert manifest.validation["max_abs_diff"]["label_logprobs"] < 1e-4
    assert "{% for message in messages %}" in (folder / "chat_template.jinja").read_text()
    assert json.loads((folder / "atman.json").read_text())["special_tokens"]["eos_token"] == "<|im_end|>"
