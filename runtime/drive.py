"""Drive planned perturbations through the graph in batches and collect the target tokens' log-probs.

Schedules:
- ``prefix`` (default): suppressing position i changes nothing before i, so a batch whose earliest changed
  position is i feeds only positions >= i, on top of the unperturbed pass's cached keys and values. Rows are
  sorted by that position so batches share their prefix, and only labels at positions >= i are scored (the rest
  keep their unperturbed log-probs exactly).
- ``naive``: one full-length pass per row, as the reference implementation does.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from atman_onnx.runtime.session import Graph

SCHEDULES = ("prefix", "naive")
DEFAULT_MEMORY_BUDGET_MB = 1024
WASTE = 0.05  # prefix schedule: a batch may recompute at most this share of its suffix for its later rows


@dataclass
class Work:
    """What a schedule computed: graph calls, perturbed rows, and token positions run through the model."""

    calls: int = 0
    rows: int = 0
    positions: int = 0
    batch_size: int = 0


def batch_size_for(dims: dict[str, int], hidden: int, vocab: int, n_fed: int, n_labels: int, budget_mb: float) -> int:
    """Rows per call that keep one call's activations within ``budget_mb`` (an upper-bound estimate)."""
    per_row = 4 * (
        2 * dims["num_layers"] * n_fed * dims["kv_heads"] * dims["head_dim"]  # keys and values of every layer
        + 3 * dims["num_heads"] * n_fed * n_fed  # scores, masked scores and weights of one layer
        + n_fed * (4 * hidden + 3 * dims["intermediate_size"])  # hidden states and MLP activations
        + 2 * n_labels * vocab  # logits and log-probs at the labels
    )
    return max(1, int(budget_mb * 2**20 // per_row))


def first_changed(factors: np.ndarray) -> np.ndarray:
    """For each row of factors, the earliest position whose factor is not 1."""
    changed = factors != 1.0
    return np.where(changed.any(axis=1), changed.argmax(axis=1), factors.shape[1])


def plan_batches(
    starts: np.ndarray, batch_size: int, schedule: str, n_fed: int, waste: float = WASTE
) -> list[tuple[np.ndarray, int]]:
    """(rows, first fed position) per call. Prefix schedule: rows sorted by start; a batch feeds from its first
    row's start, so a row joins only while its own start lies within ``waste`` of the batch's suffix length
    (bounding recomputed positions to about ``waste / 2`` of the useful work)."""
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}; available: {', '.join(SCHEDULES)}")
    order = np.argsort(starts, kind="stable")
    if schedule == "naive":
        return [(order[k : k + batch_size], 0) for k in range(0, len(order), batch_size)]
    batches, k = [], 0
    while k < len(order):
        first = int(starts[order[k]])
        end = k + 1
        while end < len(order) and end - k < batch_size and starts[order[end]] - first <= waste * (n_fed - first):
            end += 1
        batches.append((order[k:end], first))
        k = end
    return batches


def label_logprobs(
    graph: Graph,
    fed_ids: list[int],
    factors: np.ndarray,
    label_positions: list[int],
    labels: list[int],
    base_logprobs: np.ndarray,
    cache: list[np.ndarray],
    batch_size: int,
    schedule: str = "prefix",
    on_batch: Callable[[int], None] | None = None,
    work: Work | None = None,
) -> np.ndarray:
    """log p(labels) [n_rows, n_labels] for every row of ``factors`` [n_rows, n_fed].

    ``base_logprobs`` and ``cache`` (keys and values of every layer, [1, kv_heads, n_fed, head_dim]) come from
    the unperturbed pass.
    """
    ids = np.asarray(fed_ids, dtype=np.int64)
    positions = np.asarray(label_positions, dtype=np.int64)
    targets = np.asarray(labels, dtype=np.int64)
    out = np.tile(base_logprobs.astype(np.float32), (len(factors), 1))
    work = work if work is not None else Work()
    for rows, start in plan_batches(first_changed(factors), batch_size, schedule, len(ids)):
        scored = np.flatnonzero(positions >= start)
        if len(scored):
            n = len(rows)
            result = graph.run(
                np.broadcast_to(ids[start:], (n, len(ids) - start)),
                factors[rows],
                np.broadcast_to(positions[scored] - start, (n, len(scored))),
                np.broadcast_to(targets[scored], (n, len(scored))),
                past=[layer[:, :, :start] for layer in cache],
            )
            out[np.ix_(rows, scored)] = result["label_logprobs"]
            work.calls += 1
            work.rows += n
            work.positions += n * (len(ids) - start)
        if on_batch is not None:
            on_batch(len(rows))
    return out
