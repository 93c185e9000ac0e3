"""Clients of a real server of the tiny model: the README's snippets (curl, Python, Node.js), run as written but for
the address and the model's name, and `tools/load.py` for a few seconds."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("httpx")
from test_serve import Server, slow_prompt

ROOT = Path(__file__).resolve().parents[1]
README_URL, README_MODEL = "http://127.0.0.1:8000", "smollm2-log_additive"


def snippet(name: str) -> str:
    """The fenced block after ``<!-- snippet:NAME -->`` in the README."""
    found = re.search(rf"<!-- snippet:{name} -->\n```\w*\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert found, f"no snippet {name!r} in README.md"
    return found.group(1)


@pytest.fixture(scope="module")
def tiny(tiny_export) -> Path:
    return tiny_export("llama", "log_additive")


@pytest.fixture(scope="module")
def server(tiny, tmp_path_factory):
    """One explanation running and one queued, so that a burst of four gets two 503s."""
    srv = Server([tiny], tmp_path_factory.mktemp("logs") / "clients.log", "--max-concurrent", "1", "--max-queued", "1")
    yield srv
    srv.stop()


def run_snippet(name: str, command: list[str], server: Server, tiny: Path) -> str:
    code = snippet(name).replace(README_URL, server.url).replace(README_MODEL, tiny.name)
    done = subprocess.run([*command, code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_readme_curl(server, tiny):
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    reply = json.loads(run_snippet("curl", ["bash", "-c"], server, tiny))
    assert reply["request_id"] == "readme-curl" and len(reply["relevance"]) == len(reply["units"])


@pytest.mark.parametrize("name", ["python", "node"])
def test_readme_clients_print_the_top_words(server, tiny, name):
    command = {"python": [sys.executable, "-c"], "node": ["node", "--input-type=module", "-e"]}[name]
    if shutil.which(command[0]) is None:
        pytest.skip(f"{command[0]} is not installed")
    lines = run_snippet(name, command, server, tiny).splitlines()
    assert len(lines) == 6 and re.fullmatch(r"request [0-9a-f]{32}", lines[-1])
    assert all(re.fullmatch(r'[+-]\d+\.\d{3} ["\'].*["\']', line) for line in lines[:5]), lines


def test_load_tool(server, tiny, tmp_path):
    out = tmp_path / "load.json"
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "tools" / "load.py"),
            server.url,
            "--prompt",
            slow_prompt(tiny, 110),
            "--target",
            " sun.",
            "--batch-size",
            "1",
            "--clients",
            "2",
            "--seconds",
            "3",
            "--pid",
            str(server.proc.pid),
            "--burst",
            "2",
            "--cost",
            "--folder",
            str(tiny),
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(out.read_text())
    load, burst, cost = report["load"], report["burst"], report["cost"]
    assert load["requests"] >= 2 and load["statuses"] == {"200": load["requests"]} and load["throughput_per_s"] > 0
    assert 0 < load["p50_s"] <= load["p95_s"] and load["rss_mb"][0][1] > 0
    assert load["rss_growth_after_2min_mb"] is None  # a 3 s run has no minute 2
    assert burst == {"sent": 4, "extra": 2, "statuses": {"200": 2, "503": 2}, "equal_to_library": 2, "ok": True}
    assert cost["service_s"] > 0 and cost["library_s"] > 0
    assert "| burst | ok | True |" in done.stdout and "| load | p95_s |" in done.stdout
