"""The HTTP service end to end: real uvicorn servers in subprocesses (`atman-onnx serve`), httpx as the client and
headless Chromium (Playwright) for the page at `/`.

Two tiny Llama exports are served: the session's `tiny_export("llama", "log_additive")` (128 positions, fast) and
one with 1024 positions, whose long prompts at batch size 1 make explanations slow enough to overlap, cancel and
drain. Every wait has a timeout.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest
from playwright.sync_api import Page, expect

from atman_onnx import Explainer, ExplainRequest, Explanation
from atman_onnx.core.contract import load_manifest
from atman_onnx.core.errors import InputError
from atman_onnx.runtime.text import TextCodec

httpx = pytest.importorskip("httpx")
for _module in ("fastapi", "uvicorn", "prometheus_client"):
    pytest.importorskip(_module)

from conftest import CORPUS, tiny_config  # noqa: E402

KEY = "s3cret-key"
PROMPT = "The quick brown fox jumps over the lazy dog. The dog sleeps in the"
TARGET = " sun."
SERVE = [sys.executable, "-m", "atman_onnx.cli", "serve"]
SSE = {"accept": "text/event-stream"}


class Server:
    """`atman-onnx serve` on a free loopback port; ready once `/ready` answers 200."""

    def __init__(self, folders: list[Path], log: Path, *options: str, env: dict[str, str] | None = None):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.log, self._output = log, log.open("w")
        self.proc = subprocess.Popen(
            [*SERVE, *map(str, folders), "--port", str(self.port), "--provider", "cpu", "--threads", "1", *options],
            stdout=self._output,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
        )
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"server exited: {self.log.read_text()}"
            try:
                if httpx.get(self.url + "/ready", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        self.stop()
        raise AssertionError(f"server not ready in 90 s: {self.log.read_text()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._output.close()


@pytest.fixture(scope="module")
def long_export(tmp_path_factory, tiny_tokenizer) -> Path:
    """A tiny random Llama with 1024 positions (the session's has 128), exported once for this module."""
    import torch
    from transformers import AutoModelForCausalLM

    from atman_onnx.export.exporter import export

    torch.manual_seed(0)
    config = tiny_config("llama", len(tiny_tokenizer))
    config.max_position_embeddings = 1024
    source = tmp_path_factory.mktemp("hf-long")
    AutoModelForCausalLM.from_config(config).save_pretrained(source)
    tiny_tokenizer.save_pretrained(source)
    out = tmp_path_factory.mktemp("serve-long")
    export(str(source), out)
    return out


@pytest.fixture(scope="module")
def tiny(tiny_export) -> Path:
    return tiny_export("llama", "log_additive")


@pytest.fixture(scope="module")
def server(tiny, long_export, tmp_path_factory):
    """One explanation at a time and none queued, small body and token limits; a timeout no test reaches on a
    loaded machine (the timeout has a server of its own)."""
    srv = Server(
        [tiny, long_export],
        tmp_path_factory.mktemp("logs") / "main.log",
        "--max-concurrent",
        "1",
        "--max-queued",
        "0",
        "--request-timeout",
        "120",
        "--max-body-bytes",
        "20000",
        "--max-input-tokens",
        "1000",
    )
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server.url, timeout=30) as c:
        yield c


def slow_prompt(folder: Path, n_tokens: int) -> str:
    """A prompt of about ``n_tokens`` tokens of the corpus: slow to explain at batch size 1."""
    codec = TextCodec(folder, load_manifest(folder).special_tokens)
    ids = codec.encode(" ".join(CORPUS * 60)).ids[:n_tokens]
    return codec.decode(ids)


def slow_body(folder: Path, n_tokens: int = 500) -> dict:
    return {"model": folder.name, "prompt": slow_prompt(folder, n_tokens), "target": TARGET, "batch_size": 1}


def events(lines) -> list[tuple[str, dict]]:
    """Server-Sent Events from an iterator of lines: (event, data)."""
    out, name = [], None
    for line in lines:
        if line.startswith("event: "):
            name = line[7:]
        elif line.startswith("data: "):
            out.append((name, json.loads(line[6:])))
    return out


def metric(text: str, name: str, **labels: str) -> float:
    """A sample's value in Prometheus text (0 when absent)."""
    want = name + ("{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}" if labels else "")
    for line in text.splitlines():
        if line.startswith(want + " "):
            return float(line.split()[-1])
    return 0.0


def wait_for(check, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def wait_idle(client) -> None:
    """Until no explanation runs or waits (one cancelled by an earlier test stops within a batch)."""

    def idle() -> bool:
        text = client.get("/metrics").text
        return metric(text, "atman_in_flight") == 0 and metric(text, "atman_queue_depth") == 0

    wait_for(idle)


def first_progress(response) -> Iterator[str]:
    """Read a stream until its first progress event: the explanation is then running. Returns the stream's lines
    from there on; the caller holds them, because a line iterator that is dropped closes the connection."""
    lines = response.iter_lines()
    for line in lines:
        if line == "event: progress":
            return lines
    raise AssertionError("stream ended before any progress")


def test_explain_equals_library(client, tiny):
    body = {"prompt": PROMPT, "target": TARGET, "granularity": "word", "conceptual": 0.7}
    reply = client.post("/v1/explain", json={"model": tiny.name, **body})
    assert reply.status_code == 200, reply.text
    data = reply.json()
    assert data["request_id"] and reply.headers["x-request-id"] == data["request_id"]
    expected = Explainer.load(tiny, provider="cpu", threads=1).run(ExplainRequest.from_dict(body))
    np.testing.assert_allclose(np.array(data["relevance"]), expected.relevance, atol=1e-5)
    assert np.abs(expected.relevance).max() > 1e-3  # a comparison of real numbers, not of zeros
    reference = json.loads(expected.to_json())
    for key in ("prompt_ids", "target_ids", "tokens", "units", "target_tokens", "granularity", "format_version"):
        assert data[key] == reference[key], key
    assert set(data) == set(reference) | {"request_id"}


def test_explain_stream(client, tiny):
    body = {"model": tiny.name, "prompt": PROMPT, "target": TARGET, "batch_size": 2}
    with client.stream("POST", "/v1/explain", json=body, headers=SSE) as reply:
        assert reply.status_code == 200 and reply.headers["content-type"].startswith("text/event-stream")
        got = events(reply.iter_lines())
    progress = [data for name, data in got if name == "progress"]
    assert len(progress) >= 2 and [name for name, _ in got[:-1]] == ["progress"] * (len(got) - 1)
    assert all(a["done"] < b["done"] for a, b in itertools.pairwise(progress))
    assert progress[-1]["done"] == progress[-1]["total"]
    name, result = got[-1]
    assert name == "result" and result["request_id"]
    direct = client.post("/v1/explain", json=body).json()
    np.testing.assert_allclose(result["relevance"], direct["relevance"], atol=1e-5)


LEVELS_PROMPT = "The dog met the fox. The fox sleeps.\n\nThe capital of France is Paris.\n\nThe dog sleeps in the"
DOCUMENTS = ["The dog met the fox. The fox sleeps.", {"title": "France", "text": "The capital of France is Paris."}]


@pytest.mark.parametrize(
    "fields, names",
    [
        ({"prompt": LEVELS_PROMPT, "granularity": ["paragraph", "sentence"]}, ["paragraph", "sentence"]),
        (
            {
                "prompt": "The dog sleeps in the",
                "documents": DOCUMENTS,
                "granularity": "document,sentence",
                "target": " garden. The fox sleeps too",
                "target_granularity": "sentence",
            },
            ["document", "sentence"],
        ),
    ],
    ids=["paragraphs", "documents-answer-sentences"],
)
def test_a_search_streams_each_level_before_the_result(client, tiny, fields, names):
    body = {"model": tiny.name, "target": TARGET, **fields}
    with client.stream("POST", "/v1/explain", json=body, headers=SSE) as reply:
        got = events(reply.iter_lines())
    levels = [data for name, data in got if name == "level"]
    name, result = got[-1]
    assert name == "result" and [lv["granularity"] for lv in levels] == names
    assert [{k: v for k, v in lv.items() if k != "request_id"} for lv in levels] == result["levels"]
    assert result["units"] == levels[-1]["units"] and result["format_version"] == 4
    columns = len(result["target_tokens"])  # one per answer sentence where asked, in the events as in the result
    assert all(len(row) == columns for lv in levels for row in lv["relevance"])
    direct = Explainer.load(tiny, provider="cpu").run(ExplainRequest.from_dict({"target": TARGET, **fields}))
    np.testing.assert_allclose(result["relevance"], direct.relevance, atol=1e-5)


def test_request_ids_in_headers_bodies_events_and_the_log(server, client, tiny):
    body = {"model": tiny.name, "prompt": PROMPT, "target": TARGET}
    given = {"x-request-id": "client-id.42"}
    reply = client.post("/v1/explain", json=body, headers=given)
    assert reply.headers["x-request-id"] == reply.json()["request_id"] == "client-id.42"
    refused = client.post("/v1/explain", json={**body, "batch_size": 0}, headers={"x-request-id": "bad id!"})
    made = refused.headers["x-request-id"]
    assert refused.status_code == 422 and refused.json()["request_id"] == made and len(made) == 32
    missing = client.get("/no/such/route", headers={"x-request-id": "r404"})
    assert missing.status_code == 404 and missing.json()["request_id"] == "r404"
    assert client.get("/health").headers["x-request-id"]
    with client.stream("POST", "/v1/explain", json=body, headers={**SSE, "x-request-id": "sse-1"}) as streamed:
        assert streamed.headers["x-request-id"] == "sse-1"
        assert {data["request_id"] for _, data in events(streamed.iter_lines())} == {"sse-1"}
    deadline = time.monotonic() + 5
    while "POST /v1/explain 200 sse-1 " not in server.log.read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    log = server.log.read_text()
    for line in (
        "POST /v1/explain 200 client-id.42 ",
        f"POST /v1/explain 422 {made} ",
        "GET /no/such/route 404 r404 ",
        "POST /v1/explain 200 sse-1 ",
    ):
        assert f"INFO:     {line}" in log, line


def test_tokenize(client, tiny):
    reply = client.post("/v1/tokenize", json={"model": tiny.name, "prompt": PROMPT})
    assert reply.status_code == 200, reply.text
    data = reply.json()
    encoded = TextCodec(tiny, load_manifest(tiny).special_tokens).encode(PROMPT)
    assert [t["id"] for t in data["tokens"]] == encoded.ids
    assert [(t["start"], t["end"]) for t in data["tokens"]] == encoded.offsets
    assert data["text"] == PROMPT and all(t["text"] for t in data["tokens"])
    bad = client.post("/v1/tokenize", json={"model": tiny.name, "prompt": PROMPT, "target": "x"})
    assert bad.status_code == 422 and bad.json()["error"].startswith("unknown field 'target'")


def test_models(client, tiny, long_export):
    models = {m["name"]: m for m in client.get("/v1/models").json()["models"]}
    assert set(models) == {tiny.name, long_export.name}
    tiny_model = models[tiny.name]
    manifest = load_manifest(tiny)
    assert tiny_model["source"] == manifest.source and tiny_model["mode"] == "log_additive"
    assert tiny_model["precision"] == "fp32" and tiny_model["provider"] == "cpu"
    assert tiny_model["max_positions"] == manifest.max_positions == 128
    assert tiny_model["limits"]["max_concurrent"] == 1 and tiny_model["limits"]["max_queued"] == 0
    assert tiny_model["limits"]["max_input_tokens"] == 128  # the model's positions, below --max-input-tokens
    assert models[long_export.name]["limits"]["max_input_tokens"] == 1000


def test_health_ready_docs_and_page(client):
    assert client.get("/health").json() == {"status": "alive"}
    assert client.get("/ready").json() == {"status": "ready"}
    assert client.get("/docs").status_code == 200
    page = client.get("/")
    assert page.status_code == 200 and "<textarea" in page.text and "v1/explain" in page.text
    offered = re.findall(r"<option>([a-z]+)</option>", page.text.split('id="granularity"')[1].split("</select>")[0])
    assert offered == ["token", "word", "sentence", "paragraph"]  # no spans, no documents: no field for them


def test_openapi_describes_every_field(client, tiny):
    spec = client.get("/openapi.json").json()["paths"]["/v1/explain"]["post"]
    request = spec["requestBody"]["content"]["application/json"]["schema"]["properties"]
    for f in fields(ExplainRequest):
        assert request[f.name]["description"] == f.metadata["doc"], f.name
        assert "type" in request[f.name] or "anyOf" in request[f.name], f.name
    assert request["model"]["description"]
    reply = spec["responses"]["200"]["content"]["application/json"]["schema"]["properties"]
    data = client.post("/v1/explain", json={"model": tiny.name, "prompt": PROMPT, "target": TARGET}).json()
    assert set(reply) == set(data) and all(p["description"] for p in reply.values())
    assert {"401", "404", "413", "415", "422", "503"} <= set(spec["responses"])


def test_report_uses_the_html_renderer(client, tiny):
    data = client.post("/v1/explain", json={"model": tiny.name, "prompt": PROMPT, "target": TARGET}).json()
    page = client.post("/v1/report", json=data)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    data.pop("request_id")
    assert page.text == Explanation.from_json(json.dumps(data)).to_html()
    for field, value, message in [
        ("suppression_factor", "0", "field 'suppression_factor' must be a finite number, got a string"),
        ("prompt", None, "field 'prompt' must be a string, got null"),
        (
            "relevance",
            [[1.0]],
            (
                f"field 'relevance' must be finite numbers, one row per unit and one column per target "
                f"token ({len(data['units'])} x {len(data['target_tokens'])})"
            ),
        ),
        ("timings", {"total_s": "1"}, "field 'timings.total_s' must be a finite number, got a string"),
        ("units", [{**data["units"][0], "positions": []}], "field 'units[0].positions' must list fed positions"),
    ]:
        bad = client.post("/v1/report", json={**data, field: value})
        assert bad.status_code == 422 and bad.json()["error"].startswith(f"not an explanation: {message}"), bad.json()


def test_page_explains_in_a_browser(server, client, long_export, page: Page):
    """`GET /` in headless Chromium: fill in the form, submit, see the progress, get the report, hover a word and
    see its score. A long prompt on the long model keeps the progress on screen for seconds."""
    wait_idle(client)  # one explanation at a time: none left over from an earlier test
    page.goto(server.url + "/")
    page.select_option("#model", long_export.name)
    page.fill("#prompt", slow_prompt(long_export, 800))
    page.fill("#target", TARGET)
    page.select_option("#granularity", "word")
    page.get_by_role("button", name="Explain").click()
    status, bar = page.locator("#status"), page.locator("#bar")
    expect(status).to_have_text(re.compile(r"^explaining: [1-9]\d* / \d+ perturbations$"))
    expect(bar).to_be_visible()
    expect(status).to_have_text(re.compile(r"^done in \d+\.\d\d s$"), timeout=120_000)
    expect(bar).to_be_hidden()
    expect(page.locator("#report")).to_be_visible()
    report = page.frame_locator("#report")
    expect(report.locator("h1")).to_have_text("AtMan explanation")
    expect(report.locator(".text")).to_have_text(TARGET)
    word = report.locator(".unit").nth(2)
    index, (shown, score) = word.get_attribute("data-index"), word.get_attribute("title").rsplit(" \u00b7 ", 1)
    word.hover()
    expect(report.locator("#info")).to_have_text(
        f"#{index} \u201c{shown}\u201d (prompt): relevance {score} for all of the target (sum)"
    )


@pytest.mark.parametrize(
    "body, field",
    [
        ({"temperature": 0.5}, "temperature"),
        ({"factor": "0.1"}, "factor"),
        ({"batch_size": 0}, None),
    ],
)
def test_invalid_requests_are_422_with_the_library_message(client, tiny, body, field):
    full = {"prompt": PROMPT, "target": TARGET, **body}
    with pytest.raises(InputError) as expected:
        ExplainRequest.from_dict(full)
    reply = client.post("/v1/explain", json={"model": tiny.name, **full})
    assert reply.status_code == 422
    assert reply.json() == {
        "error": str(expected.value),
        "type": "invalid_request",
        "request_id": reply.headers["x-request-id"],
    }
    if field:
        assert repr(field) in reply.json()["error"]


def test_other_refusals(client, tiny, long_export):
    def post(path="/v1/explain", **kwargs):
        return client.post(path, **kwargs)

    assert post(content=b"{not json", headers={"content-type": "application/json"}).status_code == 422
    assert post(json=[1, 2]).json()["type"] == "invalid_request"
    assert post(content=b"[" * 15000, headers={"content-type": "application/json"}).status_code == 422
    several = post(json={"prompt": PROMPT})
    assert several.status_code == 422 and "field 'model' is required" in several.json()["error"]
    unknown = post(json={"model": "nope", "prompt": PROMPT})
    assert unknown.status_code == 404 and unknown.json() == {
        "error": f"unknown model 'nope'; models: {tiny.name}, {long_export.name}",
        "type": "not_found",
        "request_id": unknown.headers["x-request-id"],
    }
    wrong_type = post(content=b'{"prompt": "x"}', headers={"content-type": "text/plain"})
    assert wrong_type.status_code == 415 and wrong_type.json()["type"] == "unsupported_media_type"
    big = post(json={"model": tiny.name, "prompt": "a" * 30000})
    assert big.status_code == 413 and big.json()["type"] == "too_large"
    chunked = post(
        content=iter([b'{"prompt": "', b"a" * 15000, b"a" * 15000, b'"}']), headers={"content-type": "application/json"}
    )
    assert chunked.status_code == 413 and "more than 20000 bytes" in chunked.json()["error"]
    long = post(json={"model": long_export.name, "prompt": slow_prompt(long_export, 1100), "target": TARGET})
    assert long.status_code == 422 and "this service takes at most 1000" in long.json()["error"]
    long_contrast = post(
        json={"model": long_export.name, "prompt": PROMPT, "target": TARGET, "contrast": slow_prompt(long_export, 1100)}
    )
    assert (
        long_contrast.status_code == 422
        and "the longer of target and contrast); this service takes at most 1000" in long_contrast.json()["error"]
    )
    past_positions = post(json={"model": tiny.name, "prompt": slow_prompt(tiny, 200), "target": TARGET})
    assert past_positions.status_code == 422 and "at most 128" in past_positions.json()["error"]
    huge = post(
        content=b'{"prompt": "x", "factor": ' + b"9" * 5000 + b"}", headers={"content-type": "application/json"}
    )
    assert huge.status_code == 422 and "the body is not valid JSON: Exceeds the limit" in huge.json()["error"]
    large = post(
        content=f'{{"model": "{tiny.name}", "prompt": "x", "factor": 1{"0" * 400}}}'.encode(),
        headers={"content-type": "application/json"},
    )
    assert large.status_code == 422 and "suppression factor must be a number from 0 to 1e+06" in large.json()["error"]
    assert client.get("/v1/nothing").status_code == 404


def test_overloaded_is_503_at_once(server, client, long_export):
    with (
        httpx.Client(base_url=server.url, timeout=30) as other,
        client.stream("POST", "/v1/explain", json=slow_body(long_export, 700), headers=SSE) as first,
    ):
        lines = first_progress(first)
        started = time.monotonic()
        second = other.post("/v1/explain", json=slow_body(long_export))
        assert time.monotonic() - started < 3  # at once, not after the first one
        assert next(lines).startswith('data: {"done": ')  # and the first is still streaming
    assert second.status_code == 503 and second.json()["type"] == "overloaded"
    assert int(second.headers["retry-after"]) >= 1
    wait_idle(client)


def test_disconnect_cancels_and_frees_the_slot(client, tiny, long_export):
    def cancelled() -> float:
        return metric(client.get("/metrics").text, "atman_cancellations_total", reason="disconnected")

    wait_idle(client)
    before = cancelled()
    with (
        httpx.Client(base_url=client.base_url, timeout=30) as gone,
        gone.stream("POST", "/v1/explain", json=slow_body(long_export), headers=SSE) as reply,
    ):
        first_progress(reply)
    wait_for(lambda: cancelled() > before)
    assert metric(client.get("/metrics").text, "atman_in_flight") == 0
    after = client.post("/v1/explain", json={"model": tiny.name, "prompt": PROMPT, "target": TARGET})
    assert after.status_code == 200, after.text
    with pytest.raises(httpx.ReadTimeout):  # a JSON (not streamed) request whose client gives up is cancelled too
        client.post("/v1/explain", json=slow_body(long_export), timeout=0.5)
    wait_for(lambda: cancelled() > before + 1)
    assert client.post("/v1/explain", json={"model": tiny.name, "prompt": PROMPT, "target": TARGET}).status_code == 200


@pytest.fixture(scope="module")
def impatient(tiny, long_export, tmp_path_factory):
    """A server whose requests time out after 1 s."""
    srv = Server([tiny, long_export], tmp_path_factory.mktemp("logs") / "impatient.log", "--request-timeout", "1")
    with httpx.Client(base_url=srv.url, timeout=30) as c:
        yield c
    srv.stop()


def test_timeout_cancels(impatient, tiny, long_export):
    started = time.monotonic()
    reply = impatient.post("/v1/explain", json=slow_body(long_export, 900))
    assert reply.status_code == 504 and reply.json()["type"] == "timeout", reply.text
    assert time.monotonic() - started < 10
    assert metric(impatient.get("/metrics").text, "atman_cancellations_total", reason="timeout") >= 1
    small = {"model": tiny.name, "prompt": "The dog", "target": " met"}
    assert impatient.post("/v1/explain", json=small).status_code == 200


def test_metrics(client, tiny):
    client.post("/v1/explain", json={"model": tiny.name, "prompt": PROMPT, "target": TARGET})
    client.post("/v1/explain", json={"model": tiny.name, "prompt": PROMPT, "temperature": 1})
    text = client.get("/metrics").text
    assert metric(text, "atman_http_requests_total", route="/v1/explain", status="200") >= 1
    assert metric(text, "atman_http_requests_total", route="/v1/explain", status="422") >= 1
    assert metric(text, "atman_rejections_total", reason="invalid_request") >= 1
    assert metric(text, "atman_perturbation_passes_total", model=tiny.name) > 0
    assert metric(text, "atman_http_request_duration_seconds_count", route="/v1/explain") >= 2
    for gauge in ("atman_queue_depth", "atman_in_flight"):
        assert f"\n{gauge} " in text


@pytest.fixture(scope="module")
def keyed(long_export, tmp_path_factory):
    """A second server: its key from ATMAN_ONNX_API_KEY, two explanations at once, CORS for one origin, and a 30 s
    graceful timeout."""
    srv = Server(
        [long_export],
        tmp_path_factory.mktemp("logs") / "keyed.log",
        "--graceful-timeout",
        "30",
        "--max-concurrent",
        "2",
        "--allowed-origins",
        "http://example.org",
        env={"ATMAN_ONNX_API_KEY": KEY},
    )
    yield srv
    srv.stop()


def test_api_key(keyed):
    url = keyed.url
    assert httpx.get(url + "/v1/models", timeout=10).status_code == 401
    wrong = httpx.get(url + "/v1/models", headers={"authorization": "Bearer nope"}, timeout=10)
    assert wrong.status_code == 401 and wrong.json()["type"] == "unauthorized"
    assert httpx.post(url + "/v1/explain", json={"prompt": PROMPT}, timeout=10).status_code == 401
    assert httpx.get(url + "/v1/models", headers={"authorization": f"Bearer {KEY}"}, timeout=10).status_code == 200
    assert httpx.get(url + "/v1/models", headers={"x-api-key": KEY}, timeout=10).status_code == 200
    assert httpx.get(url + "/health", timeout=10).status_code == 200


def test_cors_only_when_allowed(keyed, client):
    preflight = {
        "origin": "http://example.org",
        "access-control-request-method": "POST",
        "access-control-request-headers": "authorization, content-type",
    }
    allowed = httpx.options(keyed.url + "/v1/explain", headers=preflight, timeout=10)
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == "http://example.org"
    other = httpx.options(keyed.url + "/v1/explain", headers={**preflight, "origin": "http://evil.example"}, timeout=10)
    assert "access-control-allow-origin" not in other.headers
    assert "access-control-allow-origin" not in client.get("/health", headers={"origin": "http://example.org"}).headers


def test_concurrent_explanations_share_one_session(keyed, long_export):
    bodies = [{"prompt": slow_prompt(long_export, n), "target": TARGET, "batch_size": 4} for n in (180, 200)]

    def explain(body: dict) -> dict:
        reply = httpx.post(keyed.url + "/v1/explain", json=body, headers={"x-api-key": KEY}, timeout=60)
        assert reply.status_code == 200, reply.text
        return reply.json()

    with ThreadPoolExecutor(2) as pool:
        got = list(pool.map(explain, bodies))
    explainer = Explainer.load(long_export, provider="cpu", threads=1)
    for body, data in zip(bodies, got, strict=True):
        expected = explainer.run(ExplainRequest.from_dict(body))
        np.testing.assert_allclose(np.array(data["relevance"]), expected.relevance, atol=1e-5)
    assert got[0]["request_id"] != got[1]["request_id"]


def test_sigterm_drains(keyed, long_export):
    headers = {"authorization": f"Bearer {KEY}", **SSE}
    running, got = threading.Event(), []

    def explain() -> None:
        with httpx.stream(
            "POST", keyed.url + "/v1/explain", json=slow_body(long_export, 600), headers=headers, timeout=60
        ) as reply:
            lines = reply.iter_lines()
            for line in lines:
                if line == "event: progress":
                    running.set()
                    break
            got.extend(events(lines))

    worker = threading.Thread(target=explain, daemon=True)
    worker.start()
    assert running.wait(30)
    keyed.proc.send_signal(signal.SIGTERM)
    sent = time.monotonic()
    wait_for(lambda: httpx.get(keyed.url + "/ready", timeout=5).status_code == 503, timeout=5)
    late = httpx.post(keyed.url + "/v1/explain", json={"prompt": PROMPT}, headers={"x-api-key": KEY}, timeout=10)
    assert late.status_code == 503 and late.json()["type"] == "draining"
    assert keyed.proc.wait(timeout=35) == 0
    assert time.monotonic() - sent < 30
    worker.join(10)
    assert got and got[-1][0] == "result" and got[-1][1]["request_id"]


def test_serve_without_the_extra_says_what_to_install(monkeypatch, capsys, tiny):
    from atman_onnx.cli import main

    for name in [m for m in sys.modules if m.startswith("atman_onnx.serve")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "fastapi", None)
    assert main(["serve", str(tiny)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and 'pip install "atman-onnx[serve]"' in err and err.startswith("atman-onnx: error:")


def test_base_import_leaves_the_extra_alone():
    code = (
        "import sys, atman_onnx, atman_onnx.cli; "
        "print([m for m in ('fastapi', 'starlette', 'uvicorn', 'prometheus_client') if m in sys.modules])"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "[]", done.stderr


def test_serve_bad_folder_is_one_line(tmp_path, capsys):
    from atman_onnx.cli import main

    assert main(["serve", str(tmp_path / "missing"), "--port", "1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no exported model at" in err
    assert main(["serve", str(tmp_path), "--max-concurrent", "0"]) == 2
    assert capsys.readouterr().err == "atman-onnx: error: --max-concurrent must be at least 1, got 0\n"


@pytest.mark.slow
def test_smollm2_end_to_end(smollm2_export, tmp_path):
    """The bundled model served for real: a chat prompt explained by word, streamed, equals the library's answer."""
    folder = smollm2_export("log_additive")
    body = {
        "prompt": [{"role": "user", "content": "Alice lives in Paris and Bob lives in Rome. Where does Bob live?"}],
        "target": "Bob lives in Rome.",
        "granularity": "word",
    }
    srv = Server([folder], tmp_path / "smollm2.log")
    try:
        with httpx.Client(base_url=srv.url, timeout=120) as client:
            (described,) = client.get("/v1/models").json()["models"]
            assert described["name"] == folder.name and described["mode"] == "log_additive"
            with client.stream("POST", "/v1/explain", json=body, headers=SSE) as reply:
                assert reply.status_code == 200
                got = events(reply.iter_lines())
    finally:
        srv.stop()
    progress = [data for name, data in got if name == "progress"]
    (result,) = [data for name, data in got if name == "result"]
    assert [name for name, _ in got][-1] == "result" and progress[-1]["done"] == progress[-1]["total"]
    expected = Explainer.load(folder, provider="cpu").run(ExplainRequest.from_dict(body))
    assert [u["text"] for u in result["units"]] == [u.text for u in expected.units]
    np.testing.assert_allclose(np.array(result["relevance"]), expected.relevance, atol=1e-5)
    rome = [u["text"] for u in result["units"]].index("Rome")
    assert np.array(result["relevance"]).sum(axis=1).argmax() == rome  # the answer depends most on "Rome"


def test_images_as_base64(tiny_vlm_export, tmp_path):
    """An image-text model served: images travel as base64 in ``images``; a bad one is a 422 naming the field."""
    import base64

    from test_vision import PROMPT as IMAGE_PROMPT
    from test_vision import TARGET as IMAGE_TARGET
    from test_vision import png

    folder = tiny_vlm_export("idefics3", "log_additive")
    body = {
        "prompt": IMAGE_PROMPT,
        "target": IMAGE_TARGET,
        "images": [base64.b64encode(png(150, 100)).decode()],
        "image_units": "tile",
    }
    srv = Server([folder], tmp_path / "vlm.log")
    try:
        with httpx.Client(base_url=srv.url, timeout=60) as client:
            reply = client.post("/v1/explain", json=body)
            not_base64 = client.post("/v1/explain", json={**body, "images": ["%%%"]})
            not_image = client.post("/v1/explain", json={**body, "images": [base64.b64encode(b"GIF8").decode()]})
            not_listed = client.post("/v1/explain", json={**body, "images": "abc"})
    finally:
        srv.stop()
    assert reply.status_code == 200, reply.text
    expected = Explainer.load(folder, provider="cpu").run(ExplainRequest.from_dict(body))
    np.testing.assert_allclose(np.array(reply.json()["relevance"]), expected.relevance, atol=1e-5)
    assert [u["location"]["type"] for u in reply.json()["units"]].count("image") == 5
    assert reply.json()["images"] == body["images"]
    assert not_base64.status_code == 422 and "field 'images': image 1 is not valid base64" in not_base64.json()["error"]
    assert not_image.status_code == 422 and not_image.json()["error"].startswith(
        "field 'images': image 1: not an image Pillow can read"
    )
    assert (
        not_listed.status_code == 422
        and "field 'images' must be a list of base64 strings" in not_listed.json()["error"]
    )
