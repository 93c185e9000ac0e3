"""Running the service with uvicorn, and draining it on SIGTERM or Ctrl-C.

On the first signal the service stops admitting (``/ready`` and new explanations answer 503) but keeps listening,
lets the explanations in flight finish for most of ``--graceful-timeout``, cancels what is left (between batches),
and then lets uvicorn close the connections. A second signal exits at once.
"""

from __future__ import annotations

import asyncio
import logging
from types import FrameType

import uvicorn

from atman_onnx.serve.app import Service, create_app
from atman_onnx.serve.config import ServeConfig
from atman_onnx.serve.models import load_models

DRAIN_SHARE = 0.7  # of --graceful-timeout for the jobs in flight to finish; the rest for cancelling and closing


class DrainingServer(uvicorn.Server):
    """A uvicorn server whose shutdown first drains the service's jobs."""

    def __init__(self, config: uvicorn.Config, service: Service, graceful_timeout: float):
        super().__init__(config)
        self.service, self.graceful_timeout = service, graceful_timeout
        self._loop: asyncio.AbstractEventLoop | None = None

    async def startup(self, sockets=None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().startup(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        """First signal: drain. Second: exit now. The signal is not re-raised, so a drained exit is status 0."""
        loop = self._loop
        if self.service.draining or loop is None:
            self.should_exit = self.force_exit = True
            return
        self.service.draining = True
        loop.call_soon_threadsafe(lambda: loop.create_task(self._drain()))

    async def _drain(self) -> None:
        scheduler = self.service.scheduler
        if not await scheduler.wait_idle(self.graceful_timeout * DRAIN_SHARE):
            scheduler.cancel_all("shutdown")
            await scheduler.wait_idle(self.graceful_timeout * (1 - DRAIN_SHARE) / 2)
        self.should_exit = True


def serve(config: ServeConfig) -> None:
    """Load every model, then serve until drained (see the module's docstring)."""
    models = load_models(config)
    app = create_app(config, models)
    server_config = uvicorn.Config(
        app,
        host=config.host,
        port=config.port,
        log_level="info",
        access_log=False,
        timeout_graceful_shutdown=config.graceful_timeout * (1 - DRAIN_SHARE) / 2,
    )
    _log_to_stderr()
    server = DrainingServer(server_config, app.state.service, config.graceful_timeout)
    print(f"serving {', '.join(models)} on http://{config.host}:{config.port} (/docs for the API)", flush=True)
    server.run()


def _log_to_stderr() -> None:
    """The service's own lines (one per request, and failures) on stderr beside uvicorn's, in its format."""
    logger = logging.getLogger("atman_onnx.serve")
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s:     %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
