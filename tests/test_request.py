"""ExplainRequest: one validated request for the API, the command line and JSON bodies."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest

from atman_onnx import Explainer, ExplainRequest
from atman_onnx.cli import parser
from atman_onnx.cli.commands import request_from
from atman_onnx.core.errors import InputError

FULL = {
    "prompt": [{"role": "user", "content": "Where is the fox?"}],
    "target": " in the garden",
    "factor": 0.1,
    "conceptual": 0.7,
    "granularity": "spans",
    "refine_top_k": 2,
    "refine_mass": 0.5,
    "max_passes": 40,
    "group_level": "off",
    "spans": [[0, 5], [6, 8]],
    "delimiter": None,
    "documents": None,
    "include_template": True,
    "contrast": " at home",
    "target_granularity": "token",
    "max_new_tokens": 7,
    "batch_size": 3,
    "chunk_size": 64,
    "schedule": "naive",
    "images": ["R0lGODlhAQABAAAAACw="],
    "image_units": "tile",
    "grid": 3,
}


def test_round_trips_through_json():
    request = ExplainRequest.from_dict(json.loads(json.dumps(FULL)))
    assert request.to_dict() == FULL
    assert ExplainRequest.from_dict(json.loads(json.dumps(request.to_dict()))) == request
    assert request.spans == ((0, 5), (6, 8))
    minimal = ExplainRequest.from_dict({"prompt": "The dog"})
    assert minimal.to_dict()["factor"] == 0.0 and minimal.target is None and minimal.granularity == "token"


@pytest.mark.parametrize(
    "change, message",
    [
        ({"temperature": 1.0}, "unknown field 'temperature'; fields: prompt, target, factor"),
        ({"factor": "0.1"}, "field 'factor' must be a number, got '0.1' (str)"),
        ({"factor": True}, "field 'factor' must be a number"),
        ({"max_new_tokens": 1.5}, "field 'max_new_tokens' must be an integer"),
        ({"batch_size": "4"}, "field 'batch_size' must be an integer or null"),
        ({"spans": [[0]]}, "field 'spans' must be a list of [start, end] integer pairs"),
        ({"include_template": "yes"}, "field 'include_template' must be true or false"),
        ({"prompt": [{"role": "user"}]}, "field 'prompt' must be a string or a list of chat messages"),
        ({"prompt": 42}, "field 'prompt' must be a string"),
        ({"target": ""}, "the target is empty"),
        ({"prompt": "  "}, "the prompt is empty"),
        ({"factor": -1}, "suppression factor must be a number from 0 to 1e+06, got -1"),
        ({"factor": float("nan")}, "suppression factor must be a number from 0 to 1e+06, got nan"),
        ({"factor": 1e39}, "suppression factor must be a number from 0 to 1e+06, got 1e+39"),
        ({"factor": 10**400}, "suppression factor must be a number from 0 to 1e+06, got a larger one"),
        ({"conceptual": 0}, "conceptual threshold must lie in (0, 1]"),
        ({"batch_size": 0}, "batch size must be at least 1"),
        ({"granularity": "letter"}, "unknown granularity 'letter'; available: token, word"),
        ({"schedule": "fast"}, "unknown schedule 'fast'; available: prefix, naive"),
        ({"granularity": "spans", "spans": None}, "granularity 'spans' needs character spans or a delimiter"),
        ({"granularity": "word", "spans": [[0, 3]]}, "spans and delimiter need granularity 'spans', not 'word'"),
        ({"granularity": "sentence,paragraph"}, "go coarse to fine (document > spans > paragraph > sentence > word"),
        ({"granularity": "sentence,sentence"}, "so 'sentence' cannot follow 'sentence'"),
        ({"granularity": "para,sentence"}, "field 'granularity': unknown granularity 'para'; available: token"),
        ({"target_granularity": "word"}, "unknown target granularity 'word'; available: token, sentence, complete"),
    ],
)
def test_bad_fields_are_named(change, message):
    with pytest.raises(InputError) as error:
        ExplainRequest.from_dict({**FULL, **change})
    assert message in str(error.value)


def test_missing_prompt_and_non_object():
    with pytest.raises(InputError, match="field 'prompt' is required"):
        ExplainRequest.from_dict({"target": " x"})
    with pytest.raises(InputError, match="a request is a JSON object, got list"):
        ExplainRequest.from_dict([])


def test_cli_flags_build_the_same_request(tmp_path):
    image = tmp_path / "one.gif"
    image.write_bytes(base64.b64decode(FULL["images"][0]))
    args = parser().parse_args(
        [
            "explain",
            "dir",
            "--prompt",
            "Where is the fox?",
            "--chat",
            "--target",
            " in the garden",
            "--factor",
            "0.1",
            "--conceptual",
            "0.7",
            "--granularity",
            "spans",
            "--refine-top-k",
            "2",
            "--refine-mass",
            "0.5",
            "--max-passes",
            "40",
            "--group-level",
            "off",
            "--span",
            "0:5",
            "--span",
            "6:8",
            "--include-template",
            "--contrast",
            " at home",
            "--max-new-tokens",
            "7",
            "--batch-size",
            "3",
            "--chunk-size",
            "64",
            "--schedule",
            "naive",
            "--image",
            str(image),
            "--image-units",
            "tile",
            "--grid",
            "3",
        ]
    )
    assert request_from(args) == ExplainRequest.from_dict(FULL)
    plain = request_from(parser().parse_args(["explain", "dir", "--prompt", "The dog"]))
    assert plain == ExplainRequest(prompt="The dog")  # flags not given take the request's defaults


def test_explain_options_are_the_request(runtime_model):
    explainer = Explainer.load(runtime_model("log_additive"), provider="cpu")
    options = {"factor": 0.1, "granularity": "word", "batch_size": 4}
    by_options = explainer.explain("The dog met the fox.", " in the garden", **options)
    by_request = explainer.run(ExplainRequest(prompt="The dog met the fox.", target=" in the garden", **options))
    assert np.array_equal(by_options.relevance, by_request.relevance) and by_options.units == by_request.units
    assert np.abs(by_options.relevance).max() > 1e-3
    with pytest.raises(InputError, match="unknown field 'granularty'"):
        explainer.explain("The dog met the fox.", " in the garden", granularty="word")
