"""The HTTP service on Ray Serve: the same FastAPI application (``serve/app.py``, same routes and replies) in N
replicas, each loading every model and warming up before Ray routes it a request.

Back-pressure is Ray Serve's. A replica takes at most ``max_concurrent`` requests at once (its
``max_ongoing_requests``; light routes such as ``/health`` count too), so the rest wait in Ray's proxy for the next
free replica, at most ``max_queued`` of them (``max_queued_requests``, per proxy, at least 1: Ray refuses 0); beyond
that the proxy answers 503 with ``Retry-After``, in the service's JSON when ``cluster/proxy.py`` runs in the proxy
(``run`` sees to it). Every reply names the replica that answered in ``X-Replica-ID``.

``app_builder`` is for ``serve run atman_onnx.cluster.serve_app:app_builder folders=A,B replicas=2``; ``run`` is
``atman-onnx serve DIR... --ray ADDRESS``.
"""

from __future__ import annotations

import dataclasses
import logging
import signal
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
from fastapi import FastAPI
from ray import serve
from ray.serve import Application

from atman_onnx.cluster.executor import connect
from atman_onnx.cluster.proxy import CALLBACK, CALLBACK_ENV
from atman_onnx.core.contract import load_manifest
from atman_onnx.core.errors import ClusterError, InputError
from atman_onnx.serve.app import create_app
from atman_onnx.serve.config import ServeConfig
from atman_onnx.serve.jobs import RETRY_AFTER_S
from atman_onnx.serve.models import load_models

APP_NAME = "atman-onnx"
REPLICA_HEADER = "x-replica-id"


@dataclass(frozen=True)
class Scaling:
    """How many replicas: a fixed number (default 1), or autoscaled between ``min_replicas`` and ``max_replicas``
    towards ``target_ongoing_requests`` per replica (default ``max_concurrent``)."""

    replicas: int | None = None
    min_replicas: int | None = None
    max_replicas: int | None = None
    target_ongoing_requests: float | None = None

    def __post_init__(self) -> None:
        autoscaled = self.min_replicas is not None or self.max_replicas is not None
        if autoscaled and self.replicas is not None:
            raise InputError("give --replicas, or --min-replicas and --max-replicas, not both")
        if autoscaled and not (
            self.min_replicas is not None
            and self.max_replicas is not None
            and 0 <= self.min_replicas <= self.max_replicas
            and self.max_replicas >= 1
        ):
            raise InputError(
                f"autoscaling needs 0 <= --min-replicas <= --max-replicas and --max-replicas >= 1, got "
                f"{self.min_replicas} and {self.max_replicas}"
            )
        if self.replicas is not None and self.replicas < 1:
            raise InputError(f"--replicas must be at least 1, got {self.replicas}")
        if self.target_ongoing_requests is not None and not (autoscaled and self.target_ongoing_requests > 0):
            raise InputError("--target-ongoing-requests must be positive, with --min-replicas and --max-replicas")

    def __str__(self) -> str:
        if self.min_replicas is None:
            return f"{self.replicas or 1} replicas"
        return f"{self.min_replicas} to {self.max_replicas} replicas (autoscaled)"

    @property
    def least(self) -> int:
        """The replicas there are at least."""
        return self.min_replicas if self.min_replicas is not None else self.replicas or 1

    def options(self, max_concurrent: int) -> dict[str, Any]:
        """The deployment options that say so."""
        if self.min_replicas is None:
            return {"num_replicas": self.replicas or 1}
        return {
            "autoscaling_config": {
                "min_replicas": self.min_replicas,
                "max_replicas": self.max_replicas,
                "target_ongoing_requests": self.target_ongoing_requests or max_concurrent,
            }
        }


@serve.ingress()
class Replica:
    """One replica: the service's application over its own copy of the models."""

    def __init__(self, config: ServeConfig):
        self.config = config

    async def __serve_build_asgi_app__(self) -> FastAPI:
        """Load and warm up every model here, so that Ray counts the replica as running once it can explain."""
        app = create_app(self.config, load_models(self.config))
        service = app.state.service
        await service.warm_up()
        if not service.ready:
            raise RuntimeError(service.warm_up_error)
        app.add_middleware(ReplicaHeader, replica=serve.get_replica_context().replica_id.unique_id)
        return app


class ReplicaHeader:
    """Name the replica that answered in every reply's ``X-Replica-ID``."""

    def __init__(self, app: Any, replica: str):
        self.app, self.header = app, (REPLICA_HEADER.encode(), replica.encode())

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        async def named(message: dict) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), self.header]}
            await send(message)

        await self.app(scope, receive, named)


def application(config: ServeConfig, scaling: Scaling = Scaling()) -> Application:
    """The service as a Ray Serve application. The folders are checked here and must be readable at the same path
    on every node; each replica reserves ``config.threads`` CPUs (default 1) and runs ONNX Runtime on as many."""
    if config.max_queued < 1:
        raise InputError("--max-queued must be at least 1 on Ray (Ray Serve's max_queued_requests cannot be 0)")
    folders = tuple(str(Path(f).resolve()) for f in config.folders)
    names = [Path(f).name for f in folders]
    twice = next((n for n in names if names.count(n) > 1), None)
    if twice:
        raise InputError(f"two models are named {twice!r}: serve folders with different names")
    for folder in folders:
        load_manifest(folder)
    config = dataclasses.replace(config, folders=folders, threads=config.threads or 1)
    # Ray annotates deployment() as returning its decorator even when given the class, which returns a Deployment
    deployment = serve.deployment(Replica).options(  # type: ignore[attr-defined]
        name=APP_NAME,
        **scaling.options(config.max_concurrent),
        max_ongoing_requests=config.max_concurrent,
        max_queued_requests=config.max_queued,
        backpressure_config={"retry_after_s": RETRY_AFTER_S},
        ray_actor_options={"num_cpus": config.threads},
        graceful_shutdown_timeout_s=config.graceful_timeout,
    )
    return deployment.bind(config)


INTEGERS = {
    "max_concurrent",
    "max_queued",
    "threads",
    "max_body_bytes",
    "max_input_tokens",
    "replicas",
    "min_replicas",
    "max_replicas",
}
NUMBERS = {"memory_budget_mb", "request_timeout", "graceful_timeout", "target_ongoing_requests"}
LISTS = {"folders", "allowed_origins"}


def app_builder(args: dict[str, Any]) -> Application:
    """The application from ``serve run``'s ``KEY=VALUE`` arguments (or a config file's ``args``): ``folders``
    (comma-separated), the settings of ``ServeConfig`` but ``host`` and ``port`` (the proxy's), and ``replicas``, or
    ``min_replicas``, ``max_replicas`` and ``target_ongoing_requests``."""
    scaling_fields = {f.name for f in dataclasses.fields(Scaling)}
    known = ({f.name for f in dataclasses.fields(ServeConfig)} - {"host", "port"}) | scaling_fields
    unknown = sorted(set(args) - known)
    if unknown:
        raise InputError(f"unknown argument {unknown[0]!r}; arguments: {', '.join(sorted(known))}")
    if "folders" not in args:
        raise InputError("argument 'folders' is required: folders=DIR[,DIR...]")
    given = {key: _parse(key, value) for key, value in args.items()}
    scaling = Scaling(**{k: given.pop(k) for k in scaling_fields & set(given)})
    return application(ServeConfig(**given), scaling)


def _parse(key: str, value: Any) -> Any:
    """An argument as its setting's type: strings come from the command line, other types from a config file."""
    if key in LISTS:
        return tuple(p.strip() for p in value.split(",") if p.strip()) if isinstance(value, str) else tuple(value)
    if not isinstance(value, str):
        return value
    try:
        return int(value) if key in INTEGERS else float(value) if key in NUMBERS else value
    except ValueError:
        raise InputError(f"argument {key!r} must be a number, got {value!r}") from None


def run(config: ServeConfig, address: str, scaling: Scaling = Scaling()) -> None:
    """``atman-onnx serve --ray``: connect to Ray, start Serve's proxy on the configured host and port (with
    ``cluster/proxy.py``, when this starts Serve), deploy, and serve until SIGTERM or SIGINT; then delete the
    application, letting the requests in flight finish for up to ``graceful_timeout`` (a Ray started here ends with
    this process)."""
    app = application(config, scaling)  # bad folders and options fail before connecting
    connect(address)
    logging.getLogger("ray.serve").setLevel(logging.WARNING)  # this process says what it serves in one line
    cpus, threads = int(ray.cluster_resources().get("CPU", 0)), config.threads or 1
    if scaling.least * threads > cpus:
        raise ClusterError(
            f"{scaling.least} replicas of {threads} threads need {scaling.least * threads} CPUs; "
            f"the Ray cluster has {cpus}"
        )
    deployed, stop = threading.Event(), threading.Event()

    def on_signal(*_: object) -> None:
        if not deployed.is_set():  # still starting (replicas may wait for CPUs): leave now, deleting what was made
            raise KeyboardInterrupt
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        _deploy_and_wait(app, config, scaling, address, deployed, stop)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _deploy_and_wait(
    app: Any, config: ServeConfig, scaling: Scaling, address: str, deployed: threading.Event, stop: threading.Event
) -> None:
    """Start Serve, deploy ``app``, set ``deployed``, and serve until ``stop``; the application is deleted on the
    way out, however it is left."""
    try:
        serve.start(
            http_options={"host": config.host, "port": config.port},
            controller_options={"runtime_env": {"env_vars": {CALLBACK_ENV: CALLBACK}}},
        )
    except RuntimeError as exc:  # Ray's task errors subclass the cause's type too
        raise ClusterError(f"starting Ray Serve failed: {_last_line(str(exc))}") from None
    try:
        try:
            serve.run(app, name=APP_NAME, route_prefix="/")
        except RuntimeError:
            raise ClusterError(f"deploying on Ray failed: {_failure()}") from None
        deployed.set()
        print(
            f"serving {', '.join(Path(f).name for f in config.folders)} on http://{config.host}:{config.port} "
            f"with {scaling} on Ray ({address})",
            flush=True,
        )
        stop.wait()
    finally:  # replicas still waiting for CPUs never finish deleting: then Ray's controller ends them on its own
        serve.delete(APP_NAME, _blocking=deployed.is_set())


def _failure() -> str:
    """Why the deployment failed: the last line of its replicas' error (the exception raised)."""
    status = serve.status().applications.get(APP_NAME)
    return _last_line("\n".join(d.message for d in status.deployments.values()) if status else "")


def _last_line(text: str) -> str:
    """The last line of a traceback or message: the exception and what it says."""
    lines = text.strip().splitlines()
    return lines[-1].strip() if lines else "see the Serve controller's log"
