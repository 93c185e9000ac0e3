"""Runtime relevance (ONNX Runtime, no torch) against the PyTorch reference explainer."""

from __future__ import annotations

import numpy as np
import pytest

from atman_onnx import Explainer
from atman_onnx.models.reference import reference_relevance
from atman_onnx.runtime.factors import DEFAULT_FACTOR
from conftest import ARCHS, MODES

TINY_PROMPT = "The dog met the dog and the fox in the garden. The capital of France is"
TINY_TARGET = " Paris is the capital"
SMOL_CASES = [
    ("The capital of France is", " Paris, and the capital of Germany is Berlin."),
    ("Alice gave Bob a red apple. Bob thanked", " Alice for the apple."),
    ("Water boils at 100 degrees Celsius at sea level. At sea level, water boils at", " 100 degrees."),
]


def assert_parity(got: np.ndarray, want: np.ndarray, atol: float = 1e-4, rtol: float = 0.0) -> None:
    assert got.shape == want.shape
    assert np.all(np.abs(got - want) <= atol + rtol * np.abs(want)), np.abs(got - want).max()
    assert np.abs(want).max() > 10 * atol  # the explanation is not trivially zero
    # the ten top units agree up to ties: units whose totals differ by less than the tolerance may swap places
    slack = got.shape[1] * atol + rtol * np.abs(want).sum(axis=1).max()
    for a, b in ((got.sum(1), want.sum(1)), (want.sum(1), got.sum(1))):
        top = np.argsort(-a, kind="stable")[:10]
        tenth = np.sort(b)[::-1][min(10, len(b)) - 1]
        assert set(top) <= set(np.flatnonzero(b >= tenth - 2 * slack))


@pytest.mark.parametrize("factor", [0.0, 0.1])
@pytest.mark.parametrize("conceptual", [None, 0.2])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("arch", ARCHS)
def test_tiny_parity(arch, mode, conceptual, factor, tiny_export, tiny_model_dir):
    from transformers import AutoModelForCausalLM

    explainer = Explainer.load(tiny_export(arch, mode), provider="cpu")
    result = explainer.explain(TINY_PROMPT, TINY_TARGET, factor=factor, conceptual=conceptual, batch_size=7)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir(arch))
    want = reference_relevance(model, mode, result.prompt_ids, result.target_ids, factor=factor, conceptual=conceptual)
    assert_parity(result.relevance, want, atol=1e-5)
    # without conceptual suppression, positions after a target token's prediction cannot influence it
    n_prompt = len(result.prompt_ids)
    for t in range(len(result.target_ids) if conceptual is None else 0):
        assert np.all(result.relevance[n_prompt + t :, t] == 0)


def test_conceptual_suppression_changes_the_explanation(tiny_export):
    explainer = Explainer.load(tiny_export("llama", "log_additive"), provider="cpu")
    plain = explainer.explain(TINY_PROMPT, TINY_TARGET)
    conceptual = explainer.explain(TINY_PROMPT, TINY_TARGET, conceptual=0.2)
    assert np.abs(plain.relevance - conceptual.relevance).max() > 1e-3


def test_batch_size_does_not_change_relevance(tiny_export):
    explainer = Explainer.load(tiny_export("gpt2", "multiplicative"), provider="cpu")
    one = explainer.explain(TINY_PROMPT, TINY_TARGET, batch_size=1).relevance
    many = explainer.explain(TINY_PROMPT, TINY_TARGET, batch_size=64).relevance
    assert np.abs(one - many).max() < 1e-5


@pytest.mark.parametrize("conceptual", [None, 0.2])
@pytest.mark.parametrize("arch", ARCHS)
def test_prefix_schedule_matches_naive(arch, conceptual, tiny_export):
    explainer = Explainer.load(tiny_export(arch, "log_additive"), provider="cpu")
    prefix = explainer.explain(TINY_PROMPT, TINY_TARGET, conceptual=conceptual, batch_size=3)
    naive = explainer.explain(TINY_PROMPT, TINY_TARGET, conceptual=conceptual, batch_size=3, schedule="naive")
    assert np.abs(prefix.relevance - naive.relevance).max() < 1e-5
    assert np.abs(naive.relevance).max() > 1e-3
    # the prefix schedule computes about half the token positions of full-length passes (conceptual suppression
    # of earlier look-alikes moves batch starts earlier, so it saves less there)
    ratio = prefix.timings["positions_computed"] / naive.timings["positions_computed"]
    assert ratio < (0.7 if conceptual is None else 0.95)


@pytest.mark.slow
@pytest.mark.parametrize(("factor", "conceptual"), [(DEFAULT_FACTOR, None), (0.1, 0.7)])
@pytest.mark.parametrize("mode", MODES)
def test_smollm2_parity(mode, factor, conceptual, smollm2_export, smollm2_torch):
    explainer = Explainer.load(smollm2_export(mode), provider="cpu")
    for prompt, target in SMOL_CASES:
        result = explainer.explain(prompt, target, factor=factor, conceptual=conceptual)
        want = reference_relevance(
            smollm2_torch, mode, result.prompt_ids, result.target_ids, factor=factor, conceptual=conceptual
        )
        # At factor 0 relevance reaches ~16 nats, and float32 through 30 layers then differs by up to ~3e-5 of the
        # value (measured 4.4e-4 at 15.8, multiplicative mode), hence the relative term.
        assert_parity(result.relevance, want, rtol=5e-5)


@pytest.mark.parametrize("schedule", ["prefix", "naive"])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("arch", ARCHS)
def test_query_chunks_keep_parity(arch, mode, schedule, tiny_export, tiny_model_dir):
    """A prompt several chunks long: the unperturbed pass and every batch run in query chunks of 5 positions."""
    from transformers import AutoModelForCausalLM

    explainer = Explainer.load(tiny_export(arch, mode), provider="cpu")
    result = explainer.explain(
        TINY_PROMPT, TINY_TARGET, factor=0.1, conceptual=0.2, batch_size=4, schedule=schedule, chunk_size=5
    )
    assert result.timings["chunk_size"] == 5 and len(result.prompt_ids) > 3 * 5
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir(arch))
    want = reference_relevance(model, mode, result.prompt_ids, result.target_ids, factor=0.1, conceptual=0.2)
    assert_parity(result.relevance, want, atol=1e-5)
