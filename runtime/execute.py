"""Run a plan: executors turn batches into label log-probs, and ``execute`` gathers them and reports progress.

An executor holds no state beyond its ONNX Runtime session. ``Executor.run`` receives the plan's ``Shared`` data
once and then its batches, and yields each batch's log-probs as it finishes, in any order; so an executor may run
batches in this process (``LocalExecutor``) or send them elsewhere. ``execute`` is the one owner of progress: it
stops asking for batches when ``on_batch`` raises, which is how a caller cancels between batches.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Protocol

import numpy as np

from atman_onnx.runtime.plan import Batch, Plan, Shared
from atman_onnx.runtime.session import Graph


class Executor(Protocol):
    """Computes label log-probs [len(batch.rows), len(batch.scored)] for batches of one plan."""

    def run(self, shared: Shared, batches: Iterable[Batch]) -> Iterator[tuple[Batch, np.ndarray]]: ...


def run_batch(graph: Graph, shared: Shared, batch: Batch) -> np.ndarray:
    """One graph call: the batch's rows fed from ``batch.start`` on the cached prefix; its scored label log-probs."""
    n, start = len(batch.rows), batch.start
    result = graph.run(
        np.broadcast_to(shared.ids[start:], (n, shared.n_fed - start)),
        batch.factors,
        np.broadcast_to(shared.label_positions[batch.scored] - start, (n, len(batch.scored))),
        np.broadcast_to(shared.labels[batch.scored], (n, len(batch.scored))),
        past=[layer[:, :, :start] for layer in shared.cache],
    )
    return result["label_logprobs"]


class LocalExecutor:
    """Runs every batch in this process, one after another, on one graph."""

    def __init__(self, graph: Graph):
        self.graph = graph

    def run(self, shared: Shared, batches: Iterable[Batch]) -> Iterator[tuple[Batch, np.ndarray]]:
        for batch in batches:
            yield batch, run_batch(self.graph, shared, batch)


def unperturbed(graph: Graph, fed: list[int], labels: list[int]) -> tuple[Shared, np.ndarray]:
    """The unperturbed pass over ``fed`` scoring ``labels`` (the last ``len(labels)`` next tokens): the data its
    plan shares, and the input embeddings [n_fed, hidden] (for conceptual suppression)."""
    positions = np.arange(len(fed) - len(labels), len(fed))
    out = graph.run(
        np.array([fed]), np.ones((1, len(fed)), np.float32), positions[None], np.array([labels]),
        outputs=("label_logprobs", "inputs_embeds", *graph.present_names),
    )
    shared = Shared(
        np.asarray(fed, dtype=np.int64), positions, np.asarray(labels, dtype=np.int64), out["label_logprobs"][0],
        tuple(out[name] for name in graph.present_names),
    )
    return shared, out["inputs_embeds"][0]


def execute(plan: Plan, executor: Executor, on_batch: Callable[[int], None] | None = None) -> np.ndarray:
    """log p(labels) [n_rows, n_labels] for every row of the plan; ``on_batch(rows)`` after every batch."""
    shared = plan.shared
    out = np.tile(shared.logprobs.astype(np.float32), (plan.n_rows, 1))
    report = on_batch or (lambda rows: None)
    if plan.settled:
        report(plan.settled)
    for batch, logprobs in executor.run(shared, plan.batches):
        out[np.ix_(batch.rows, batch.scored)] = logprobs
        report(len(batch.rows))
    return out


class Progress:
    """Perturbations done out of ``total`` over every plan of one explanation, reported as ``(done, total)``."""

    def __init__(self, total: int, callback: Callable[[int, int], None] | None = None):
        self.total, self.done, self.callback = total, 0, callback

    def __call__(self, rows: int) -> None:
        self.done += rows
        if self.callback is not None:
            self.callback(self.done, self.total)
