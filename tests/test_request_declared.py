"""The request declared once: its checks, the CLI's flags, the OpenAPI schema and docs/reference/request.md are all
derived from the fields' declaration (atman_onnx/spec.py), and agree."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import pytest

from atman_onnx.cli import _request_options, parser
from atman_onnx.core.errors import InputError
from atman_onnx.request import FIELDS, IMAGE_UNITS, MAX_FACTOR, MAX_GRID, ExplainRequest
from atman_onnx.runtime.groups import GRANULARITIES
from atman_onnx.runtime.plan import SCHEDULES
from atman_onnx.serve.schema import explain_request, tokenize_request
from atman_onnx.spec import declared, spec

ROOT = Path(__file__).resolve().parents[1]
FLAGS = [
    "--prompt",
    "--target",
    "--factor",
    "--conceptual",
    "--granularity",
    "--refine-top-k",
    "--refine-mass",
    "--max-passes",
    "--group-level",
    "--span",
    "--delimiter",
    "--document",
    "--include-template",
    "--contrast",
    "--target-granularity",
    "--max-new-tokens",
    "--batch-size",
    "--chunk-size",
    "--schedule",
    "--image",
    "--image-units",
    "--grid",
]
GOOD = {
    "prompt": "The dog met the fox.",
    "target": " in the garden",
    "factor": 0.5,
    "conceptual": 1,
    "granularity": "spans",
    "spans": [[0, 3]],
    "batch_size": 2,
    "schedule": "naive",
    "image_units": "token",
    "grid": MAX_GRID,
}
BAD = [  # one field wrong each: the request refuses it, and so does the schema
    {"factor": -0.5},
    {"factor": MAX_FACTOR * 2},
    {"factor": "1"},
    {"conceptual": 0},
    {"conceptual": 1.5},
    {"granularity": "letter"},
    {"granularity": ["paragraph", "letter"]},
    {"refine_top_k": 0},
    {"refine_mass": 0},
    {"refine_mass": 1.5},
    {"max_passes": 1},
    {"group_level": "always"},
    {"target_granularity": "word"},
    {"schedule": "fast"},
    {"image_units": "pixel"},
    {"grid": 0},
    {"grid": MAX_GRID + 1},
    {"max_new_tokens": 0},
    {"batch_size": 0},
    {"batch_size": 1.5},
    {"include_template": 1},
    {"spans": [[0]]},
    {"prompt": [{"role": "user"}]},
    {"target": 3},
    {"temperature": 1.0},
]


def test_every_field_has_a_flag():
    options = argparse.ArgumentParser()
    _request_options(options)
    flags = {a.dest: a.option_strings for a in options._actions if a.dest in FIELDS}
    assert list(flags) == list(FIELDS) and [s for strings in flags.values() for s in strings] == FLAGS
    args = parser().parse_args(
        [
            "explain",
            "dir",
            "--prompt",
            "The dog",
            "--span",
            "0:3",
            "--span",
            "4:7",
            "--granularity",
            "spans",
            "--grid",
            "2",
            "--include-template",
        ]
    )
    assert args.spans == [(0, 3), (4, 7)] and args.grid == 2 and args.include_template is True
    assert not hasattr(args, "factor")  # not given: the request's default applies


@pytest.mark.parametrize(
    "flag, word, message",
    [
        ("--span", "0-3", "argument --span: '0-3' is not START:END"),
        ("--grid", "two", "argument --grid: 'two' is not an integer"),
        ("--factor", "x", "argument --factor: 'x' is not a number"),
        ("--schedule", "fast", "argument --schedule: invalid choice: 'fast'"),
    ],
)
def test_a_bad_flag_word_is_named(flag, word, message, capsys):
    with pytest.raises(SystemExit):
        parser().parse_args(["explain", "dir", "--prompt", "The dog", flag, word])
    assert message in capsys.readouterr().err


def test_schema_carries_types_bounds_and_choices():
    body = explain_request()
    properties = body["properties"]
    assert body["required"] == ["prompt"] and list(properties) == ["model", *FIELDS]
    name, levels = properties["granularity"]["anyOf"]
    assert name["enum"] == list(GRANULARITIES) and levels["items"]["enum"] == list(GRANULARITIES)
    assert properties["schedule"]["enum"] == list(SCHEDULES)
    assert properties["image_units"]["enum"] == list(IMAGE_UNITS)
    assert properties["factor"] | {"description": ""} == {
        "type": "number",
        "minimum": 0,
        "maximum": MAX_FACTOR,
        "default": 0.0,
        "description": "",
    }
    assert properties["conceptual"]["type"] == ["number", "null"]
    assert (properties["conceptual"]["exclusiveMinimum"], properties["conceptual"]["maximum"]) == (0, 1)
    assert properties["batch_size"]["minimum"] == 1 and properties["grid"]["maximum"] == MAX_GRID
    assert properties["spans"]["anyOf"][1] == {"type": "null"} and properties["images"]["default"] == []
    assert tokenize_request()["properties"]["prompt"] == properties["prompt"]


def test_schema_and_checks_agree():
    jsonschema = pytest.importorskip("jsonschema")
    validator = jsonschema.Draft202012Validator(explain_request())
    assert validator.is_valid(GOOD) and ExplainRequest.from_dict(GOOD)
    for change in BAD:
        body = {**GOOD, **change}
        assert not validator.is_valid(body), change
        with pytest.raises(InputError):
            ExplainRequest.from_dict(body)


@pytest.mark.parametrize("change", [c for c in BAD if "temperature" not in c])
def test_each_refusal_is_one_line_naming_the_field(change):
    with pytest.raises(InputError) as error:
        ExplainRequest.from_dict({**GOOD, **change})
    (name,) = change
    assert str(error.value).startswith(f"field {name!r}") and "\n" not in str(error.value)


def test_a_new_field_is_one_declaration():
    @dataclass(frozen=True)
    class Options:
        levels: str = spec("how to split", default="word", choices=("word", "sentence"))
        max_passes: int | None = spec("most graph passes; unset: no limit", default=None, ge=1)

    fields = declared(Options, {})
    assert fields["max_passes"].schema() == {
        "type": ["integer", "null"],
        "minimum": 1,
        "description": "most graph passes; unset: no limit",
        "default": None,
    }
    assert fields["levels"].schema()["enum"] == ["word", "sentence"] and fields["max_passes"].flag == "--max-passes"
    fields["max_passes"].checker()(None)
    with pytest.raises(InputError, match="^field 'max_passes': max passes must be at least 1, got 0$"):
        fields["max_passes"].checker()(0)
    with pytest.raises(InputError, match="^field 'levels': unknown levels 'page'; available: word, sentence$"):
        fields["levels"].checker()("page")

    @dataclass(frozen=True)
    class Unknown:
        tags: frozenset[str] = spec("a type with no Kind", default=frozenset())

    with pytest.raises(TypeError, match="no Kind for frozenset"):
        declared(Unknown, {})


def test_reference_doc_is_generated(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "tools"))
    from reference import REQUEST, request_table

    assert REQUEST.read_text(encoding="utf-8") == request_table(), "run python tools/reference.py"
