"""Ray Serve: the HTTP service in replicas behind Ray's proxy, on the session's local Ray instance (conftest's
``cluster``) and a free loopback port. Explanations equal the library's, two replicas share the work, a request
beyond Ray's queue gets the service's 503, and ``atman-onnx serve --ray`` deploys, serves and exits 0 on SIGTERM.

A request is held on a replica by sending its body slowly: Ray counts it against the replica's
``max_ongoing_requests`` from its headers on, so which requests run, wait or are refused does not depend on timing.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

ray = pytest.importorskip("ray")
httpx = pytest.importorskip("httpx")
for _module in ("fastapi", "uvicorn", "prometheus_client"):
    pytest.importorskip(_module)

from ray import serve  # noqa: E402

from atman_onnx import Explainer, ExplainRequest  # noqa: E402
from atman_onnx.cli import main  # noqa: E402
from atman_onnx.cluster.proxy import CALLBACK, CALLBACK_ENV  # noqa: E402
from atman_onnx.cluster.serve_app import APP_NAME, Scaling, app_builder, application  # noqa: E402
from atman_onnx.core.errors import InputError  # noqa: E402
from atman_onnx.serve.config import ServeConfig  # noqa: E402

PROMPT = "The quick brown fox jumps over the lazy dog. The dog sleeps in the"
BODIES = [
    {"prompt": PROMPT, "target": " sun."},
    {"prompt": PROMPT, "target": " sun.", "granularity": "word"},
    {"prompt": PROMPT, "target": " sun.", "conceptual": 0.2, "batch_size": 2},
    {"prompt": PROMPT, "target": " garden", "factor": 0.1},
]
JSON = {"content-type": "application/json"}


@pytest.fixture(scope="module")
def tiny(tiny_export) -> Path:
    return tiny_export("llama", "log_additive")


@pytest.fixture(scope="module")
def proxy(cluster) -> Iterator[str]:
    """Serve's proxy on a free loopback port, with the service's proxy middleware (as ``atman-onnx serve --ray``
    starts it); Serve is shut down after the file, giving the cluster its CPUs back."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    serve.start(
        http_options={"host": "127.0.0.1", "port": port},
        controller_options={"runtime_env": {"env_vars": {CALLBACK_ENV: CALLBACK}}},
    )
    yield f"http://127.0.0.1:{port}"
    serve.shutdown()


@contextmanager
def deployed(app) -> Iterator[None]:
    serve.run(app, name=APP_NAME, route_prefix="/")
    try:
        yield
    finally:
        serve.delete(APP_NAME)


class Held:
    """POST /v1/explain on a thread with its body held after the first bytes until ``release``."""

    def __init__(self, url: str, body: dict, gate: threading.Event):
        data = json.dumps(body).encode()

        def chunks() -> Iterator[bytes]:
            yield data[:8]
            gate.wait(30)
            yield data[8:]

        self.reply: httpx.Response | None = None
        self.thread = threading.Thread(target=self._post, args=(url, chunks()))
        self.thread.start()

    def _post(self, url: str, content: Iterator[bytes]) -> None:
        self.reply = httpx.post(url + "/v1/explain", content=content, headers=JSON, timeout=60)

    def result(self) -> httpx.Response:
        self.thread.join(60)
        assert self.reply is not None
        return self.reply


def assert_equals_library(reply: httpx.Response, body: dict, library: Explainer) -> None:
    assert reply.status_code == 200, reply.text
    want = library.run(ExplainRequest.from_dict(body))
    got = np.asarray(reply.json()["relevance"])
    assert np.abs(want.relevance).max() > 1e-3
    assert got.shape == want.relevance.shape
    np.testing.assert_allclose(got, want.relevance, rtol=0, atol=1e-5)
    assert reply.json()["request_id"] == reply.headers["x-request-id"]
    assert [k for k, _ in reply.headers.multi_items()].count("x-request-id") == 1


def test_two_replicas_share_concurrent_explanations_equal_to_the_library(proxy, tiny):
    library = Explainer.load(tiny, provider="cpu")
    args = {"folders": str(tiny), "replicas": "2", "max_concurrent": "1", "max_queued": "8", "provider": "cpu"}
    with deployed(app_builder(args)):
        health = httpx.get(proxy + "/health", timeout=10)
        assert health.status_code == 200 and health.json() == {"status": "alive"}
        assert httpx.get(proxy + "/ready", timeout=10).json() == {"status": "ready"}
        models = httpx.get(proxy + "/v1/models", timeout=10).json()["models"]
        assert [m["name"] for m in models] == [tiny.name]
        assert models[0]["limits"]["max_concurrent"] == 1 and models[0]["limits"]["max_queued"] == 8

        gate = threading.Event()
        held = [Held(proxy, body, gate) for body in BODIES]  # 2 run (one per replica), 2 wait in Ray's proxy
        time.sleep(1.5)
        gate.set()
        replies = [h.result() for h in held]
        for reply, body in zip(replies, BODIES):
            assert_equals_library(reply, body, library)
        assert len({r.headers["x-replica-id"] for r in replies}) == 2


def test_a_request_beyond_the_queue_gets_the_services_503(proxy, tiny):
    library = Explainer.load(tiny, provider="cpu")
    config = ServeConfig(folders=(str(tiny),), max_concurrent=1, max_queued=1, provider="cpu")
    with deployed(application(config, Scaling(replicas=1))):
        gate = threading.Event()
        running = Held(proxy, BODIES[0], gate)
        time.sleep(1.0)
        waiting = Held(proxy, BODIES[1], gate)
        time.sleep(0.5)
        started = time.perf_counter()
        refused = httpx.post(proxy + "/v1/explain", json=BODIES[2], timeout=30, headers={"X-Request-ID": "over-1"})
        assert time.perf_counter() - started < 2
        gate.set()
        assert refused.status_code == 503
        assert refused.headers["retry-after"] == "2" and refused.headers["content-type"] == "application/json"
        assert "x-replica-id" not in refused.headers  # the proxy refused it; no replica saw it
        assert refused.json() == {
            "error": "the service is busy: Request dropped due to backpressure (num_queued_requests=1, "
            "max_queued_requests=1); retry later",
            "type": "overloaded",
            "request_id": "over-1",
        }
        first, second = running.result(), waiting.result()
        assert_equals_library(first, BODIES[0], library)
        assert_equals_library(second, BODIES[1], library)
        assert first.headers["x-replica-id"] == second.headers["x-replica-id"]


def test_the_command_line_serves_on_ray_until_sigterm_then_exits_0(proxy, tiny, tmp_path):
    port = proxy.rsplit(":", 1)[1]  # Serve already listens there: the command line's deployment joins it
    address = ray.get_runtime_context().gcs_address
    log = (tmp_path / "serve.log").open("w+")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "atman_onnx.cli",
            "serve",
            str(tiny),
            "--ray",
            address,
            "--replicas",
            "1",
            "--port",
            port,
            "--provider",
            "cpu",
            "--max-queued",
            "3",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while "serving" not in (tmp_path / "serve.log").read_text():
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "serve.log").read_text()
            time.sleep(0.2)
        models = httpx.get(proxy + "/v1/models", timeout=10).json()["models"]
        assert models[0]["limits"]["max_queued"] == 3  # the command line's settings
        body = {"prompt": PROMPT, "target": " sun."}
        assert_equals_library(
            httpx.post(proxy + "/v1/explain", json=body, timeout=30), body, Explainer.load(tiny, provider="cpu")
        )
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        assert APP_NAME not in serve.status().applications
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()


def test_sigterm_while_replicas_wait_for_cpus_ends_the_deployment(proxy, tiny, tmp_path):
    from atman_onnx.cluster.executor import RayExecutor

    held = RayExecutor(tiny, 2, threads=1, provider="cpu")  # the cluster's 2 CPUs: the replica cannot start
    log = (tmp_path / "serve.log").open("w+")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "atman_onnx.cli",
            "serve",
            str(tiny),
            "--ray",
            ray.get_runtime_context().gcs_address,
            "--replicas",
            "1",
            "--port",
            proxy.rsplit(":", 1)[1],
            "--provider",
            "cpu",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONFAULTHANDLER": "1"},
    )
    try:
        deadline = time.monotonic() + 60
        while APP_NAME not in serve.status().applications:  # deploying, its replica pending
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "serve.log").read_text()
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGABRT)  # with PYTHONFAULTHANDLER: where it hangs, into the log
            time.sleep(3)
            pytest.fail("no exit 30 s after SIGTERM:\n" + (tmp_path / "serve.log").read_text())
        assert proc.returncode == 130 and "atman-onnx: interrupted" in (tmp_path / "serve.log").read_text()
        deadline = time.monotonic() + 30
        while APP_NAME in serve.status().applications and time.monotonic() < deadline:
            time.sleep(0.2)
        assert APP_NAME not in serve.status().applications
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
        held.close()


def test_a_bad_ray_address_fails_fast_in_one_line(tiny, capsys):
    started = time.perf_counter()
    code = main(["serve", str(tiny), "--ray", "127.0.0.1:1", "--replicas", "2"])
    assert code == 2 and time.perf_counter() - started < 10
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("atman-onnx: error: cannot reach a Ray cluster at '127.0.0.1:1'")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--replicas", "2"], "--replicas, --min-replicas, --max-replicas and --target-ongoing-requests need --ray"),
        (["--ray", "local", "--max-queued", "0"], "--max-queued must be at least 1 on Ray"),
        (["--ray", "local", "--replicas", "2", "--min-replicas", "1", "--max-replicas", "2"], "not both"),
        (["--ray", "local", "--min-replicas", "3", "--max-replicas", "2"], "got 3 and 2"),
    ],
)
def test_the_command_line_refuses_bad_scaling_in_one_line(tiny, capsys, argv, message):
    assert main(["serve", str(tiny), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("atman-onnx: error: ") and message in err


def test_without_ray_the_command_line_says_what_to_install(tiny, capsys, monkeypatch):
    monkeypatch.delitem(sys.modules, "atman_onnx.cluster.serve_app")
    monkeypatch.setitem(sys.modules, "ray", None)
    assert main(["serve", str(tiny), "--ray", "local"]) == 2
    assert capsys.readouterr().err.strip() == (
        "atman-onnx: error: serving on Ray needs the ray extra: pip install 'atman-onnx[ray]' (no module 'ray')"
    )


def test_the_builder_reads_serve_runs_arguments(tiny):
    scaled = Scaling(min_replicas=1, max_replicas=4)
    assert scaled.options(2) == {
        "autoscaling_config": {"min_replicas": 1, "max_replicas": 4, "target_ongoing_requests": 2}
    }
    assert Scaling(replicas=3).options(2) == {"num_replicas": 3} and str(scaled) == "1 to 4 replicas (autoscaled)"
    with pytest.raises(InputError, match="unknown argument 'replica'; arguments: allowed_origins, api_key"):
        app_builder({"folders": str(tiny), "replica": "2"})
    with pytest.raises(InputError, match="argument 'threads' must be a number, got 'two'"):
        app_builder({"folders": str(tiny), "threads": "two"})
    with pytest.raises(InputError, match="argument 'folders' is required"):
        app_builder({"replicas": "2"})
    with pytest.raises(InputError, match="two models are named"):
        app_builder({"folders": f"{tiny},{tiny}"})


def test_the_scaling_tool_times_the_parts_and_predicts_with_amdahl(cluster, tiny, monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).parents[1] / "tools"))
    import scaling

    row = scaling.measure(str(tiny), 24, 2, 1)
    assert row["fed"] == 24 + scaling.TARGET_TOKENS - 1 and row["passes"] == row["fed"] + 1
    assert row["split_s"] > 0 and row["threads_s"] > 0 and all(v > 0 for v in row["parts_s"].values())
    at, longer = scaling.predict([row], [24, 96], [8])
    serial = sum(row["parts_s"][k] for k in scaling.SERIAL)
    parallel = row["parts_s"]["parallel"]
    assert at["from"] == "measured" and at["speedup"] == pytest.approx((serial + parallel) / (serial + parallel / 8))
    assert 1 < at["speedup"] < 8
    assert longer["from"] == "extrapolated from 24" and longer["parallel_s"] == pytest.approx(16 * parallel)
    text = scaling.table([row], [at, longer])
    assert "| 24 | 31 | 32 |" in text and "| 96 | 8 |" in text
