"""The export's stages: each run quietly (what the libraries it drives print, warn and log below ERROR held back,
unless verbose) and reported in one line with its seconds and notes."""

from __future__ import annotations

import contextlib
import io
import logging
import time
import warnings
from collections.abc import Callable, Iterator

# Loggers of the libraries the export drives; below ERROR they are held back unless verbose.
LIBRARY_LOGGERS = ("torch", "transformers", "huggingface_hub", "onnxscript", "onnx_ir", "onnxruntime")

Log = Callable[[str], None]


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Within the block, drop the warnings and prints of the libraries the export drives, and their log records
    below ERROR; everything is restored on the way out."""
    loggers = [logging.getLogger(name) for name in LIBRARY_LOGGERS]
    levels = [logger.level for logger in loggers]
    sink = io.StringIO()
    try:
        for logger in loggers:
            logger.setLevel(logging.ERROR)
        with warnings.catch_warnings(), contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


class Stages:
    """Runs the export's stages, each ``quiet`` unless ``verbose``, and reports each finished stage to ``log`` in
    one line: its name, its seconds and the notes the stage made."""

    def __init__(self, log: Log | None = None, verbose: bool = False):
        self.log, self.verbose = log, verbose

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[Callable[[str], None]]:
        notes: list[str] = []
        start = time.perf_counter()
        with contextlib.nullcontext() if self.verbose else quiet():
            yield notes.append
        if self.log is not None:
            self.log(f"{name:<9}{time.perf_counter() - start:>4.1f} s  {'; '.join(notes)}")
