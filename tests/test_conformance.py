"""The Python runtime passes the conformance kit (conformance/, see its README): from the committed tiny folders,
every case's request gives the kit's explanation. Needs only the base install (no torch, no export), and the images
extra for the image-text cases."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

import numpy as np
import pytest

from atman_onnx import Explainer
from atman_onnx.request import ExplainRequest

KIT = Path(__file__).resolve().parents[1] / "conformance"
CASES = sorted((KIT / "cases").glob("*.json"))
CLOSE = ("relevance", "relevance_total")  # numbers: within the case's tolerance; every other field: equal


@cache
def explainer(folder: str) -> Explainer:
    return Explainer.load(KIT / folder, provider="cpu")


def test_the_kit_covers_both_modes_and_every_setting():
    names = {path.stem for path in CASES}
    assert {f"{mode}-{case}" for mode in ("log_additive", "multiplicative") for case in ("token", "chat")} <= names
    requests = [json.loads(path.read_text(encoding="utf-8"))["request"] for path in CASES]
    assert {r.get("granularity", "token") for r in requests} == {"token", "word", "sentence", "paragraph"}
    assert {r.get("target_granularity", "token") for r in requests} == {"token", "sentence", "complete"}
    assert any(r.get("conceptual") for r in requests) and any(r.get("contrast") for r in requests)
    assert any(r.get("target") is None for r in requests) and any(r.get("schedule") == "naive" for r in requests)
    assert {r.get("image_units", "region") for r in requests if r.get("images")} == {"region", "tile"}  # contract 4


@pytest.mark.parametrize("path", CASES, ids=[path.stem for path in CASES])
def test_runtime_gives_the_kit_explanation(path):
    case = json.loads(path.read_text(encoding="utf-8"))
    if case["request"].get("images"):
        pytest.importorskip("PIL", reason="image-text cases need the images extra (Pillow)")
    want = case["explanation"]
    got = json.loads(explainer(case["model"]).run(ExplainRequest.from_dict(case["request"])).to_json())
    for field in want:
        if field in CLOSE:
            np.testing.assert_allclose(got[field], want[field], rtol=0, atol=case["tolerance"], err_msg=field)
        else:
            assert got[field] == want[field], field
