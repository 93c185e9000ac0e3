"""Plan an explanation as plain data: the unperturbed pass every batch shares, then batches of factor rows.

Schedules:
- ``prefix`` (default): suppressing position i changes nothing before i, so a batch whose earliest changed
  position is i feeds only positions >= i, on top of the unperturbed pass's cached keys and values. Rows are
  sorted by that position so batches share their prefix, and only labels at positions >= i are scored (the rest
  keep their unperturbed log-probs exactly; docs/method.md, "The prefix schedule").
- ``naive``: one full-length pass per row, as the reference implementation does.

Nothing here holds a session: a ``Batch`` is arrays and ints, and ``Shared`` (the cache included) is sent once
per plan, so a batch can run in another process (``atman_onnx.runtime.execute``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SCHEDULES = ("prefix", "naive")
DEFAULT_MEMORY_BUDGET_MB = 1024
WASTE = 0.05  # prefix schedule: a batch may recompute at most this share of its suffix for its later rows


@dataclass(frozen=True)
class Shared:
    """One fed sequence and its unperturbed pass: what every batch of a plan reads."""

    inputs: np.ndarray  # [n_fed] token ids, or [n_fed, hidden] input embeddings (image-text models)
    label_positions: np.ndarray  # [n_labels] fed positions whose next token is scored
    labels: np.ndarray  # [n_labels] the token ids scored there
    logprobs: np.ndarray  # [n_labels] their unperturbed log-probs
    cache: tuple[np.ndarray, ...]  # per layer keys, values: [1, kv_heads, n_fed, head_dim]

    @property
    def n_fed(self) -> int:
        return len(self.inputs)


@dataclass(frozen=True)
class Batch:
    """One graph call: factor rows fed from position ``start`` on, on the cached prefix ``cache[:, :, :start]``."""

    index: int
    rows: np.ndarray  # which rows of the plan's factors
    factors: np.ndarray  # [len(rows), n_fed]
    start: int
    scored: np.ndarray  # which labels lie at positions >= start (the others cannot change)

    @property
    def positions(self) -> int:
        """Token positions this call runs through the model."""
        return len(self.rows) * (self.factors.shape[1] - self.start)


@dataclass(frozen=True)
class Plan:
    """Everything an explanation of one sequence computes: the unperturbed pass, then ``batches``.

    Rows whose batch would score no label (a row that changes no factor) keep their unperturbed log-probs without
    a call; ``settled`` counts them.
    """

    shared: Shared
    batches: tuple[Batch, ...]
    n_rows: int
    batch_size: int
    schedule: str

    @property
    def settled(self) -> int:
        return self.n_rows - sum(len(b.rows) for b in self.batches)

    @property
    def passes(self) -> int:
        """Forward passes an explanation counts: one per row, plus the unperturbed one."""
        return self.n_rows + 1

    @property
    def positions(self) -> int:
        """Token positions run through the model: the unperturbed pass's, then every batch's."""
        return self.shared.n_fed + sum(b.positions for b in self.batches)


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


def make_plan(shared: Shared, factors: np.ndarray, batch_size: int, schedule: str = "prefix") -> Plan:
    """The batches that compute log p(labels) for every row of ``factors`` [n_rows, n_fed] on ``shared``."""
    batches = []
    for rows, start in plan_batches(first_changed(factors), batch_size, schedule, shared.n_fed):
        scored = np.flatnonzero(shared.label_positions >= start)
        if len(scored):
            batches.append(Batch(len(batches), rows, factors[rows], start, scored))
    return Plan(shared, tuple(batches), len(factors), batch_size, schedule)
