"""The explanation JSON: format 2 adds each unit's typed location, format 3 the images, format 4 the levels of a
search and warnings; older files still load."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from test_html import make_explanation

from atman_onnx import Explanation, ImageBox, TextSpan, Unit
from atman_onnx.core.errors import InputError
from atman_onnx.runtime.search import Level

V1 = Path(__file__).with_name("data") / "explanation-v1.json"
V2 = Path(__file__).with_name("data") / "explanation-v2.json"
V3 = Path(__file__).with_name("data") / "explanation-v3.json"
NEW = (
    "format_version",
    "images",
    "levels",
    "warnings",
    "target_granularity",
)  # written by format 4 where older files lack them


def test_version_1_file_loads_with_text_locations():
    data = json.loads(V1.read_text())
    assert data["format_version"] == 1 and "location" not in data["units"][1]
    old = Explanation.from_json(V1.read_text())
    want = make_explanation()
    assert old.units == want.units and old.tokens == want.tokens
    assert np.array_equal(old.relevance, want.relevance) and old.timings == want.timings
    assert old.units[1].location == TextSpan("prompt", 0, 12)
    again = json.loads(old.to_json())  # written again, it is a version-4 file with the same fields
    assert again["format_version"] == 4 and again["images"] == [] and again["warnings"] == []
    assert {k: v for k, v in again.items() if k not in NEW} == {
        **{k: v for k, v in data.items() if k not in ("format_version", "units")},
        "units": [{**u, "location": again["units"][i]["location"]} for i, u in enumerate(data["units"])],
    }


def test_version_2_file_loads_without_images():
    data = json.loads(V2.read_text())
    assert data["format_version"] == 2 and "images" not in data
    old = Explanation.from_json(V2.read_text())
    want = make_explanation()
    assert old.units == want.units and np.array_equal(old.relevance, want.relevance) and old.images == ()
    again = json.loads(old.to_json())
    assert {k: v for k, v in again.items() if k not in NEW} == {k: v for k, v in data.items() if k != "format_version"}


def test_version_3_file_loads_without_levels():
    data = json.loads(V3.read_text())
    assert data["format_version"] == 3 and "levels" not in data
    old = Explanation.from_json(V3.read_text())
    assert old.levels == () and old.warnings == () and old.units == make_explanation().units
    again = json.loads(old.to_json())
    assert {k: v for k, v in again.items() if k not in NEW} == {k: v for k, v in data.items() if k not in NEW}
    assert again["levels"] == [{"granularity": "token", "units": again["units"], "relevance": again["relevance"]}]


def test_version_4_keeps_every_level_and_the_finest_on_top():
    flat = make_explanation()
    coarse = Level("paragraph", (flat.units[1],), np.array([[1.5, 0.25]], dtype=np.float32))
    fine = Level("token", tuple(flat.units), flat.relevance)
    searched = replace(flat, levels=(coarse, fine), warnings=("paragraph 'x' covers the whole prompt",))
    data = json.loads(searched.to_json())
    assert data["format_version"] == 4 and [level["granularity"] for level in data["levels"]] == ["paragraph", "token"]
    assert data["levels"][-1]["units"] == data["units"] and data["levels"][-1]["relevance"] == data["relevance"]
    again = Explanation.from_json(searched.to_json())
    assert [level.units for level in again.levels] == [coarse.units, fine.units]
    assert np.array_equal(again.levels[0].relevance, coarse.relevance) and again.warnings == searched.warnings
    data["levels"][0]["relevance"] = [[1.0]]
    with pytest.raises(InputError, match=r"field 'levels\[0\].relevance' must be finite numbers, one row per unit"):
        Explanation.from_json(json.dumps(data))


def test_version_4_types_every_location_and_carries_images():
    data = json.loads(make_explanation().to_json())
    assert data["format_version"] == 4 and data["images"] == []
    assert data["units"][1] == {
        "text": "<b>Paris</b>",
        "start": 0,
        "end": 12,
        "segment": "prompt",
        "positions": [1],
        "location": {"type": "text", "segment": "prompt", "start": 0, "end": 12},
    }
    assert data["units"][5]["location"] == {"type": "text", "segment": "target", "start": 0, "end": 3}


def test_image_box_round_trips():
    explanation = make_explanation()
    box = ImageBox(image=0, left=0.25, top=0.0, width=0.25, height=0.5)
    units = [*explanation.units[:-1], Unit("image 0, region (0, 1)", 0, 0, "image", (5,), box)]
    with_image = replace(explanation, units=units)
    data = json.loads(with_image.to_json())
    assert data["units"][-1]["location"] == {
        "type": "image",
        "image": 0,
        "left": 0.25,
        "top": 0.0,
        "width": 0.25,
        "height": 0.5,
    }
    again = Explanation.from_json(with_image.to_json())
    assert again.units == units and again.units[-1].location == box
    pictured = Explanation.from_json(replace(with_image, images=(b"\x89PNG fake", b"GIF89a")).to_json())
    assert pictured.images == (b"\x89PNG fake", b"GIF89a")


def test_newer_format_is_refused_in_one_line():
    data = json.loads(make_explanation().to_json())
    data["format_version"] = 5
    with pytest.raises(InputError, match="format_version 5 is newer than this atman-onnx reads"):
        Explanation.from_json(json.dumps(data))


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda d: d.pop("units"), "field 'units' is missing"),
        (
            lambda d: d.update(suppression_factor="0"),
            "field 'suppression_factor' must be a finite number, got a string",
        ),
        (
            lambda d: d.update(conceptual_threshold=True),
            "field 'conceptual_threshold' must be a finite number, got a boolean",
        ),
        (lambda d: d["units"][1].update(positions=[1.5]), "field 'units[1].positions' must be a list of integers"),
        (lambda d: d["units"][1].update(positions=[99]), "field 'units[1].positions' must list fed positions, 0 to 5"),
        (lambda d: d["tokens"].__setitem__(0, "<s>"), "tokens[0] must be an object, got a string"),
        (
            lambda d: d["relevance"][0].append(1.0),
            "field 'relevance' must be finite numbers, one row per unit and one column per target token (6 x 2)",
        ),
        (lambda d: d["relevance"][0].__setitem__(0, float("nan")), "field 'relevance' must be finite numbers"),
        (lambda d: d["timings"].update(total_s=None), "field 'timings.total_s' must be a finite number, got null"),
        (
            lambda d: d["units"][1].update(location={"type": "image", "image": 0, "left": "0"}),
            "field 'units[1].location.left' must be a finite number, got a string",
        ),
        (lambda d: d.update(images=["%%%"]), "field 'images' must be base64 strings"),
        (lambda d: d.update(format_version="3"), "field 'format_version' must be an integer, got a string"),
    ],
)
def test_a_file_that_is_not_an_explanation_is_refused_naming_the_field(change, message):
    data = json.loads(make_explanation().to_json())
    change(data)
    with pytest.raises(InputError) as error:
        Explanation.from_json(json.dumps(data))
    assert str(error.value).startswith(f"not an explanation: {message}")


def test_text_that_is_not_json_or_not_an_object_is_refused():
    with pytest.raises(InputError, match="^not an explanation: not JSON"):
        Explanation.from_json("{")
    with pytest.raises(InputError, match="^not an explanation: the file must be an object, got a list$"):
        Explanation.from_json("[]")
