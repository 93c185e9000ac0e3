"""What each command of the command line does, from its parsed flags (``cli`` declares the flags): export a model,
explain a request and write its outputs, serve over HTTP (here or on Ray Serve)."""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from atman_onnx.core.contract import load_manifest
from atman_onnx.core.errors import AtmanError, InputError
from atman_onnx.request import FIELDS, ExplainRequest

if TYPE_CHECKING:
    from atman_onnx.cluster.executor import RayExecutor


def export_command(args: argparse.Namespace) -> None:
    try:
        from atman_onnx.export.exporter import export
        from atman_onnx.export.validate import describe
    except ImportError as exc:
        raise AtmanError(f"export needs the export extra (`pip install atman-onnx[export]`): {exc}") from None
    manifest = export(
        args.model,
        args.out_dir,
        mode=args.mode,
        gguf_file=args.gguf_file,
        opset=args.opset,
        dtype=args.dtype,
        quantize=args.quantize,
        log=functools.partial(print, flush=True),
        verbose=args.verbose,
    )
    figures = describe(manifest.validation["max_abs_diff"])
    precision = "" if manifest.precision == "fp32" else f", {manifest.precision}"
    print(
        f"exported {manifest.architecture} ({manifest.mode}{precision}) to {args.out_dir}; "
        f"validated against PyTorch{' float32' if precision else ''}: {figures}"
    )


def progress_bar(quiet: bool):
    """A rich progress bar over perturbations on stderr; None when quiet or stderr is not a terminal."""
    if quiet or not sys.stderr.isatty():
        return None
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    return Progress(
        "explaining",
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,
    )


def request_from(args: argparse.Namespace) -> ExplainRequest:
    """The request the flags describe: every ``ExplainRequest`` field given on the command line, by name (images as
    file paths, which the Python form takes)."""
    given = {name: getattr(args, name) for name in FIELDS if hasattr(args, name)}
    if args.chat:
        given["prompt"] = [{"role": "user", "content": args.prompt}]
    return ExplainRequest(**given)


def ray_executor(args: argparse.Namespace) -> RayExecutor | None:
    """The executor ``--ray`` asks for: the batches on ``--shards`` Ray actors of ``--threads`` threads each (a
    folder that is not an export is refused first, before any actor starts); None without ``--ray``."""
    if args.ray is None:
        return None
    from atman_onnx.cluster.executor import RayExecutor, connect

    load_manifest(args.dir)
    connect(args.ray)
    return RayExecutor(args.dir, args.shards, 1 if args.threads is None else args.threads, args.provider)


def explain_command(args: argparse.Namespace) -> None:
    from atman_onnx.explainer import Explainer
    from atman_onnx.outputs import check_writable, overlay_paths, write_all
    from atman_onnx.runtime.providers import gpu_expected

    request = request_from(args)  # bad options fail before the model loads
    if args.overlay and not request.images:
        raise InputError("--overlay draws on the prompt's images: give them with --image")
    if args.shards is not None and args.ray is None:
        raise InputError("--shards needs --ray")
    for path in (args.json, args.html, args.overlay):
        if path:
            check_writable(Path(path))
    explainer = Explainer.load(
        args.dir,
        provider=args.provider,
        threads=args.threads,
        memory_budget_mb=args.memory_budget_mb,
        executor=ray_executor(args),
    )
    bar = progress_bar(args.quiet)
    task = None

    def on_progress(done: int, total: int) -> None:
        nonlocal task
        if task is None:
            task = bar.add_task("explain", total=total)
        bar.update(task, completed=done)

    with bar if bar is not None else contextlib.nullcontext():
        explanation = explainer.run(request, on_progress if bar is not None else None)
    if not args.quiet and gpu_expected():  # a CPU-only onnxruntime has no choice of provider to report
        print(explainer.provider_note, file=sys.stderr)
    print(explanation.to_text(color=sys.stdout.isatty()))
    files = []  # rendered before any is written
    if args.json:
        files.append((Path(args.json), (explanation.to_json() + "\n").encode("utf-8")))
    if args.html:
        files.append((Path(args.html), explanation.to_html().encode("utf-8")))
    if args.overlay:
        from atman_onnx.overlay import overlay_png

        pngs = [overlay_png(explanation, i) for i in range(len(explanation.images))]
        files += zip(overlay_paths(Path(args.overlay), len(pngs)), pngs)
    write_all(files)
    for path, _ in files:
        print(f"wrote {path}", file=sys.stderr)


SERVE_MODULES = ("fastapi", "starlette", "uvicorn", "prometheus_client")


def serve_command(args: argparse.Namespace) -> None:
    try:
        from atman_onnx.serve.config import ServeConfig
        from atman_onnx.serve.server import serve
    except ModuleNotFoundError as exc:
        if exc.name not in SERVE_MODULES:
            raise
        raise AtmanError(
            f'serve needs the serve extra (`pip install "atman-onnx[serve]"`): no module {exc.name!r}'
        ) from None
    origins = tuple(o.strip() for given in args.allowed_origins or [] for o in given.split(",") if o.strip())
    config = ServeConfig(
        folders=tuple(args.dirs),
        host=args.host,
        port=args.port,
        max_concurrent=args.max_concurrent,
        max_queued=args.max_queued,
        threads=args.threads,
        provider=args.provider,
        memory_budget_mb=args.memory_budget_mb,
        api_key=args.api_key or os.environ.get("ATMAN_ONNX_API_KEY") or None,
        allowed_origins=origins,
        request_timeout=args.request_timeout,
        max_body_bytes=args.max_body_bytes,
        max_input_tokens=args.max_input_tokens,
        graceful_timeout=args.graceful_timeout,
    )
    scaling = {k: getattr(args, k) for k in ("replicas", "min_replicas", "max_replicas", "target_ongoing_requests")}
    if args.ray is None:
        if any(v is not None for v in scaling.values()):
            raise InputError("--replicas, --min-replicas, --max-replicas and --target-ongoing-requests need --ray")
        serve(config)
        return
    try:
        from atman_onnx.cluster.serve_app import Scaling, run
    except ModuleNotFoundError as exc:
        if (exc.name or "").startswith("atman_onnx"):
            raise
        missing = f"no module {exc.name!r}"
        raise AtmanError(f"serving on Ray needs the ray extra: pip install 'atman-onnx[ray]' ({missing})") from None
    run(config, args.ray, Scaling(**scaling))
