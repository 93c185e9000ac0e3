"""Run a plan: executors turn batches into label log-probs, and ``execute`` gathers them and reports progress.

An executor holds no state beyond its ONNX Runtime session. ``Executor.run`` receives the plan's ``Shared`` data
once and then its batches, and yields each batch's log-probs as it finishes, in any order; so an executor may run
batches in this process (``LocalExecutor``) or send them elsewhere. ``execute`` is the one owner of progress: it
stops asking for batches when ``on_batch`` raises or a ``Stop`` is set. A set ``Stop`` also ends the graph call in
flight (ONNX Runtime's ``RunOptions.terminate``), so a cancelled explanation stops within one batch.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from typing import Protocol

import numpy as np
import onnxruntime as ort

from atman_onnx.runtime.plan import Batch, Plan, Shared, first_changed
from atman_onnx.runtime.session import Graph


class Stopped(Exception):
    """An explanation stopped before its end because its ``Stop`` was set; ``reason`` says why."""

    def __init__(self, reason: str):
        super().__init__(f"explanation stopped: {reason}")
        self.reason = reason


class Stop:
    """Asks a running explanation to stop: checked between batches, and handed to ONNX Runtime so that the graph
    call in flight ends too. Set it from any thread; the first reason given is kept."""

    def __init__(self) -> None:
        self.reason: str | None = None
        self.run_options = ort.RunOptions()

    def set(self, reason: str) -> None:
        if self.reason is None:
            self.reason = reason
            self.run_options.terminate = True

    def check(self) -> None:
        """Raise ``Stopped`` if the stop is set."""
        if self.reason is not None:
            raise Stopped(self.reason)


@contextlib.contextmanager
def guarded(stop: Stop | None) -> Iterator[ort.RunOptions | None]:
    """Around one graph call, given the run options this yields: ``Stopped`` before the call if ``stop`` is set,
    and instead of ONNX Runtime's error when the call was ended by it."""
    if stop is None:
        yield None
        return
    stop.check()
    try:
        yield stop.run_options
    except Exception:
        stop.check()
        raise


class Executor(Protocol):
    """Computes label log-probs [len(batch.rows), len(batch.scored)] for batches of one plan; ``stop``, when
    given and set, ends the work early with ``Stopped``."""

    def run(
        self, shared: Shared, batches: Iterable[Batch], stop: Stop | None = None
    ) -> Iterator[tuple[Batch, np.ndarray]]: ...


def chunks(start: int, end: int, chunk: int | None) -> list[tuple[int, int]]:
    """The query chunks [a, b) that positions ``start`` to ``end`` are fed in (one when ``chunk`` is None)."""
    step = chunk or max(1, end - start)
    return [(a, min(a + step, end)) for a in range(start, end, step)]


def scored_in_chunk(positions: np.ndarray, inside: np.ndarray, start: int) -> tuple[np.ndarray, np.ndarray]:
    """Which labels a chunk from ``start`` scores, and where they lie in it; a chunk that holds none scores the
    first label at its first position (the graph takes at least one), and the result is dropped."""
    if len(inside):
        return inside, positions[inside] - start
    return np.zeros(1, dtype=np.int64), np.zeros(1, dtype=np.int64)


def run_batch(graph: Graph, shared: Shared, batch: Batch, stop: Stop | None = None) -> np.ndarray:
    """The batch's rows fed from ``batch.start`` on the cached prefix, in query chunks of ``shared.chunk``
    positions (a graph with a row cache; else in one call), each chunk on the rows' own keys and values of the
    chunks before it; returns the scored label log-probs [rows, scored]. On a resident graph (CUDA) the prefix is
    cut on the device from the plan's cache, copied there once per plan, and the rows' keys and values stay there
    from chunk to chunk: only label log-probs come back."""
    n = len(batch.rows)
    positions, labels = shared.label_positions[batch.scored], shared.labels[batch.scored]
    out = np.empty((n, len(batch.scored)), dtype=np.float32)
    past = graph.shared_past(shared.cache, batch.start)
    keep = graph.present_names if graph.resident else ()
    rows = None
    for a, b in chunks(batch.start, shared.n_fed, shared.chunk if graph.row_past_names else None):
        inside = np.flatnonzero((positions >= a) & (positions < b))
        last = b == shared.n_fed
        if not len(inside) and last:
            break
        at, where = scored_in_chunk(positions, inside, a)
        fed = shared.inputs[a:b]
        with guarded(stop) as run_options:
            result = graph.run(
                np.broadcast_to(fed, (n, *fed.shape)),
                batch.factors[:, :b],
                np.broadcast_to(where, (n, len(at))),
                np.broadcast_to(labels[at], (n, len(at))),
                past=past,
                rows=rows,
                run_options=run_options,
                outputs=("label_logprobs", *(() if last else graph.present_names)),
                keep=() if last else keep,
            )
        out[:, inside] = result["label_logprobs"][:, : len(inside)]
        if not last:
            rows = graph.extend(rows, [result[name] for name in graph.present_names])
    return out


class LocalExecutor:
    """Runs every batch in this process, one after another, on one graph."""

    def __init__(self, graph: Graph):
        self.graph = graph

    def run(
        self, shared: Shared, batches: Iterable[Batch], stop: Stop | None = None
    ) -> Iterator[tuple[Batch, np.ndarray]]:
        for batch in batches:
            yield batch, run_batch(self.graph, shared, batch, stop)


def unperturbed(
    graph: Graph, fed: np.ndarray | list[int], labels: list[int], stop: Stop | None = None, chunk: int | None = None
) -> tuple[Shared, np.ndarray]:
    """The unperturbed pass over ``fed`` (token ids, or input embeddings [n_fed, hidden]) scoring ``labels`` (the
    last ``len(labels)`` next tokens), in query chunks of ``chunk`` positions where the graph has a row cache: the
    data its plan shares, and the input embeddings [n_fed, hidden] (for conceptual suppression)."""
    fed_array = np.asarray(fed)
    if fed_array.ndim == 1 and graph.embeddings is not None:  # text alone, for a graph that takes embeddings
        fed_array = graph.embed(fed_array)
    n_fed = len(fed_array)
    positions = np.arange(n_fed - len(labels), n_fed)
    label_ids = np.asarray(labels, dtype=np.int64)
    embeds = fed_array if fed_array.ndim == 2 else None  # else the graph returns them
    wanted = ("label_logprobs", *(() if embeds is not None else ("inputs_embeds",)), *graph.present_names)
    logprobs, looked_up, cache = np.empty(len(labels), np.float32), [], None
    for a, b in chunks(0, n_fed, chunk if graph.row_past_names else None):
        inside = np.flatnonzero((positions >= a) & (positions < b))
        at, where = scored_in_chunk(positions, inside, a)
        with guarded(stop) as run_options:
            out = graph.run(
                fed_array[None, a:b],
                np.ones((1, b), np.float32),
                where[None],
                label_ids[at][None],
                past=cache,
                outputs=wanted,
                run_options=run_options,
            )
        logprobs[inside] = out["label_logprobs"][0, : len(inside)]
        if embeds is None:
            looked_up.append(out["inputs_embeds"][0])
        new = [out[name] for name in graph.present_names]
        cache = new if cache is None else [np.concatenate(pair, axis=2) for pair in zip(cache, new)]
    shared = Shared(
        fed_array if fed_array.ndim == 2 else fed_array.astype(np.int64),
        positions,
        label_ids,
        logprobs,
        tuple(cache or ()),
        chunk,
    )
    return shared, embeds if embeds is not None else np.concatenate(looked_up)


def execute(
    plan: Plan, executor: Executor, on_batch: Callable[[int], None] | None = None, stop: Stop | None = None
) -> np.ndarray:
    """log p(labels) [n_rows, n_labels] for every row of the plan; ``on_batch(rows)`` after every batch. Raises
    ``Stopped`` once ``stop`` is set."""
    shared = plan.shared
    out = np.tile(shared.logprobs.astype(np.float32), (plan.n_rows, 1))
    report = on_batch or (lambda rows: None)
    if plan.settled:
        report(plan.settled)
    for batch, logprobs in executor.run(shared, plan.batches, stop):
        at = np.ix_(batch.rows, batch.scored)
        # a later row of a batch (or any row, naive) recomputes labels before its own first change: keep them exact
        changed = shared.label_positions[batch.scored][None, :] >= first_changed(batch.factors)[:, None]
        out[at] = np.where(changed, logprobs, out[at])
        report(len(batch.rows))
        if stop is not None:
            stop.check()
    return out


class Progress:
    """Perturbations done out of ``total`` over every plan of one explanation, reported as ``(done, total)``."""

    def __init__(self, total: int, callback: Callable[[int, int], None] | None = None):
        self.total, self.done, self.callback = total, 0, callback

    def __call__(self, rows: int) -> None:
        self.done += rows
        if self.callback is not None:
            self.callback(self.done, self.total)
