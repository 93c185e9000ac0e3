"""``Explainer.prepare``: a request encoded once, its counts equal to what the run computes, and ``run`` of the
``Prepared`` equal to ``run`` of the request."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from atman_onnx import Explainer, ExplainRequest, Prepared
from atman_onnx.core.errors import InputError
from atman_onnx.runtime.sizing import PLAN_OVERHEAD_MB, factors_mb, largest_call_mb, shared_mb

PROMPT, TARGET = "The dog met the fox in the garden. Then the dog ran to the", " garden and sat"


@pytest.fixture(scope="module")
def explainer(runtime_model):
    return Explainer.load(runtime_model("log_additive"), provider="cpu")


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"granularity": "word", "batch_size": 2},
        {"schedule": "naive", "batch_size": 3},
        {"contrast": " house", "batch_size": 4},
        {"factor": 1.0},  # rows that change nothing: settled without a call
    ],
)
def test_counts_are_those_of_the_run(explainer, options):
    request = ExplainRequest(prompt=PROMPT, target=TARGET, **options)
    prepared = explainer.prepare(request)
    explanation = explainer.run(prepared)
    assert prepared.passes == explanation.timings["passes"]
    assert prepared.positions == explanation.timings["positions_computed"]
    longest = max(len(explanation.target_ids), len(explanation.contrast_ids or []))
    assert prepared.n_tokens == len(explanation.prompt_ids) + longest
    assert list(prepared.units) == explanation.units and list(prepared.tokens) == explanation.tokens
    np.testing.assert_array_equal(explainer.run(request).relevance, explanation.relevance)


def test_a_generated_target_is_sized_by_max_new_tokens(explainer):
    prepared = explainer.prepare(ExplainRequest(prompt=PROMPT, max_new_tokens=5))
    assert prepared.target_ids is None and prepared.units is None and prepared.passes is None
    assert prepared.memory_mb is None
    assert prepared.n_tokens == len(prepared.prompt.ids) + 5 and prepared.completions == ()
    explanation = explainer.run(prepared)
    assert 1 <= len(explanation.target_ids) <= 5 and explanation.units


def test_conceptual_rows_are_not_counted_ahead(explainer):
    prepared = explainer.prepare(ExplainRequest(prompt=PROMPT, target=TARGET, conceptual=0.2))
    explanation = explainer.run(prepared)
    assert prepared.positions is None and prepared.memory_mb is None
    assert prepared.passes == explanation.timings["passes"]


@pytest.mark.parametrize(
    "options",
    [{"granularity": "word", "batch_size": 2}, {"batch_size": 3, "chunk_size": 8}, {"contrast": " house"}],
)
def test_memory_is_estimated_from_the_plans_calls(explainer, options):
    request = ExplainRequest(prompt=PROMPT, target=TARGET, **options)
    prepared = explainer.prepare(request)
    m, units = explainer.manifest, list(prepared.units or ())
    held, largest = PLAN_OVERHEAD_MB, 0.0
    for ids in map(list, prepared.completions):  # every completion's base is held while any plan runs
        fed = list(prepared.prompt.ids) + ids[:-1]
        plan = explainer.plan(fed, ids, units, request)
        calls = [(len(b.rows), b.start) for b in plan.batches]
        held += shared_mb(m.dims, len(fed)) + factors_mb(len(units), len(fed))
        call = largest_call_mb(m.dims, m.hidden_size, m.vocab_size, len(fed), len(ids), plan.shared.chunk, calls)
        largest = max(largest, call)
    assert prepared.memory_mb == pytest.approx(held + largest)


def test_too_long_is_sized_then_refused_by_run(explainer):
    long = ExplainRequest(prompt=" ".join([PROMPT] * 20), target=TARGET)
    prepared = explainer.prepare(long)  # sized: the service refuses it with its own limit
    assert prepared.n_tokens > explainer.manifest.max_positions and prepared.units is None
    with pytest.raises(InputError, match="is longer than the model's 128 positions"):
        explainer.run(prepared)


def test_prepared_is_frozen_and_exported(explainer):
    prepared = explainer.prepare(ExplainRequest(prompt=PROMPT, target=TARGET))
    assert isinstance(prepared, Prepared)
    with pytest.raises(dataclasses.FrozenInstanceError):
        prepared.n_tokens = 1  # type: ignore[misc]
