"""The attention patch: exact AtMan arithmetic, identity at scale 1, and refusal of unknown architectures."""

from __future__ import annotations

import math

import pytest
import torch

from atman_onnx.models.attention import manipulated_scores
from atman_onnx.models.graph import AtmanGraph
from atman_onnx.models.patch import patch
from atman_onnx.models.registry import UnsupportedArchitectureError, architecture
from conftest import ARCHS, MODES, tiny_config


def test_multiplicative_shifts_by_visible_minimum():
    raw = torch.tensor([[[[1.0, 3.0, 2.0], [4.0, -5.0, 9.0]]]])  # [b=1, h=1, q=2, k=3]
    visible = torch.tensor([[[[True, True, True], [True, False, True]]]])  # key 1 hidden from row 1
    scale = torch.tensor([[1.0, 0.5, 0.25]])
    got = manipulated_scores(raw, visible, scale, scaling=0.5, mode="multiplicative")
    # row 0: min 1 -> [0, 2, 1] * f * 0.5; row 1: min over visible keys is 4 (not the hidden -5)
    want = torch.tensor([[[[0.0, 0.5, 0.125], [0.0, 0.0, 0.625]]]])
    assert torch.allclose(got[..., [0, 2]], want[..., [0, 2]])
    assert got[0, 0, 0, 1].item() == pytest.approx(0.5)


def test_log_additive_adds_log_factor():
    raw = torch.tensor([[[[2.0, 4.0]]]])
    got = manipulated_scores(raw, None, torch.tensor([[1.0, 0.1]]), scaling=0.5, mode="log_additive")
    assert got[0, 0, 0, 0].item() == pytest.approx(1.0)
    assert got[0, 0, 0, 1].item() == pytest.approx(2.0 + math.log(0.1), abs=1e-6)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("arch", ARCHS)
def test_unit_scales_leave_logits_unchanged(arch, mode):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(tiny_config(arch, 300)).eval()
    ids = torch.randint(0, 300, (2, 11))
    with torch.no_grad():
        plain = model(input_ids=ids).logits
        patched = patch(model, mode)(input_ids=ids, atman_scale=torch.ones(2, 11)).logits
        suppressed = model(input_ids=ids, atman_scale=torch.full((2, 11), 0.1)).logits
    assert (patched - plain).abs().max().item() < 1e-5
    # a uniform factor changes nothing in log_additive (softmax shift) but must change multiplicative scores
    change = (suppressed - plain).abs().max().item()
    assert change > 1e-3 if mode == "multiplicative" else change < 1e-5


@pytest.mark.parametrize("arch", ARCHS)
def test_fused_log_additive_attention_equals_the_explicit_one(arch):
    """The exported graphs' attention (one scaled_dot_product_attention with an additive bias) computes what the
    reference's explicit arithmetic does, also with a factor of 0 (grouped heads in llama, not in gpt2)."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(1)
    model = AutoModelForCausalLM.from_config(tiny_config(arch, 300)).eval()
    ids = torch.randint(0, 300, (3, 13))
    scale = torch.rand(3, 13) * 0.9 + 0.1
    scale[1, 4] = 0.0
    with torch.no_grad():
        explicit = patch(model, "log_additive")(input_ids=ids, atman_scale=scale).logits
        fused = patch(model, "log_additive", fused=True)(input_ids=ids, atman_scale=scale).logits
    assert (fused - explicit).abs().max().item() < 1e-5
    assert (explicit[1] - patch(model, "log_additive")(input_ids=ids[1:2]).logits[0]).abs().max().item() > 1e-3


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("arch", ARCHS)
def test_scale_reaches_every_layer(arch, mode):
    """Suppressing one key changes the output of every layer's attention, not just the first."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(1)
    model = patch(AutoModelForCausalLM.from_config(tiny_config(arch, 300)), mode)
    ids = torch.randint(0, 300, (1, 9))
    outputs = {}
    for name, scale in (("plain", torch.ones(1, 9)), ("suppressed", torch.tensor([[1.0] * 4 + [0.1] + [1.0] * 4]))):
        with torch.no_grad():
            states = model(input_ids=ids, atman_scale=scale, output_hidden_states=True).hidden_states
        outputs[name] = states
    for layer in range(1, len(outputs["plain"])):
        delta = (outputs["plain"][layer] - outputs["suppressed"][layer])[0]
        assert delta[:4].abs().max().item() < 1e-6  # causal: earlier positions untouched
        assert delta[4:].abs().max().item() > 1e-4


def test_graph_module_logprobs_match_logits():
    from transformers import AutoModelForCausalLM

    torch.manual_seed(2)
    model = patch(AutoModelForCausalLM.from_config(tiny_config("llama", 300)), "log_additive")
    ids = torch.randint(0, 300, (1, 7))
    positions, labels = torch.tensor([[2, 6]]), torch.tensor([[5, 9]])
    with torch.no_grad():
        logprobs, _, embeds, *present = AtmanGraph(model)(
            ids, torch.ones_like(ids), torch.ones(1, 7), positions, labels
        )
        full = torch.log_softmax(model(input_ids=ids).logits, dim=-1)
    assert torch.allclose(logprobs[0], full[0, [2, 6], [5, 9]], atol=1e-5)
    assert embeds.shape == (1, 7, 64)
    assert len(present) == 4 and present[0].shape == (1, 2, 7, 16)  # 2 layers x (keys, values), GQA heads


def test_unsupported_architecture_is_named():
    assert architecture("qwen2").model_type == "qwen2" and "sliding_window" in architecture("qwen2").keywords
    with pytest.raises(
        UnsupportedArchitectureError, match="'bert'; supported: gemma, gemma2, gemma3_text, gpt2, gpt_neox"
    ):
        architecture("bert")
