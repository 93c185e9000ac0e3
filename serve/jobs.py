"""Admission, cancellation and streaming of explanations: the one place the service's concurrency lives.

At most ``max_concurrent`` explanations run at once, on a thread pool of that size (ONNX Runtime's ``run`` is
thread-safe and releases the GIL), and at most ``max_queued`` more wait for a slot; beyond that a request is
refused at once. A job is cancelled through its ``Stop``: the graph call in flight ends (ONNX Runtime's
``RunOptions.terminate``) and no further batch starts, so the worker thread stops within one batch and only then
frees its slot.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from atman_onnx.core.errors import AtmanError
from atman_onnx.explainer import Explainer
from atman_onnx.explanation import Explanation, level_to_dict
from atman_onnx.prepare import Prepared
from atman_onnx.runtime.execute import Stop, Stopped
from atman_onnx.runtime.search import Level
from atman_onnx.serve.errors import ApiError, Cancelled, as_api_error
from atman_onnx.serve.metrics import Metrics

log = logging.getLogger("atman_onnx.serve")
POLL_S = 0.2  # how often a waiting reply checks whether its client is still there
RETRY_AFTER_S = 2  # what an overloaded reply suggests


class Job:
    """One admitted explanation: its id, its stop, its queue of events (progress, finished levels), and the task
    that runs it."""

    def __init__(self, loop: asyncio.AbstractEventLoop, job_id: str):
        self.id = job_id
        self.stop = Stop()
        self.events: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue()
        self.task: asyncio.Task[Explanation]
        self._loop = loop

    @property
    def reason(self) -> str | None:
        return self.stop.reason

    def cancel(self, reason: str) -> None:
        """Stop within the current batch (the first reason given is the one counted)."""
        if not self.task.done():
            self.stop.set(reason)

    def on_progress(self, done: int, total: int) -> None:
        """Called on the worker thread after every batch."""
        self._loop.call_soon_threadsafe(self.events.put_nowait, ("progress", {"done": done, "total": total}))

    def on_level(self, level: Level) -> None:
        """Called on the worker thread when a level of a search is scored."""
        self._loop.call_soon_threadsafe(self.events.put_nowait, ("level", level_to_dict(level)))


class Scheduler:
    """Admits, runs and cancels jobs; its counts feed the queue-depth and in-flight gauges."""

    def __init__(self, max_concurrent: int, max_queued: int, timeout_s: float, metrics: Metrics):
        self.capacity, self.timeout_s, self.metrics = max_concurrent + max_queued, timeout_s, metrics
        self.jobs: set[Job] = set()
        self.running = 0
        self._slots = asyncio.Semaphore(max_concurrent)
        self._pool = ThreadPoolExecutor(max_concurrent, thread_name_prefix="atman-explain")
        self._idle = asyncio.Event()
        self._idle.set()

    def submit(self, name: str, explainer: Explainer, prepared: Prepared, job_id: str) -> Job:
        """Admit and start a job named by its request's id, to run ``prepared`` (``explainer``'s, sized), or refuse
        it (503 ``overloaded``) when every slot and queue place is taken."""
        if len(self.jobs) >= self.capacity:
            raise ApiError(
                "overloaded",
                f"the service is busy: {len(self.jobs)} explanations running or queued, "
                "its limit (--max-concurrent plus --max-queued); retry later",
                headers={"Retry-After": str(RETRY_AFTER_S)},
            )
        loop = asyncio.get_running_loop()
        job = Job(loop, job_id)
        self.jobs.add(job)
        self._idle.clear()
        job.task = loop.create_task(self._run(job, name, explainer, prepared))
        deadline = loop.call_later(self.timeout_s, job.cancel, "timeout")

        def settled(task: asyncio.Task[Explanation]) -> None:
            deadline.cancel()
            if not task.cancelled():
                task.exception()  # retrieved here: a job whose client left has no one else to read it

        job.task.add_done_callback(settled)
        self._update()
        return job

    async def _run(self, job: Job, name: str, explainer: Explainer, prepared: Prepared) -> Explanation:
        try:
            async with self._slots:
                if job.reason is not None:
                    raise Cancelled(job.reason)
                self.running += 1
                self._update()
                try:
                    explanation = await asyncio.get_running_loop().run_in_executor(
                        self._pool, explainer.run, prepared, job.on_progress, job.stop, job.on_level
                    )
                finally:
                    self.running -= 1
            self.metrics.passes.labels(name).inc(explanation.timings.get("passes", 0))
            return explanation
        except (Cancelled, Stopped) as exc:
            self.metrics.cancellations.labels(exc.reason).inc()
            raise Cancelled(exc.reason) from None
        except AtmanError:  # bad input found while running: the reply says so, nothing to log
            raise
        except Exception:
            log.exception("explanation %s failed", job.id)
            raise
        finally:
            self.jobs.discard(job)
            if not self.jobs:
                self._idle.set()
            self._update()

    def _update(self) -> None:
        self.metrics.in_flight.set(self.running)
        self.metrics.queued.set(len(self.jobs) - self.running)

    def cancel_all(self, reason: str) -> None:
        for job in list(self.jobs):
            job.cancel(reason)

    async def wait_idle(self, timeout_s: float) -> bool:
        """Wait until no job is admitted; False when ``timeout_s`` passed first."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout_s)
            return True
        except asyncio.TimeoutError:
            return False

    def close(self) -> None:
        self.cancel_all("shutdown")
        self._pool.shutdown(wait=False, cancel_futures=True)


async def follow(job: Job, disconnected: Callable[[], Awaitable[bool]]) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """Yield the job's events (``progress`` and ``level``, with their data) until it ends; cancel it when the
    client goes away or the reader stops early. The job's outcome is then ``job.task.result()``."""
    getter: asyncio.Future[tuple[str, dict[str, Any]]] | None = None
    loop = asyncio.get_running_loop()
    checked = loop.time()
    try:
        while not (job.task.done() and job.events.empty()):
            getter = asyncio.ensure_future(job.events.get())
            await asyncio.wait({getter, job.task}, timeout=POLL_S, return_when=asyncio.FIRST_COMPLETED)
            if getter.done():
                yield getter.result()
            else:
                getter.cancel()  # safe: Queue.get takes an item only once it resumes
            if loop.time() - checked >= POLL_S and not job.task.done():
                checked = loop.time()
                if await disconnected():
                    job.cancel("disconnected")
    finally:
        if getter is not None:
            getter.cancel()
        job.cancel("disconnected")  # a no-op once the job has finished


def reply(job: Job, explanation: Explanation) -> str:
    """The success body: ``Explanation.to_json()``'s object plus ``request_id``, on one line."""
    return json.dumps({**explanation.to_dict(), "request_id": job.id}, ensure_ascii=False)


def sse(event: str, data: dict[str, Any] | str) -> str:
    """One Server-Sent Event; ``data`` is a JSON object (or its text, on one line)."""
    text = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)
    return f"event: {event}\ndata: {text}\n\n"


async def stream(job: Job, disconnected: Callable[[], Awaitable[bool]]) -> AsyncIterator[str]:
    """The job as Server-Sent Events: ``progress`` after every batch, ``level`` as each level of a search is scored
    ({granularity, units, relevance}), then one ``result`` or one ``error``; each event's data carries
    ``request_id``."""
    async for event, data in follow(job, disconnected):
        yield sse(event, {**data, "request_id": job.id})
    try:
        yield sse("result", reply(job, job.task.result()))
    except Exception as exc:
        yield sse("error", {**as_api_error(exc).body, "request_id": job.id})


async def outcome(job: Job, disconnected: Callable[[], Awaitable[bool]]) -> Explanation:
    """Wait for the job's explanation (cancelling it if the client goes away); raises its error."""
    async for _ in follow(job, disconnected):
        pass
    return job.task.result()
