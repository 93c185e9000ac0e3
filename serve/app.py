"""The FastAPI application: routes of a few lines each over the models, the scheduler and the metrics."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException

from atman_onnx import __version__
from atman_onnx.core.errors import AtmanError
from atman_onnx.explanation import Explanation
from atman_onnx.serve import schema
from atman_onnx.serve.access import HEADER, AccessLog, request_id
from atman_onnx.serve.config import ServeConfig
from atman_onnx.serve.errors import STATUS, ApiError, as_api_error
from atman_onnx.serve.guards import check_key, json_body
from atman_onnx.serve.jobs import Scheduler, outcome, reply, stream
from atman_onnx.serve.metrics import Metrics
from atman_onnx.serve.models import ServedModel, pick
from atman_onnx.serve.page import page

REPORT_BODY_FACTOR = 16  # an explanation's JSON is larger than its request: one number per unit and target token

log = logging.getLogger("atman_onnx.serve")


class Service:
    """What the routes share: settings, models, scheduler, metrics, and whether it is ready or draining."""

    def __init__(self, config: ServeConfig, models: dict[str, ServedModel]):
        self.config, self.models = config, models
        self.metrics = Metrics()
        self.scheduler = Scheduler(config.max_concurrent, config.max_queued, config.request_timeout, self.metrics)
        self.ready = self.draining = False
        self.warm_up_error: str | None = None

    async def warm_up(self) -> None:
        """Run each model once off the event loop; ready only when all have run. Once: a Ray Serve replica
        (cluster/serve_app.py) warms up before its application starts."""
        if self.ready:
            return
        try:
            for model in self.models.values():
                await asyncio.get_running_loop().run_in_executor(None, model.warm_up)
            self.ready = True
        except Exception as exc:
            self.warm_up_error = f"warm-up failed: {type(exc).__name__}: {exc}"
            log.error(self.warm_up_error)

    def unavailable(self) -> ApiError | None:
        """Why new explanations get 503 now (warming up, or draining); None when they are admitted."""
        if self.draining:
            return ApiError("draining", "the service is shutting down", headers={"Retry-After": "5"})
        if not self.ready:
            return ApiError(
                "not_ready", self.warm_up_error or "the models are still warming up", headers={"Retry-After": "1"}
            )
        return None


def _explain_docs() -> dict:
    return {
        "requestBody": {"required": True, "content": {"application/json": {"schema": schema.explain_request()}}},
        "responses": {
            "200": {
                "description": "the explanation; with `Accept: text/event-stream`, Server-Sent Events: "
                "`progress` ({done, total, request_id}) after every batch, then one `result` (this object) or "
                "`error` ({error, type, request_id})",
                "content": {
                    "application/json": {"schema": schema.explanation()},
                    "text/event-stream": {"schema": {"type": "string"}},
                },
            },
            **_error_docs(*_error_statuses()),
        },
    }


def _error_docs(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI ``responses`` of the error replies a route can give, with the kinds each status stands for."""
    kinds = _error_statuses()
    return {
        str(s): {"description": kinds[s], "content": {"application/json": {"schema": schema.ERROR}}} for s in statuses
    }


def _error_statuses() -> dict[int, str]:
    by_status: dict[int, list[str]] = {}
    for kind, status in {**STATUS, "timeout": 504}.items():
        by_status.setdefault(status, []).append(kind)
    return {s: ", ".join(k) for s, k in by_status.items()}


def create_app(config: ServeConfig, models: dict[str, ServedModel]) -> FastAPI:
    """The application serving ``models`` under ``config``'s limits (``app.state.service`` holds its state)."""
    service = Service(config, models)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        warming = asyncio.create_task(service.warm_up())
        yield
        warming.cancel()
        service.scheduler.close()

    app = FastAPI(
        title="atman-onnx",
        version=__version__,
        lifespan=lifespan,
        description="AtMan explanations of exported generative transformers, through ONNX Runtime.",
    )
    app.state.service = service

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        if exc.kind in STATUS:
            service.metrics.rejections.labels(exc.kind).inc()
        return _error_reply(request, exc)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        kind = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "invalid_request")
        message = f"no route {request.method} {request.url.path}" if exc.status_code in (404, 405) else exc.detail
        return _error_reply(request, ApiError(kind, message, exc.status_code, dict(exc.headers or {})))

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        return _error_reply(request, as_api_error(exc))  # sent outside AccessLog: the reply carries its own id header

    @app.get("/health", summary="alive: the process answers")
    async def health() -> dict[str, str]:
        return {"status": "alive"}

    @app.get(
        "/ready",
        summary="200 once every model is loaded and warmed up; 503 before, and while draining",
        responses=_error_docs(503),
    )
    async def ready(request: Request) -> JSONResponse:
        down = service.unavailable()
        return _error_reply(request, down) if down else JSONResponse({"status": "ready"})

    @app.get("/metrics", response_class=PlainTextResponse, summary="Prometheus metrics")
    async def metrics() -> Response:
        body, kind = service.metrics.exposition()
        return Response(body, media_type=kind)

    @app.get("/", response_class=HTMLResponse, summary="a page to explain a prompt and read the report")
    async def index() -> HTMLResponse:
        return HTMLResponse(page(list(models), config.api_key is not None))

    def authorised(request: Request) -> None:
        check_key(request, config.api_key)

    v1 = APIRouter(prefix="/v1", dependencies=[Depends(authorised)])

    @v1.get("/models", summary="the served models and the service's limits", responses=_error_docs(401))
    async def list_models() -> dict:
        return {"models": [m.describe(config) for m in models.values()]}

    @v1.post(
        "/tokenize",
        summary="the prompt's tokens, with their character offsets",
        responses=_error_docs(401, 404, 413, 415, 422),
        openapi_extra={
            "requestBody": {"required": True, "content": {"application/json": {"schema": schema.tokenize_request()}}}
        },
    )
    async def tokenize(request: Request) -> dict:
        body = await json_body(request, config.max_body_bytes)
        model = pick(models, body.pop("model", None))
        with _invalid():
            return model.tokenize(body)

    @v1.post(
        "/explain",
        summary="explain a completion (JSON, or Server-Sent Events with progress)",
        openapi_extra=_explain_docs(),
    )
    async def explain(request: Request) -> Response:
        body = await json_body(request, config.max_body_bytes)
        model = pick(models, body.pop("model", None))
        with _invalid():  # prepared once, off the event loop; the worker runs what was sized
            prepared = await asyncio.to_thread(model.prepare, body, config)
        down = service.unavailable()
        if down:
            raise down
        job = service.scheduler.submit(model.name, model.explainer, prepared, request_id(request.scope))
        if "text/event-stream" in request.headers.get("accept", ""):
            return StreamingResponse(
                stream(job, request.is_disconnected),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            )
        try:
            explanation = await outcome(job, request.is_disconnected)
        except Exception as exc:
            raise as_api_error(exc) from exc
        return Response(reply(job, explanation), media_type="application/json")

    @v1.post(
        "/report",
        response_class=HTMLResponse,
        summary="the HTML report of an explanation (as --html writes)",
        responses=_error_docs(401, 413, 415, 422),
    )
    async def report(request: Request) -> HTMLResponse:
        body = await json_body(request, REPORT_BODY_FACTOR * config.max_body_bytes)
        body.pop("request_id", None)
        with _invalid():  # a file that reads can still hold an image that does not
            return HTMLResponse(Explanation.from_json(json.dumps(body)).to_html())

    app.include_router(v1)
    if config.allowed_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(config.allowed_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type", "X-API-Key", "Accept", HEADER],
            expose_headers=[HEADER, "Retry-After"],
        )
    app.add_middleware(AccessLog, metrics=service.metrics)
    return app


def _error_reply(request: Request, error: ApiError) -> JSONResponse:
    """An error's JSON reply: its body plus the request's id (in the body and the header), and its headers."""
    rid = request_id(request.scope)
    return JSONResponse({**error.body, "request_id": rid}, error.status, headers={**error.headers, HEADER: rid})


@contextmanager
def _invalid() -> Iterator[None]:
    """Turn the library's one-line errors (``AtmanError``) into 422 ``invalid_request`` replies."""
    try:
        yield
    except AtmanError as exc:
        raise ApiError("invalid_request", str(exc)) from None
