"""The plan: batch starts, sorting, batch sizing, the planner's factors, and the plan's batches."""

from __future__ import annotations

import numpy as np
import pytest

from atman_onnx.runtime.plan import WASTE, batch_size_for, first_changed, plan_batches
from atman_onnx.runtime.factors import plan_factors

DIMS = {"num_layers": 30, "num_heads": 9, "kv_heads": 3, "head_dim": 64, "intermediate_size": 1536}


def test_first_changed_and_batches_share_prefixes():
    factors = np.ones((4, 6), np.float32)
    factors[0, 4] = factors[1, 1] = factors[2, 3] = 0.1
    factors[3, [2, 5]] = 0.5
    starts = first_changed(factors)
    assert starts.tolist() == [4, 1, 3, 2]
    batches = plan_batches(starts, 2, "prefix", 6, waste=0.5)
    assert [(rows.tolist(), start) for rows, start in batches] == [([1, 3], 1), ([2, 0], 3)]
    # a row whose start lies beyond the waste window of the batch's suffix opens a new batch
    assert [rows.tolist() for rows, _ in plan_batches(starts, 4, "prefix", 6, waste=0.2)] == [[1, 3], [2], [0]]
    assert [start for _, start in plan_batches(starts, 2, "naive", 6)] == [0, 0]


def test_prefix_batches_bound_recomputed_work():
    n = 263
    starts = np.arange(n)
    batches = plan_batches(starts, 64, "prefix", n)
    useful = sum(n - s for s in starts)
    computed = sum(len(rows) * (n - start) for rows, start in batches)
    assert sorted(np.concatenate([rows for rows, _ in batches]).tolist()) == list(range(n))
    assert useful <= computed <= (1 + WASTE / 2 + 0.005) * useful  # recomputed: about WASTE / 2 of the useful


def test_batch_size_follows_budget():
    small = batch_size_for(DIMS, 576, 49152, 263, 8, budget_mb=64)
    large = batch_size_for(DIMS, 576, 49152, 263, 8, budget_mb=1024)
    assert 1 <= small < large <= 1024 / 20  # over 20 MB of activations per 263-token row
    assert batch_size_for(DIMS, 576, 49152, 263, 8, budget_mb=0.001) == 1


def test_conceptual_factors():
    embeddings = np.array([[1.0, 0.0], [1.0, 0.0], [0.8, 0.6], [0.0, 1.0]])  # cos to row 0: 1, 0.8, 0
    factors = plan_factors([[0], [1], [2], [3]], 4, factor=0.1, conceptual=0.7, embeddings=embeddings)
    assert factors[0].tolist() == pytest.approx([0.1, 0.1, 0.9 * 0.2 + 0.1, 1.0])
    assert factors[3].tolist() == pytest.approx([1.0, 1.0, 1.0, 0.1])
    # only explained positions are suppressed conceptually
    alone = plan_factors([[0]], 4, factor=0.1, conceptual=0.7, embeddings=embeddings)
    assert alone[0].tolist() == pytest.approx([0.1, 1.0, 1.0, 1.0])
