"""The service's settings, as ``atman-onnx serve`` gives them; checked once, when made."""

from __future__ import annotations

from dataclasses import dataclass

from atman_onnx.core.errors import InputError
from atman_onnx.runtime.sizing import DEFAULT_MEMORY_BUDGET_MB


@dataclass(frozen=True)
class ServeConfig:
    """Where to listen and the limits every request is held to."""

    folders: tuple[str, ...]
    host: str = "127.0.0.1"
    port: int = 8000
    max_concurrent: int = 1
    max_queued: int = 8
    threads: int | None = None
    provider: str | None = None
    memory_budget_mb: float = DEFAULT_MEMORY_BUDGET_MB
    api_key: str | None = None
    allowed_origins: tuple[str, ...] = ()
    request_timeout: float = 300.0
    max_body_bytes: int = 1_000_000
    max_input_tokens: int | None = None
    graceful_timeout: float = 30.0

    def __post_init__(self) -> None:
        for name in ("max_concurrent", "max_body_bytes"):
            if getattr(self, name) < 1:
                raise InputError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        for name in ("max_queued",):
            if getattr(self, name) < 0:
                raise InputError(f"--{name.replace('_', '-')} must be at least 0, got {getattr(self, name)}")
        for name in ("request_timeout", "graceful_timeout"):
            if not getattr(self, name) > 0:
                raise InputError(f"--{name.replace('_', '-')} must be positive, got {getattr(self, name)}")
        if self.max_input_tokens is not None and self.max_input_tokens < 1:
            raise InputError(f"--max-input-tokens must be at least 1, got {self.max_input_tokens}")
        if self.threads is not None and self.threads < 1:
            raise InputError(f"--threads must be at least 1, got {self.threads}")
        if not 0 < self.port < 65536:
            raise InputError(f"--port must lie in 1..65535, got {self.port}")

    @property
    def limits(self) -> dict[str, int | float | None]:
        """What ``GET /v1/models`` reports of the limits."""
        return {
            "max_concurrent": self.max_concurrent,
            "max_queued": self.max_queued,
            "request_timeout_s": self.request_timeout,
            "max_body_bytes": self.max_body_bytes,
            "max_input_tokens": self.max_input_tokens,
        }
