"""Readable explanations: word/sentence/span groups, chat prompts, contrastive targets, terminal output."""

from __future__ import annotations

import numpy as np
import pytest

from atman_onnx import Explainer
from atman_onnx.core.errors import InputError
from atman_onnx.models.reference import reference_relevance
from atman_onnx.runtime.groups import text_spans
from atman_onnx.runtime.text import TextCodec
from conftest import MODES

PROMPT = "The dog met the fox. The fox ran to the garden!\n\nParis is the capital of France. The capital of"
TARGET = " France is Paris"


def test_text_spans():
    text = "Alice met Bob's dog. Bob ran!\n\nNew one."
    assert [text[a:b] for a, b in text_spans(text, "word")] == [
        "Alice",
        "met",
        "Bob's",
        "dog",
        ".",
        "Bob",
        "ran",
        "!",
        "New",
        "one",
        ".",
    ]
    assert [text[a:b] for a, b in text_spans(text, "sentence")] == ["Alice met Bob's dog.", "Bob ran!", "New one."]
    assert [text[a:b] for a, b in text_spans(text, "paragraph")] == ["Alice met Bob's dog. Bob ran!", "New one."]
    assert [text[a:b] for a, b in text_spans(text, "spans", delimiter="!")] == [
        "Alice met Bob's dog. Bob ran",
        "New one.",
    ]
    assert [text[a:b] for a, b in text_spans(text, "spans", delimiter=".")] == [
        "Alice met Bob's dog",
        "Bob ran!\n\nNew one",
    ]  # a trailing delimiter is left out too
    assert [("a;b;c;"[a:b]) for a, b in text_spans("a;b;c;", "spans", delimiter=";", within=[(2, 6)])] == ["b", "c"]
    assert text_spans(text, "spans", spans=[(6, 9), (0, 5)]) == [(0, 5), (6, 9)]
    with pytest.raises(InputError, match="outside the prompt"):
        text_spans(text, "spans", spans=[(5, 500)])


@pytest.mark.parametrize("granularity", ["word", "sentence", "paragraph"])
def test_groups_cover_their_text(granularity, tiny_export):
    explanation = Explainer.load(tiny_export("llama", "log_additive"), provider="cpu").explain(
        PROMPT, TARGET, granularity=granularity
    )
    prompt_units = [u for u in explanation.units if u.segment == "prompt"]
    for unit in prompt_units:
        assert explanation.prompt[unit.start : unit.end] == unit.text
        joined = "".join(explanation.tokens[p].text for p in unit.positions)
        assert unit.text.replace(" ", "") in joined.replace(" ", "")
    assert len(prompt_units) == len(text_spans(PROMPT, granularity))
    assert explanation.relevance.shape == (len(explanation.units), len(explanation.target_ids))


@pytest.mark.parametrize("mode", MODES)
def test_group_parity(mode, tiny_export, tiny_model_dir):
    from transformers import AutoModelForCausalLM

    explainer = Explainer.load(tiny_export("gpt2", mode), provider="cpu")
    for granularity, kwargs in [("sentence", {}), ("spans", {"spans": [(0, 7), (21, 48)]}), ("word", {})]:
        result = explainer.explain(PROMPT, TARGET, granularity=granularity, conceptual=0.3, **kwargs)
        want = reference_relevance(
            AutoModelForCausalLM.from_pretrained(tiny_model_dir("gpt2")),
            mode,
            result.prompt_ids,
            result.target_ids,
            factor=result.suppression_factor,
            conceptual=0.3,
            groups=[list(u.positions) for u in result.units],
        )
        assert np.abs(result.relevance - want).max() < 1e-5
        assert np.abs(want).max() > 1e-3


def test_chat_explains_only_message_content(tiny_export):
    explainer = Explainer.load(tiny_export("llama", "log_additive"), provider="cpu")
    messages = [{"role": "user", "content": "Where is the fox?"}]
    explanation = explainer.explain(messages, " in the garden")
    start = explanation.prompt.index("Where is the fox?")
    prompt_units = [u for u in explanation.units if u.segment == "prompt"]
    assert "<user>" in explanation.prompt and "<assistant>" in explanation.prompt
    assert all(start <= u.end and u.start < start + 17 for u in prompt_units)
    assert "".join(u.text for u in prompt_units).strip() == "Where is the fox?"
    everything = explainer.explain(messages, " in the garden", include_template=True)
    assert len([u for u in everything.units if u.segment == "prompt"]) == len(everything.prompt_ids)


def test_chat_templates_render_as_transformers_does(tiny_export, tiny_tokenizer):
    codec = Explainer.load(tiny_export("llama", "log_additive"), provider="cpu").codec
    codec.chat_template = "Today: {{ strftime_now('%d %b %Y') }}\n{% for m in messages %}{{ m.content }}{% endfor %}"
    messages = [{"role": "user", "content": "Where is the fox?"}]
    want = tiny_tokenizer.apply_chat_template(messages, chat_template=codec.chat_template, tokenize=False)
    assert codec.render_chat(messages) == want and "%" not in want  # Llama 3's templates date their prompts so


def test_contrast_is_difference_of_log_prob_changes(tiny_export):
    explainer = Explainer.load(tiny_export("llama", "multiplicative"), provider="cpu")
    contrastive = explainer.explain(PROMPT, TARGET, contrast=" the fox", granularity="word")
    n = len(contrastive.units)
    target = explainer.explain(PROMPT, TARGET, granularity="word").relevance.sum(axis=1)[:n]
    contrast = explainer.explain(PROMPT, " the fox", granularity="word").relevance.sum(axis=1)[:n]
    assert contrastive.relevance.shape == (n, 1)
    assert all(u.segment == "prompt" for u in contrastive.units)
    assert np.abs(contrastive.relevance[:, 0] - (target - contrast)).max() < 1e-5
    assert np.abs(contrastive.relevance).max() > 1e-3


def test_terminal_heatmap_colours_and_plain_text(tiny_export):
    explanation = Explainer.load(tiny_export("gpt2", "log_additive"), provider="cpu").explain(
        PROMPT, TARGET, granularity="word"
    )
    coloured = explanation.to_text(color=True)
    assert "48;2;255;" in coloured  # a red (positive) background from rich
    plain = explanation.to_text()
    assert "\x1b" not in plain and "garden[" in plain and "word granularity" in plain


@pytest.mark.slow
@pytest.mark.parametrize("granularity", ["word", "sentence"])
def test_smollm2_groups_map_back_to_text(granularity, smollm2_export):
    folder = smollm2_export("log_additive")
    codec = TextCodec(folder, {})
    text = "Ilse Brandt sailed the Meridian. She taught Nora the southern stars!\n\nNora kept the lighthouse."
    explanation = Explainer.load(folder, provider="cpu").explain(text, " Nora", granularity=granularity)
    assert codec.decode(explanation.prompt_ids) == text
    assert [u.text for u in explanation.units if u.segment == "target"] == ["Nor"]  # fed: " Nor", not "a"
    for unit in explanation.units:
        source = text if unit.segment == "prompt" else explanation.target
        assert source[unit.start : unit.end] == unit.text
        covered = "".join(explanation.tokens[p].text for p in unit.positions)
        assert covered.strip() == unit.text
