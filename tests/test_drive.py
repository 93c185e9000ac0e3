"""The perturbation schedule: batch starts, sorting, batch sizing, and the planner's factors."""

from __future__ import annotations

import numpy as np
import pytest

from atman_onnx.runtime.drive import batch_size_for, first_changed, plan_batches
from atman_onnx.runtime.plan import plan_factors

DIMS = {"num_layers": 30, "num_heads": 9, "kv_heads": 3, "head_dim": 64, "intermediate_size": 1536}


def test_first_changed_and_batches_share_prefixes():
    factors = np.ones((4, 6), np.float32)
    factors[0, 4] = factors[1, 1] = factors[2, 3] = 0.1
    factors[3, [2, 5]] = 0.5
    starts = first_changed(factors)
    assert starts.tolist() == [4, 1, 3, 2]
    batches = plan_batches(starts, 2, "prefix")
    assert [(rows.tolist(), start) for rows, start in batches] == [([1, 3], 1), ([2, 0], 3)]
    assert [start for _, start in plan_batches(starts, 2, "naive")] == [0, 0]


def test_batch_size_follows_budget_and_caps_prefix_waste():
    small = batch_size_for(DIMS, 576, 49152, 263, 8, budget_mb=16)
    large = batch_size_for(DIMS, 576, 49152, 263, 8, budget_mb=1024)
    assert 1 <= small < large
    assert large == 17  # capped at 1/16 of the sequence: a batch recomputes from its earliest row
    assert batch_size_for(DIMS, 576, 49152, 263, 8, budget_mb=0.001) == 1


def test_conceptual_factors():
    embeddings = np.array([[1.0, 0.0], [1.0, 0.0], [0.8, 0.6], [0.0, 1.0]])  # cos to row 0: 1, 0.8, 0
    factors = plan_factors([[0], [1], [2], [3]], 4, factor=0.1, conceptual=0.7, embeddings=embeddings)
    assert factors[0].tolist() == pytest.approx([0.1, 0.1, 0.9 * 0.2 + 0.1, 1.0])
    assert factors[3].tolist() == pytest.approx([1.0, 1.0, 1.0, 0.1])
    # only explained positions are suppressed conceptually
    alone = plan_factors([[0]], 4, factor=0.1, conceptual=0.7, embeddings=embeddings)
    assert alone[0].tolist() == pytest.approx([0.1, 1.0, 1.0, 1.0])
