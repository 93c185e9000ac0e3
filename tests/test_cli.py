"""The command line and the Explanation object: outputs, JSON round trip, and one-line errors for bad input."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np
import pytest

from atman_onnx import Explainer, Explanation
from atman_onnx.cli import main
from atman_onnx.core.errors import AtmanError
from atman_onnx.outputs import write_all
from atman_onnx.runtime.factors import DEFAULT_FACTOR
from atman_onnx.runtime.providers import gpu_expected


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "atman_onnx.cli", *args], capture_output=True, text=True, timeout=300)


def test_explain_writes_documented_json(runtime_model, tmp_path):
    out = tmp_path / "e.json"
    done = run_cli(
        "explain",
        str(runtime_model("log_additive")),
        "--prompt",
        "The dog met the fox",
        "--target",
        " in the garden",
        "--json",
        str(out),
        "--provider",
        "cpu",
    )
    assert done.returncode == 0, done.stderr
    assert "most relevant prompt tokens" in done.stdout
    assert done.stderr.startswith("provider: cpu (requested)") == gpu_expected()  # named on GPU installs only
    data = json.loads(out.read_text())
    n_fed = len(data["prompt_ids"]) + len(data["target_ids"]) - 1
    assert len(data["tokens"]) == len(data["relevance"]) == n_fed
    assert all(len(row) == len(data["target_ids"]) for row in data["relevance"])
    assert data["mode"] == "log_additive" and data["suppression_factor"] == DEFAULT_FACTOR
    for token in data["tokens"]:
        if token["segment"] == "prompt" and token["end"] > token["start"]:
            assert data["prompt"][token["start"] : token["end"]].strip() == token["text"].strip()


def test_json_round_trip(tiny_export):
    explainer = Explainer.load(tiny_export("gpt2", "log_additive"), provider="cpu")
    explanation = explainer.explain("The dog met the fox", " in the garden", conceptual=0.5)
    again = Explanation.from_json(explanation.to_json())
    assert again.tokens == explanation.tokens and again.units == explanation.units
    assert again.target_ids == explanation.target_ids
    assert np.array_equal(again.relevance, explanation.relevance)
    assert again.conceptual_threshold == 0.5 and again.mode == "log_additive"
    assert "48;2;" in explanation.to_text(color=True) and "\x1b" not in explanation.to_text()


def test_generated_target(runtime_model):
    explainer = Explainer.load(runtime_model("multiplicative"), provider="cpu")
    explanation = explainer.explain("The capital of France is", max_new_tokens=4)
    assert 1 <= len(explanation.target_ids) <= 4
    assert explanation.relevance.shape == (len(explanation.tokens), len(explanation.target_ids))


def _bad_folders(tmp_path, tiny_export):
    good = tiny_export("gpt2", "log_additive")
    empty = tmp_path / "empty"
    empty.mkdir()
    old = tmp_path / "old"
    shutil.copytree(good, old)
    manifest = json.loads((old / "atman.json").read_text())
    manifest["contract_version"] = 0
    (old / "atman.json").write_text(json.dumps(manifest))
    return good, empty, old


@pytest.mark.parametrize(
    "case, expect",
    [
        ("empty_prompt", "the prompt is empty"),
        ("empty_target", "the target is empty"),
        ("too_long", "longer than the model's 128 positions"),
        ("no_manifest", "has no atman.json"),
        ("old_contract", "graph contract version 0"),
        ("unknown_provider", "unknown provider 'tpu'; available: cuda, cpu"),
        ("zero_batch", "batch size must be at least 1"),
        ("huge_factor", "suppression factor must be a number from 0 to 1e+06, got 1e+39"),
        ("nan_budget", "memory budget must be a positive number of MB, got nan"),
        ("negative_threads", "threads must be at least 1, got -1"),
    ],
)
def test_bad_input_gets_one_line(case, expect, tmp_path, tiny_export):
    good, empty, old = _bad_folders(tmp_path, tiny_export)
    args = {"dir": str(good), "--prompt": "The dog met the fox", "--target": " in the garden"}
    if case == "empty_prompt":
        args["--prompt"] = " "
    elif case == "empty_target":
        args["--target"] = ""
    elif case == "too_long":
        args["--prompt"] = "the dog " * 200
    elif case == "no_manifest":
        args["dir"] = str(empty)
    elif case == "old_contract":
        args["dir"] = str(old)
    out = tmp_path / "out.json"
    extra = {
        "unknown_provider": ["--provider", "tpu"],
        "zero_batch": ["--batch-size", "0"],
        "huge_factor": ["--factor", "1e39"],
        "nan_budget": ["--memory-budget-mb", "nan"],
        "negative_threads": ["--threads", "-1"],
    }.get(case, [])
    done = run_cli("explain", args.pop("dir"), *[x for kv in args.items() for x in kv], "--json", str(out), *extra)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr
    assert expect in lines[0]
    assert not out.exists() and not list(tmp_path.glob(".out.json*"))


def test_outputs_are_written_whole_or_not_at_all(tmp_path, monkeypatch):
    made = tempfile.mkstemp

    def full_on_the_second(*args, **kwargs):
        if any(tmp_path.iterdir()):
            raise OSError(28, "No space left on device")
        return made(*args, **kwargs)

    with monkeypatch.context() as patched:
        patched.setattr(tempfile, "mkstemp", full_on_the_second)
        with pytest.raises(AtmanError, match=r"^cannot write .*b\.html: No space left on device$"):
            write_all([(tmp_path / "a.json", b"{}"), (tmp_path / "b.html", b"<p>")])
    assert list(tmp_path.iterdir()) == []
    with monkeypatch.context() as patched:
        patched.setattr(os, "replace", lambda *args: (_ for _ in ()).throw(OSError(5, "Input/output error")))
        with pytest.raises(AtmanError, match="cannot write .*a.json: Input/output error"):
            write_all([(tmp_path / "a.json", b"{}")])
    assert list(tmp_path.iterdir()) == []
    umask = os.umask(0o022)
    try:
        write_all([(tmp_path / "a.json", "▸ é".encode())])
    finally:
        os.umask(umask)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o644  # not mkstemp's 0600
    assert (tmp_path / "a.json").read_text(encoding="utf-8") == "▸ é"


def test_an_output_path_that_cannot_be_written_is_refused_before_explaining(tmp_path, capsys):
    (tmp_path / "folder").mkdir()
    assert main(["explain", str(tmp_path), "--prompt", "a dog", "--json", str(tmp_path / "folder")]) == 2
    assert capsys.readouterr().err == f"atman-onnx: error: cannot write {tmp_path / 'folder'}: it is a folder\n"
