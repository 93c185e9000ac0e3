"""Documents beside the question: laid out by the chat template where it takes them, else in the default layout;
only their text is explained, granularity 'document' makes each one unit, and bad lists are refused in one line."""

from __future__ import annotations

import json

import numpy as np
import pytest

from atman_onnx import Explainer, ExplainRequest
from atman_onnx.cli import main
from atman_onnx.core.errors import InputError
from atman_onnx.runtime.encode import encode_prompt

DOCUMENTS = ["The dog met the fox in the garden.", {"title": "France", "text": "The capital of France is Paris."}]
QUESTION = "The capital of France is"
TARGET = " Paris"


def test_documents_go_before_the_question_and_are_each_one_unit(runtime_model):
    explainer = Explainer.load(runtime_model("log_additive"), provider="cpu")
    explanation = explainer.explain(QUESTION, TARGET, documents=DOCUMENTS, granularity="document")
    assert explanation.prompt == (
        "Document 1:\nThe dog met the fox in the garden.\n\nDocument 2: France\nThe capital of France is Paris.\n\n"
        "The capital of France is"
    )
    assert [u.text for u in explanation.units if u.segment == "prompt"] == [
        "The dog met the fox in the garden.",
        "The capital of France is Paris.",
    ]
    sentences = explainer.explain(QUESTION, TARGET, documents=DOCUMENTS, granularity="document,sentence")
    assert all(u.segment == "target" or "Document" not in u.text for u in sentences.units)
    prompt_units = [u for u in sentences.levels[0].units if u.segment == "prompt"]
    assert len(prompt_units) == 2  # the question is not a unit, nor are the documents' headings


def test_the_question_and_headings_are_units_when_asked_for(runtime_model):
    explainer = Explainer.load(runtime_model("log_additive"), provider="cpu")
    options = {"documents": DOCUMENTS, "include_template": True}
    asked = explainer.explain(QUESTION, TARGET, granularity="sentence", **options)
    texts = [u.text for u in asked.units if u.segment == "prompt"]
    assert texts == ["Document 1:", DOCUMENTS[0], "Document 2: France", DOCUMENTS[1]["text"], QUESTION]
    chain = explainer.explain(QUESTION, TARGET, granularity="document,sentence", refine_top_k=9, **options)
    assert [u.text for u in chain.levels[0].units if u.segment == "prompt"] == texts[1:4:2]  # documents only
    plain = explainer.explain(QUESTION, TARGET, documents=DOCUMENTS, granularity="sentence")
    assert [u.text for u in plain.units if u.segment == "prompt"] == [DOCUMENTS[0], DOCUMENTS[1]["text"]]


def test_a_longer_answer_nests_under_documents(runtime_model):
    """Documents are the prompt's units; above a finer level the fed answer is one unit, so that its sentences and
    tokens nest in it (token by token they would cross it), while a flat document run keeps its tokens."""
    explainer = Explainer.load(runtime_model("log_additive"), provider="cpu")
    target = " Paris is the capital.\n\nThe dog met the fox"
    request = ExplainRequest(prompt=QUESTION, target=target, documents=DOCUMENTS, granularity="document,sentence,token")
    levels = [[u for u in units if u.segment == "target"] for units in explainer.prepare(request).levels]
    flat = explainer.explain(QUESTION, target, documents=DOCUMENTS, granularity="document")
    fed = [u.positions for u in flat.units if u.segment == "target"]  # all but the last target token, one each
    assert len(fed) > 2 and [u.positions for u in levels[0]] == [tuple(p for (p,) in fed)]
    assert [u.text[:15] for u in levels[1]] == ["Paris is the ca", "The dog met the"]
    assert [u.positions for u in levels[2]] == fed  # every answer token, the blank line's too
    chain = explainer.explain(QUESTION, target, documents=DOCUMENTS, granularity="document,sentence")
    sentences = explainer.explain(QUESTION, target, documents=DOCUMENTS, granularity="sentence")
    by_span = {(u.segment, u.start, u.end): r for u, r in zip(sentences.units, sentences.relevance)}
    for unit, row in zip(chain.levels[-1].units, chain.levels[-1].relevance):
        np.testing.assert_allclose(row, by_span[unit.segment, unit.start, unit.end], atol=1e-5, rtol=0)


def test_a_template_that_takes_documents_renders_them(runtime_model):
    explainer = Explainer.load(runtime_model("log_additive"), provider="cpu")
    codec = explainer.codec
    codec.chat_template = (
        "{% for d in documents %}<doc {{ d.title }}>{{ d.text }}</doc>\n{% endfor %}"
        "{% for m in messages %}<{{ m.role }}>{{ m.content }}\n{% endfor %}"
    )
    messages = [{"role": "user", "content": QUESTION}]
    encoded = encode_prompt(codec, messages, [("", "The dog met the fox."), ("France", "Paris is big.")])
    assert (
        encoded.text
        == "<doc >The dog met the fox.</doc>\n<doc France>Paris is big.</doc>\n<user>The capital of France is\n"
    )
    assert [encoded.text[a:b] for a, b in encoded.documents] == ["The dog met the fox.", "Paris is big."]


@pytest.mark.parametrize(
    "change, message",
    [
        ({"documents": []}, "field 'documents': the list is empty"),
        ({"documents": ["fine", "  "]}, "field 'documents': document 2 is empty"),
        ({"documents": [{"title": "x"}]}, "field 'documents' must be a list of texts or {title, text} objects"),
        ({"documents": ["Yes.", "capital of"]}, "field 'documents': the prompt already holds document 2"),
        ({"documents": None, "granularity": "document"}, "granularity 'document' needs documents"),
    ],
)
def test_bad_documents_are_refused_in_one_line(change, message):
    with pytest.raises(InputError, match=message.replace("{", r"\{").replace("}", r"\}")):
        ExplainRequest.from_dict({"prompt": QUESTION, "documents": DOCUMENTS, **change})


def test_documents_round_trip_and_come_from_files(runtime_model, tmp_path, capsys):
    request = ExplainRequest.from_dict({"prompt": QUESTION, "documents": DOCUMENTS})
    assert ExplainRequest.from_dict(json.loads(json.dumps(request.to_dict()))) == request
    first = tmp_path / "dog.txt"
    first.write_text(DOCUMENTS[0])
    out = tmp_path / "e.json"
    folder = str(runtime_model("log_additive"))
    args = ["explain", folder, "--prompt", QUESTION, "--target", TARGET, "--document", str(first), "--quiet"]
    main([*args, "--granularity", "document", "--json", str(out)])
    assert json.loads(out.read_text())["units"][0]["text"] == DOCUMENTS[0]
    with pytest.raises(SystemExit):
        main([*args[:-3], "--document", str(tmp_path / "missing.txt")])
    assert "argument --document" in capsys.readouterr().err
