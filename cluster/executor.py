"""One explanation's perturbation batches on Ray actors: ``RayExecutor`` is an ``Executor`` (runtime/execute.py)
that splits a plan's batches over N actors, each holding a ``Graph`` of the exported folder.

Ray is imported lazily (the ``ray`` extra). The plan's ``Shared`` data goes into the object store once per plan;
the batches are shared out by the token positions they compute, not by count; each batch is one actor call, so
every batch is yielded (and its progress reported) as it finishes. A worker process that dies is restarted by Ray
and its calls run again (``max_restarts``, ``max_task_retries``), so the explanation comes out the same.
"""

from __future__ import annotations

import heapq
import logging
import os
import socket
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from atman_onnx.core.errors import AtmanError, ClusterError, InputError
from atman_onnx.runtime.execute import Stop, run_batch
from atman_onnx.runtime.plan import Batch, Shared
from atman_onnx.runtime.session import Graph

CONNECT_TIMEOUT_S = 5.0  # Ray itself retries an address that does not answer for minutes
DEFAULT_PORTS = {"ray://": 10001, "": 6379}  # Ray Client server, the head's GCS
RETRIES = 3  # restarts of a dead actor, and reruns of each call it had not finished
POLL_S = 0.1  # how often a driver waiting for batches looks at its ``Stop``
START_TIMEOUT_S = 120.0  # for the actors to start and open the graph; past it their CPUs are taken elsewhere


def _ray() -> Any:
    try:
        import ray
    except ModuleNotFoundError as exc:
        if exc.name != "ray":
            raise
        raise ClusterError("running on Ray needs the ray extra: pip install 'atman-onnx[ray]'") from None
    return ray


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _endpoint(address: str) -> tuple[str, int]:
    """The host and port a ``ray://HOST[:PORT]`` or ``HOST[:PORT]`` address connects to first."""
    scheme = "ray://" if address.startswith("ray://") else ""
    rest = address[len(scheme) :]
    if rest.startswith("["):  # an IPv6 host: [HOST]:PORT
        host, _, port = rest[1:].partition("]")
        port = port.removeprefix(":")
    else:
        host, _, port = rest.partition(":")
    port = port or str(DEFAULT_PORTS[scheme])
    if not host or not port.isdigit():
        raise ClusterError(f"Ray address {address!r} is not 'local', 'auto', ray://HOST:PORT or HOST:PORT")
    return host, int(port)


def _check_reachable(address: str) -> None:
    """Fail in seconds when nothing listens at ``address``, where ``ray.init`` would retry for minutes."""
    host, port = _endpoint(address)
    try:
        socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as exc:
        reason = "timed out" if isinstance(exc, TimeoutError) else exc.strerror or _first_line(exc)
        raise ClusterError(f"cannot reach a Ray cluster at {address!r} ({host}:{port}: {reason})") from None


def connect(address: str, num_cpus: int | None = None) -> None:
    """Connect this process to Ray: 'local' starts an instance here (with ``num_cpus``, default the machine's),
    'auto' joins the cluster this machine is part of, and ``ray://HOST:PORT`` or ``HOST:PORT`` the one there.

    An address whose port does not answer fails within ``CONNECT_TIMEOUT_S``; one that answers is Ray's to judge
    (a cluster that refuses this process's token fails after Ray's 20 to 30 s of retries, a port that is not Ray's
    can take minutes). A process already connected to Ray stays on its connection.
    """
    ray = _ray()
    if address not in ("local", "auto"):
        _check_reachable(address)
    if ray.is_initialized():
        return
    quiet: dict[str, Any] = {"logging_level": logging.ERROR, "log_to_driver": False}
    if address == "local":
        quiet.update(num_cpus=num_cpus or os.cpu_count(), include_dashboard=False)
    try:
        ray.init(address=address, **quiet)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        hint = (
            ""
            if address in ("local", "auto") or os.environ.get("RAY_AUTH_MODE")
            else (" (a cluster with token authentication, Ray's default, also needs RAY_AUTH_MODE=token)")
        )
        raise ClusterError(f"cannot connect to Ray at {address!r}: {_first_line(exc)}{hint}") from None


class GraphActor:
    """A Ray actor's state: one ``Graph`` of the exported folder, running the batches it is sent.

    A folder it cannot open is kept as the error and raised by every call: Ray reports an exception in an actor's
    constructor as a traceback, but one in a call as the exception itself.
    """

    def __init__(self, folder: str, provider: str | None, threads: int):
        self.error: AtmanError | None = None
        try:
            self.graph = Graph(folder, provider=provider, threads=threads)
        except AtmanError as exc:
            self.error = exc

    def ready(self) -> None:
        """Raise the error that keeps this actor from running batches, if any."""
        if self.error is not None:
            raise self.error

    def run(self, shared: Shared, batch: Batch) -> np.ndarray:
        """The batch's scored label log-probs (``run_batch``)."""
        self.ready()
        return run_batch(self.graph, shared, batch)


def assign(batches: Sequence[Batch], shards: int) -> list[list[Batch]]:
    """Batches in ``shards`` shares of about equal work, counted as the plan counts it (``Batch.positions``: rows
    times positions fed), not as equal counts: costliest first, each onto the share with the least work so far,
    so the shares' work differs by at most one batch's."""
    shares: list[list[Batch]] = [[] for _ in range(shards)]
    loads = [(0, k) for k in range(shards)]
    for batch in sorted(batches, key=lambda b: b.positions, reverse=True):
        work, k = heapq.heappop(loads)
        shares[k].append(batch)
        heapq.heappush(loads, (work + batch.positions, k))
    return shares


class RayExecutor:
    """Runs each plan's batches on ``shards`` Ray actors of ``threads`` intra-op threads (and CPUs) each, made once
    here and reused by every explanation; needs a connected Ray (``connect``).

    ``shards`` defaults to the cluster's free CPUs divided by ``threads``. ``folder`` must be readable at the same
    path on every machine of the cluster. ``actor`` is the class each actor runs: ``GraphActor``, or a subclass that
    wraps its calls (to trace them, or to fail on purpose in a test of the restarts). ``close`` (or the
    ``Explainer``'s) gives the CPUs back.
    """

    def __init__(
        self,
        folder: str | Path,
        shards: int | None = None,
        threads: int = 1,
        provider: str | None = None,
        actor: type[GraphActor] = GraphActor,
    ):
        ray = _ray()
        if not ray.is_initialized():
            raise ClusterError("not connected to Ray: call atman_onnx.cluster.executor.connect(address) first")
        if threads < 1 or (shards is not None and shards < 1):
            raise InputError(f"shards and threads must be at least 1, got {shards} and {threads}")
        cpus = int(ray.cluster_resources().get("CPU", 0))
        free = int(ray.available_resources().get("CPU", 0))
        shards = shards or max(1, free // threads)
        if shards * threads > cpus:
            raise ClusterError(
                f"{shards} shards of {threads} threads need {shards * threads} CPUs; the Ray cluster has {cpus}"
            )
        remote = ray.remote(actor).options(
            num_cpus=threads, max_restarts=RETRIES, max_task_retries=RETRIES, scheduling_strategy="SPREAD"
        )
        self.actors = [remote.remote(str(Path(folder).resolve()), provider, threads) for _ in range(shards)]
        try:
            self._get([a.ready.remote() for a in self.actors], timeout=START_TIMEOUT_S)
        except ray.exceptions.GetTimeoutError:
            self.close()
            raise ClusterError(
                f"{shards} Ray actors of {threads} CPUs did not start within {START_TIMEOUT_S:g} s: the cluster has "
                f"{free} of its {cpus} CPUs free (other actors or an explainer not closed hold the rest)"
            ) from None
        except AtmanError:
            self.close()  # their CPUs go back to the cluster
            raise

    def run(
        self, shared: Shared, batches: Iterable[Batch], stop: Stop | None = None
    ) -> Iterator[tuple[Batch, np.ndarray]]:
        """Every batch's log-probs as it finishes. Leaving early (an error, a set ``stop``, a consumer that stops
        iterating) cancels the calls not yet started; calls already running on a worker finish."""
        if not self.actors:
            raise ClusterError("this Ray executor is closed")
        batches = list(batches)
        if not batches:
            return
        ray = _ray()
        shared_ref = ray.put(shared)
        calls = {
            actor.run.remote(shared_ref, batch): batch
            for actor, share in zip(self.actors, assign(batches, len(self.actors)))
            for batch in share
        }
        pending = list(calls)
        try:
            while pending:
                done, pending = ray.wait(pending, num_returns=1, timeout=None if stop is None else POLL_S)
                if stop is not None:
                    stop.check()
                for ref in done:
                    yield calls[ref], self._get(ref)
        finally:
            for ref in pending:
                ray.cancel(ref)

    def close(self) -> None:
        """End the actors, freeing their worker processes and CPUs."""
        ray = _ray()
        for actor in self.actors:
            ray.kill(actor)
        self.actors = []

    @staticmethod
    def _get(refs: Any, timeout: float | None = None) -> Any:
        """``ray.get``, with a worker's failure as one line: an ``AtmanError`` as it was raised, else what failed."""
        ray = _ray()
        try:
            return ray.get(refs, timeout=timeout)
        except ray.exceptions.GetTimeoutError:
            raise  # the caller's to explain
        except ray.exceptions.RayTaskError as exc:
            if isinstance(exc.cause, AtmanError):
                raise exc.cause from None
            raise ClusterError(f"a Ray worker failed: {type(exc.cause).__name__}: {_first_line(exc.cause)}") from None
        except ray.exceptions.RayError as exc:
            raise ClusterError(f"a Ray worker failed: {_first_line(exc)}") from None
