"""Plan an explanation as plain data: the unperturbed pass every batch shares, then batches of factor rows.

Schedules:
- ``prefix`` (default): suppressing position i changes nothing before i, so a batch whose earliest changed
  position is i feeds only positions >= i, on top of the unperturbed pass's cached keys and values. Rows are
  sorted by that position so batches share their prefix, and only labels at positions >= i are scored (the rest
  keep their unperturbed log-probs exactly; docs/method.md, "The prefix schedule").
- ``naive``: one full-length pass per row, as the reference implementation does.

Calls are sized for the graph's device (``atman_onnx.runtime.sizing``): on CPU a batch admits a row within
``WASTE`` of its suffix; on a GPU, where a call costs about ``GPU_CALL_COST`` positions whatever it computes, the
batches are those that minimise calls x call cost + positions (``cheapest_batches``; docs/gpu.md).

Nothing here holds a session: a ``Batch`` is arrays and ints, and ``Shared`` (the cache included) is sent once
per plan, so a batch can run in another process (``atman_onnx.runtime.execute``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SCHEDULES = ("prefix", "naive")
WASTE = 0.05  # prefix schedule: a batch may recompute at most this share of its suffix for its later rows


@dataclass(frozen=True)
class Shared:
    """One fed sequence and its unperturbed pass: what every batch of a plan reads."""

    inputs: np.ndarray  # [n_fed] token ids, or [n_fed, hidden] input embeddings (image-text models)
    label_positions: np.ndarray  # [n_labels] fed positions whose next token is scored
    labels: np.ndarray  # [n_labels] the token ids scored there
    logprobs: np.ndarray  # [n_labels] their unperturbed log-probs
    cache: tuple[np.ndarray, ...]  # per layer keys, values: [1, kv_heads, n_fed, head_dim]
    chunk: int | None = None  # queries per graph call of a batch's suffix (None: the whole suffix in one call)

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


def first_changed(factors: np.ndarray) -> np.ndarray:
    """For each row of factors, the earliest position whose factor is not 1."""
    changed = factors != 1.0
    return np.where(changed.any(axis=1), changed.argmax(axis=1), factors.shape[1])


def plan_batches(
    starts: np.ndarray,
    batch_size: int,
    schedule: str,
    n_fed: int,
    waste: float = WASTE,
    *,
    call_cost: float = 0,
    chunk: int | None = None,
) -> list[tuple[np.ndarray, int]]:
    """(rows, first fed position) per call. Prefix schedule: rows sorted by start; a batch feeds from its first
    row's start. With ``call_cost`` 0 (CPU) a row joins only while its own start lies within ``waste`` of the
    batch's suffix length (bounding recomputed positions to about ``waste / 2`` of the useful work); with a
    ``call_cost`` > 0 (token positions one graph call costs, GPU) the batches are those that minimise calls x
    ``call_cost`` + positions computed (``cheapest_batches``), each call of a suffix in query chunks of ``chunk``
    counted."""
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}; available: {', '.join(SCHEDULES)}")
    order = np.argsort(starts, kind="stable")
    if schedule == "naive":
        return [(order[k : k + batch_size], 0) for k in range(0, len(order), batch_size)]
    if call_cost > 0:
        return cheapest_batches(np.asarray(starts)[order], order, batch_size, n_fed, call_cost, chunk)
    batches, k = [], 0
    while k < len(order):
        first = int(starts[order[k]])
        end = k + 1
        while end < len(order) and end - k < batch_size and starts[order[end]] - first <= waste * (n_fed - first):
            end += 1
        batches.append((order[k:end], first))
        k = end
    return batches


def calls_from(start: int, n_fed: int, chunk: int | None) -> int:
    """Graph calls that feed positions ``start`` to ``n_fed - 1``: one, or one per query chunk (none from
    ``n_fed`` on: such a batch changes no label and makes no call)."""
    if start >= n_fed:
        return 0
    return 1 if chunk is None else -(-(n_fed - start) // chunk)


def cheapest_batches(
    sorted_starts: np.ndarray,
    order: np.ndarray,
    batch_size: int,
    n_fed: int,
    call_cost: float,
    chunk: int | None = None,
) -> list[tuple[np.ndarray, int]]:
    """The split of the rows ``order`` (sorted by their starts ``sorted_starts``) into runs of at most
    ``batch_size`` rows that minimises calls x ``call_cost`` + token positions computed, where a run from row i
    makes ``calls_from(start_i)`` calls and computes ``n_fed - start_i`` positions per row: an exact dynamic
    programme (O(rows x batch_size)). Runs of the sorted rows lose nothing: a row's cost depends only on its
    batch's first start, so rows can trade places between batches until each batch is a run."""
    s = np.asarray(sorted_starts, dtype=np.int64)
    m = len(s)
    suffix = np.maximum(n_fed - s, 0).astype(np.float64)  # positions each row of a batch from here computes
    opening = call_cost * np.array([calls_from(int(v), n_fed, chunk) for v in s], dtype=np.float64)
    best = np.zeros(m + 1)  # best[j]: the least cost of the first j rows
    cut = np.zeros(m + 1, dtype=np.int64)  # where the last batch of that best split begins
    for j in range(1, m + 1):
        first = np.arange(max(0, j - batch_size), j)
        cost = best[first] + opening[first] + (j - first) * suffix[first]
        k = int(np.argmin(cost))  # the earliest of equal costs: the longest last batch
        best[j], cut[j] = cost[k], first[k]
    runs, j = [], m
    while j > 0:
        runs.append((int(cut[j]), j))
        j = int(cut[j])
    return [(order[i:j], int(s[i])) for i, j in reversed(runs)]


def graph_calls(plan: Plan) -> int:
    """Graph calls a plan makes: the unperturbed pass's (one per query chunk), then every batch's."""
    chunk = plan.shared.chunk
    return calls_from(0, plan.shared.n_fed, chunk) + sum(
        calls_from(b.start, plan.shared.n_fed, chunk) for b in plan.batches
    )


def make_plan(
    shared: Shared, factors: np.ndarray, batch_size: int, schedule: str = "prefix", call_cost: float = 0
) -> Plan:
    """The batches that compute log p(labels) for every row of ``factors`` [n_rows, n_fed] on ``shared``;
    ``call_cost`` as in ``plan_batches`` (0: the CPU's rule)."""
    batches: list[Batch] = []
    split = plan_batches(
        first_changed(factors), batch_size, schedule, shared.n_fed, call_cost=call_cost, chunk=shared.chunk
    )
    for rows, start in split:
        scored = np.flatnonzero(shared.label_positions >= start)
        if len(scored):
            batches.append(Batch(len(batches), rows, factors[rows], start, scored))
    return Plan(shared, tuple(batches), len(factors), batch_size, schedule)
