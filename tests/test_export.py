"""Export: the ONNX graph agrees with PyTorch, the manifest records the contract, bad models are refused."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from atman_onnx.cli import main
from atman_onnx.core.contract import (
    CONTRACT_VERSION,
    attention_planes,
    graph_inputs,
    graph_outputs,
    load_manifest,
    past_names,
    row_past_names,
)
from atman_onnx.export.validate import compare, random_case, torch_outputs
from atman_onnx.models.graph import AtmanGraph
from atman_onnx.models.patch import patch
from conftest import ARCHS, MODES


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("arch", ARCHS)
def test_onnx_matches_torch_for_random_scales(arch, mode, tiny_export, tiny_model_dir):
    from transformers import AutoModelForCausalLM

    folder = tiny_export(arch, mode)
    graph = AtmanGraph(patch(AutoModelForCausalLM.from_pretrained(tiny_model_dir(arch)), mode)).eval()
    session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    names = past_names(graph.dims["num_layers"])
    for seed, (batch, seq, labels, past) in enumerate([(4, 23, 6, 0), (1, 64, 12, 0), (6, 5, 2, 0), (3, 7, 4, 20)]):
        feeds = random_case(graph.embed.num_embeddings, batch, seq, labels, seed=100 + seed, past=past)
        prefix = random_case(graph.embed.num_embeddings, 1, past, 1, seed=200 + seed) if past else None
        cache = torch_outputs(graph, prefix)[3:] if prefix else [e.numpy() for e in graph.empty_past()]
        feeds.update(zip(names, cache))
        feeds.update(zip(row_past_names(graph.dims["num_layers"]), [e.numpy() for e in graph.empty_past(batch)]))
        diff = compare(session, graph, feeds)
        assert diff["label_logprobs"] < 1e-4 and diff["present"] < 1e-4 and diff["inputs_embeds"] < 1e-6
        logprobs = session.run(["label_logprobs"], feeds)[0]
        assert np.abs(logprobs).min() > 0  # log-probs of random labels are far from 0: a real check


def test_cached_prefix_equals_full_pass(tiny_export):
    """Feeding positions >= i on top of the unperturbed cache gives the full pass's log-probs there."""
    session = ort.InferenceSession(str(tiny_export("llama", "multiplicative") / "model.onnx"))
    names = [i.name for i in session.get_inputs() if i.name.startswith("past.")]
    rows = [i.name for i in session.get_inputs() if i.name.startswith("row_past.")]
    full = random_case(300, 2, 16, 16, seed=7)
    full["label_positions"] = np.tile(np.arange(16), (2, 1))
    full["input_ids"][1], full["labels"][1] = full["input_ids"][0], full["labels"][0]  # one sequence, two perturbations
    full["attention_scale"][:, :6] = 1.0  # the first 6 positions are not perturbed
    empty = {n: np.zeros((1, 2, 0, 16), np.float32) for n in names}
    no_rows = {n: np.zeros((2, 2, 0, 16), np.float32) for n in rows}
    want = session.run(["label_logprobs"], {**full, **empty, **no_rows})[0]
    base = {
        **full,
        "attention_scale": np.ones((1, 16), np.float32),
        **{k: v[:1] for k, v in full.items() if k != "attention_scale"},
    }
    one_row = {n: v[:1] for n, v in no_rows.items()}
    presents = session.run([n.replace("past", "present") for n in names], {**base, **empty, **one_row})
    suffix = {
        "input_ids": full["input_ids"][:, 6:],
        "attention_mask": full["attention_mask"],
        "attention_scale": full["attention_scale"],
        "label_positions": full["label_positions"][:, 6:] - 6,
        "labels": full["labels"][:, 6:],
        **{n: p[:, :, :6] for n, p in zip(names, presents)},
        **no_rows,
    }
    got = session.run(["label_logprobs"], suffix)[0]
    assert np.abs(got - want[:, 6:]).max() < 1e-5


@pytest.mark.parametrize("arch", ARCHS)
def test_manifest_records_contract_and_validation(arch, tiny_export):
    folder = tiny_export(arch, "multiplicative")
    manifest = load_manifest(folder)
    assert manifest.contract_version == CONTRACT_VERSION
    assert manifest.mode == "multiplicative" and manifest.architecture == arch
    layers = manifest.dims["num_layers"]
    assert list(manifest.inputs) == list(graph_inputs(layers)) and list(manifest.outputs) == list(graph_outputs(layers))
    assert manifest.validation["passed"] and manifest.validation["max_abs_diff"]["label_logprobs"] < 1e-4
    session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == list(graph_inputs(layers))
    assert [o.name for o in session.get_outputs()] == list(graph_outputs(layers))
    assert session.get_inputs()[-1].shape == ["batch", manifest.dims["kv_heads"], "row_past", manifest.dims["head_dim"]]
    shapes = {i.name: i.shape for i in session.get_inputs()}
    assert shapes[f"past.{layers - 1}.value"] == [1, manifest.dims["kv_heads"], "past", manifest.dims["head_dim"]]
    assert session.get_inputs()[0].shape == ["batch", "seq"]
    assert (folder / "tokenizer.json").is_file()


@pytest.mark.parametrize("arch", ARCHS)
def test_log_additive_graphs_run_fused_attention(arch, tiny_export):
    """Log-additive graphs run ONNX's fused Attention in every layer and record its memory planes; multiplicative
    ones keep attention op by op (the row minimum has no fused form)."""
    for mode, fused in (("log_additive", True), ("multiplicative", False)):
        folder = tiny_export(arch, mode)
        dims = load_manifest(folder).dims
        ops = [node.op_type for node in onnx.load(str(folder / "model.onnx")).graph.node]
        assert ops.count("Attention") == (dims["num_layers"] if fused else 0)
        assert ("Softmax" in ops) is not fused
        assert dims["attention_planes"] == attention_planes(dims["num_heads"], fused)


def test_unsupported_architecture_fails_in_one_line(tmp_path, capsys, tiny_tokenizer):
    from transformers import OPTConfig, OPTForCausalLM

    model_dir = tmp_path / "opt"
    OPTForCausalLM(
        OPTConfig(
            vocab_size=300,
            hidden_size=16,
            num_hidden_layers=1,
            ffn_dim=32,
            num_attention_heads=2,
            word_embed_proj_dim=16,
        )
    ).save_pretrained(model_dir)
    tiny_tokenizer.save_pretrained(model_dir)
    capsys.readouterr()
    assert main(["export", str(model_dir), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "unsupported architecture 'opt'" in err and "llama" in err
    assert not (tmp_path / "out" / "atman.json").exists()


def test_export_prints_one_line_per_stage_and_no_library_noise(tmp_path, tiny_model_dir):
    """Without --verbose, `atman-onnx export` prints its stages and the result, none of what torch, torch.onnx,
    onnxscript or transformers print, warn or log; run in a fresh process, so that nothing is captured away."""
    import subprocess
    import sys

    command = [sys.executable, "-m", "atman_onnx.cli", "export", str(tiny_model_dir("llama")), str(tmp_path / "out")]
    run = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, timeout=600)
    printed = run.stdout + run.stderr
    assert run.returncode == 0, printed
    lines = printed.splitlines()
    assert len(lines) <= 12, printed
    assert [line.split()[0] for line in lines] == ["load", "trace", "optimise", "save", "validate", "write", "exported"]
    assert lines[-1].startswith(f"exported llama (log_additive) to {tmp_path / 'out'}; validated against PyTorch: ")
    assert "Warning" not in printed and "[torch.onnx]" not in printed and "[transformers]" not in printed
    assert load_manifest(tmp_path / "out").validation["passed"]


def test_missing_model_folder_fails_in_one_line(tmp_path, capsys):
    assert main(["export", str(tmp_path / "missing"), str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err.strip() == f"atman-onnx: error: model folder not found: {tmp_path / 'missing'}"
    assert main(["export", "bundled:nope", str(tmp_path / "out")]) == 2
    assert "unknown bundled model 'nope'; bundled: smollm2" in capsys.readouterr().err


def test_an_export_over_an_earlier_one_keeps_none_of_its_tokenizer_files(tiny_export, tiny_tokenizer, tmp_path):
    import copy
    import shutil

    from atman_onnx.export.exporter import _write

    out = tmp_path / "out"
    shutil.copytree(tiny_export("llama", "log_additive"), out)
    assert (out / "chat_template.jinja").is_file()
    plain = copy.deepcopy(tiny_tokenizer)  # a model without a chat template, exported into the same folder
    plain.chat_template = None
    manifest = load_manifest(out)
    written = _write(out, plain, manifest, str(out))
    assert "chat_template.jinja" not in written and not (out / "chat_template.jinja").exists()
    assert load_manifest(out) == manifest and sorted(p.name for p in out.glob(".*")) == []  # written whole


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
