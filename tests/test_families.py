"""Every registered architecture, on a tiny random model with every quirk switched on: the patch, the graph's head
and the exported relevance, exact against PyTorch in both modes, with and without a cached prefix.

Prompts are longer than the sliding window of every family that has one. With ``ATMAN_ONNX_PARITY_OUT`` set, the
largest differences measured are appended there as JSON lines (``tools/support_table.py`` writes the README's
support table from them).
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from atman_onnx import Explainer
from atman_onnx.models.graph import AtmanGraph
from atman_onnx.models.patch import patch, probe
from atman_onnx.models.reference import reference_relevance
from atman_onnx.models.registry import ARCHITECTURES, architecture
from conftest import FAMILIES, MODES, WINDOW, tiny_config

PROMPT = "The dog met the dog and the fox in the garden. The capital of France is"
TARGET = " Paris is the capital"
SCALING = {"granite": 0.3, "gemma2": 10**-0.5, "gemma3_text": 10**-0.5}  # others: head_dim ** -0.5 = 0.25


def tiny_model(arch: str, seed: int = 0, **config):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    cfg = tiny_config(arch, 300)
    for key, value in config.items():
        setattr(cfg, key, value)
    return AutoModelForCausalLM.from_config(cfg).eval()


def record(**figures) -> None:
    path = os.environ.get("ATMAN_ONNX_PARITY_OUT")
    if path:
        with open(path, "a") as handle:
            handle.write(json.dumps(figures) + "\n")


def test_every_registered_family_is_tested():
    assert set(FAMILIES) == set(ARCHITECTURES)


@pytest.mark.parametrize("arch", FAMILIES)
def test_attention_receives_the_factors_and_only_honoured_keywords(arch):
    model = patch(tiny_model(arch), "log_additive")
    found = probe(model)
    assert found.layers == model.config.num_hidden_layers
    assert found.keywords == architecture(arch).keywords
    assert found.scalings == pytest.approx([SCALING.get(arch, 0.25)] * found.layers)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("arch", FAMILIES)
def test_patch_is_exact_at_unit_scale_and_causal(arch, mode):
    """At scale 1 the patched model is the model (eager attention, prompt longer than the window); suppressing
    one key changes nothing before it and something after it."""
    ids = torch.randint(0, 300, (1, 3 * WINDOW))
    plain = tiny_model(arch)
    plain.config._attn_implementation = "eager"
    model = patch(tiny_model(arch), mode)
    suppressed = torch.ones(1, ids.shape[1])
    suppressed[0, 5] = 0.0
    with torch.no_grad():
        want = plain(input_ids=ids).logits
        same = model(input_ids=ids, atman_scale=torch.ones(1, ids.shape[1])).logits
        moved = model(input_ids=ids, atman_scale=suppressed).logits
    assert (same - want).abs().max().item() < 1e-5
    assert (moved - same)[0, :5].abs().max().item() == 0
    assert (moved - same)[0, 5:].abs().max().item() > 1e-3


@pytest.mark.parametrize("arch", FAMILIES)
def test_graph_head_is_the_model_head(arch):
    """The graph's label log-probs are the model's own (scaled embeddings, biases, logit softcaps and scalings)."""
    model = patch(tiny_model(arch, seed=3), "log_additive")
    ids = torch.randint(0, 300, (1, 2 * WINDOW))
    positions, labels = torch.tensor([[2, 9, 15]]), torch.tensor([[5, 9, 200]])
    with torch.no_grad():
        logprobs, *_ = AtmanGraph(model)(ids, torch.ones_like(ids), torch.ones(ids.shape), positions, labels)
        full = torch.log_softmax(model(input_ids=ids).logits.float(), dim=-1)
    assert torch.allclose(logprobs[0], full[0, positions[0], labels[0]], atol=1e-5)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("arch", FAMILIES)
def test_relevance_parity(arch, mode, tiny_export, tiny_model_dir):
    from transformers import AutoModelForCausalLM

    explainer = Explainer.load(tiny_export(arch, mode), provider="cpu")
    torch_model = AutoModelForCausalLM.from_pretrained(tiny_model_dir(arch))
    worst = 0.0
    wants: dict[float | None, np.ndarray] = {}  # the reference depends on the conceptual factor only
    # the last case runs every suffix in query chunks of 6 positions, shorter than the sliding windows
    for conceptual, schedule, chunk in (
        (None, "prefix", None),
        (None, "naive", None),
        (0.2, "prefix", None),
        (0.2, "prefix", 6),
    ):
        result = explainer.explain(
            PROMPT, TARGET, conceptual=conceptual, schedule=schedule, batch_size=6, chunk_size=chunk
        )
        assert len(result.tokens) > 2 * WINDOW
        if conceptual not in wants:
            wants[conceptual] = reference_relevance(
                torch_model,
                mode,
                result.prompt_ids,
                result.target_ids,
                factor=result.suppression_factor,
                conceptual=conceptual,
            )
        want = wants[conceptual]
        diff = float(np.abs(result.relevance - want).max())
        assert diff < 1e-5, (conceptual, schedule, chunk, diff)
        assert np.abs(want).max() > 1e-2  # a real explanation
        worst = max(worst, diff)
    validation = explainer.manifest.validation["max_abs_diff"]
    record(family=arch, mode=mode, relevance=worst, **{f"graph_{k}": v for k, v in validation.items()})


def test_falcon_is_refused_in_one_line(tmp_path, capsys, tiny_tokenizer):
    from transformers import AutoConfig, AutoModelForCausalLM

    from atman_onnx.cli import main

    config = AutoConfig.for_model(
        "falcon",
        vocab_size=300,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        bos_token_id=0,
        eos_token_id=0,
    )
    AutoModelForCausalLM.from_config(config).save_pretrained(tmp_path / "falcon")
    tiny_tokenizer.save_pretrained(tmp_path / "falcon")
    capsys.readouterr()
    assert main(["export", str(tmp_path / "falcon"), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "unsupported architecture 'falcon': its attention classes run their own SDPA" in err
    assert not (tmp_path / "out" / "atman.json").exists()


def test_a_layer_the_factors_do_not_reach_is_refused(monkeypatch):
    """Without its relay hooks StableLM's attention never sees the factors: the probe refuses it."""
    from dataclasses import replace

    from atman_onnx.models import registry
    from atman_onnx.models.patch import check
    from atman_onnx.models.registry import UnsupportedArchitectureError

    monkeypatch.setitem(registry.ARCHITECTURES, "stablelm", replace(architecture("stablelm"), relay_scale=False))
    with pytest.raises(UnsupportedArchitectureError, match="'stablelm': AtMan factors reached 0 of 2 attention layers"):
        check(patch(tiny_model("stablelm"), "log_additive"))


def test_an_attention_keyword_that_is_not_honoured_is_refused(monkeypatch):
    """A new row for a model whose attention passes something unknown (GPT-OSS's sinks, ``s_aux``) is refused at
    export instead of exporting attention without it."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from atman_onnx.models import registry
    from atman_onnx.models.attention import UnsupportedAttentionError
    from atman_onnx.models.patch import check

    config = AutoConfig.for_model(
        "gpt_oss",
        vocab_size=300,
        hidden_size=64,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        num_local_experts=4,
        num_experts_per_tok=2,
        sliding_window=8,
        bos_token_id=0,
        eos_token_id=0,
        pad_token_id=0,
    )
    monkeypatch.setitem(registry.ARCHITECTURES, "gpt_oss", registry.Architecture("gpt_oss", registry.SLIDING))
    with pytest.raises(UnsupportedAttentionError, match="GptOssAttention passes attention keyword 's_aux'"):
        check(patch(AutoModelForCausalLM.from_config(config), "log_additive"))


def test_readme_support_table_is_generated():
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    sys.path.insert(0, str(root / "tools"))
    from support_table import END, FIGURES, START, table

    figures = json.loads(FIGURES.read_text())
    assert set(figures) == set(ARCHITECTURES)
    readme = (root / "README.md").read_text()
    assert readme.split(START, 1)[1].split(END, 1)[0].strip() == table(figures).strip()
