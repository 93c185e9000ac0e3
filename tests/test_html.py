"""The HTML report: self-contained, every unit shown, and in a real (headless) Chromium driven by Playwright:
coloured by relevance, a unit's score on hover or tap, and recoloured for one target token."""

from __future__ import annotations

import dataclasses
import html
import re

import numpy as np
import pytest
from playwright.sync_api import Page, expect

from atman_onnx import Explanation, Token, Unit
from atman_onnx.palette import css
from atman_onnx.runtime.search import Level

PROMPT = "<b>Paris</b> & Rome:\n  capitals"
TARGET = " of France"


def make_explanation() -> Explanation:
    """Six units (a zero-width special token, four prompt pieces, one fed target token), two target tokens."""
    spans = [
        ("<s>", 0, 0, "prompt"),
        ("<b>Paris</b>", 0, 12, "prompt"),
        (" & Rome", 12, 19, "prompt"),
        (":\n", 19, 21, "prompt"),
        ("  capitals", 21, 31, "prompt"),
        (" of", 0, 3, "target"),
    ]
    tokens = [Token(*s) for s in spans]
    for text, start, end, segment in spans[1:]:
        assert (PROMPT if segment == "prompt" else TARGET)[start:end] == text
    relevance = np.array([[0.0, 0.0], [2.0, 0.5], [-1.0, -0.2], [0.1, 0.0], [0.4, 1.0], [0.05, 0.3]], np.float32)
    return Explanation(
        prompt=PROMPT,
        target=TARGET,
        prompt_ids=[1, 2, 3, 4, 5],
        target_ids=[6, 7],
        tokens=tokens,
        target_tokens=[" of", " France"],
        units=[Unit(t.text, t.start, t.end, t.segment, (i,)) for i, t in enumerate(tokens)],
        relevance=relevance,
        mode="log_additive",
        suppression_factor=0.1,
        conceptual_threshold=0.7,
        model="tiny-test",
        provider="CPUExecutionProvider",
        timings={"total_s": 0.5, "passes": 7},
    )


def units_in(dom: str) -> dict[int, dict[str, str]]:
    """data-index -> the unit span's attributes and text, from serialised HTML."""
    found = {}
    for attrs, text in re.findall(r'<span (class="unit[^"]*"(?:\s+[\w-]+="[^"]*")*)\s*>(.*?)</span>', dom, re.S):
        fields = {k: html.unescape(v) for k, v in re.findall(r'([\w-]+)="([^"]*)"', attrs)}
        fields["text"] = html.unescape(re.sub(r"<[^>]*>", "", text))  # drop the empty line-break marks
        found[int(fields["data-index"])] = fields
    return found


def test_self_contained_and_escaped():
    explanation = make_explanation()
    page = explanation.to_html()
    assert "http://" not in page and "https://" not in page
    assert "<b>Paris</b>" not in page.split("<script>")[0]  # the prompt's markup is text, not markup
    text_only = page.replace('<i class="nl"></i>', "")  # line breaks get an empty element drawn by CSS
    for unit in explanation.units:
        assert html.escape(unit.text) in text_only
    units = units_in(page)
    assert [units[i]["text"] for i in range(6)] == [u.text for u in explanation.units]
    assert all("background: rgb(" in u["style"] for u in units.values())
    assert "+2.5000" in units[1]["title"] and "target" in units[5]["class"]
    for setting in ("tiny-test", "log_additive", "0.1", "0.7", "token", "CPUExecutionProvider"):
        assert setting in page


def scaled(values: np.ndarray) -> np.ndarray:
    """Relevance as the report scales it for its colours: by the largest magnitude."""
    values = values.astype(float)
    return values / np.abs(values).max()


@pytest.fixture
def report(page: Page) -> Page:
    """The report of ``make_explanation`` open in headless Chromium."""
    page.set_content(make_explanation().to_html())
    return page


def test_chromium_shows_units_coloured_by_relevance(report):
    explanation = make_explanation()
    units = report.locator(".unit")
    assert units.all_text_contents() == [u.text for u in explanation.units]
    total = scaled(explanation.total)
    for i, value in enumerate(total):
        expect(units.nth(i)).to_have_css("background-color", css(value))
    expect(units.nth(int(total.argmax()))).to_have_css("background-color", "rgb(214, 39, 40)")  # the full red
    expect(units.nth(0)).to_have_css("background-color", "rgb(255, 255, 255)")  # zero relevance is white


def test_hovering_or_tapping_a_unit_shows_its_score(report):
    info, units = report.locator("#info"), report.locator(".unit")
    expect(info).to_have_text("Hover over or tap a token to see its score.")
    units.nth(3).hover()
    expect(info).to_have_text("#3 \u201c:\u21b5\u201d (prompt): relevance +0.1000 for all of the target (sum)")
    units.nth(5).click()  # as a tap on a phone
    expect(info).to_have_text("#5 \u201c of\u201d (target): relevance +0.3500 for all of the target (sum)")
    expect(units.nth(5)).to_contain_class("picked")
    expect(units.nth(3)).not_to_contain_class("picked")


def test_selecting_a_target_token_recolours(report):
    explanation = make_explanation()
    units = report.locator(".unit")
    report.click(".selector button[data-t='0']")
    expect(report.locator(".selector button.active")).to_have_text(" of")
    expect(report.locator("#for")).to_have_text("target token \u201c of\u201d")
    first, total = scaled(explanation.relevance[:, 0]), scaled(explanation.total)
    assert css(first[4]) != css(total[4])  # target 0 is scaled by its own max (2.0), "all" by 2.5: unit 4 changes
    for i, value in enumerate(first):
        expect(units.nth(i)).to_have_css("background-color", css(value))
    expect(units.nth(int(first.argmax()))).to_have_css("background-color", "rgb(214, 39, 40)")
    expect(units.nth(1)).to_have_attribute("title", "<b>Paris</b> \u00b7 +2.0000")
    units.nth(1).hover()
    expect(report.locator("#info")).to_have_text(
        "#1 \u201c<b>Paris</b>\u201d (prompt): relevance +2.0000 for target token \u201c of\u201d"
    )


def test_a_search_ranks_each_coarser_level_too(page: Page):
    """With levels (paragraphs, then their tokens), the report ranks the paragraphs as well as the finest units, for
    all of the target and for one target token; a search's own group level is not listed."""
    explanation = make_explanation()
    paragraphs = (
        Unit("<b>Paris</b> & Rome:", 0, 21, "prompt", (1, 2, 3)),
        Unit("  capitals", 21, 31, "prompt", (4,)),
        Unit(" of", 0, 3, "target", (5,)),
    )
    rows = np.array([[0.3, 1.5], [0.9, 0.1], [0.05, 0.3]], np.float32)
    finest = Level("token", tuple(explanation.units), explanation.relevance)
    groups = Level("group", paragraphs[:2], rows[:2])
    searched = dataclasses.replace(explanation, levels=(groups, Level("paragraph", paragraphs, rows), finest))
    page.set_content(searched.to_html())
    expect(page.locator("h2", has_text="Most relevant groups")).to_have_count(0)
    expect(page.locator("#sources-0 li")).to_have_text(["+1.8000  <b>Paris</b> & Rome:", "+1.0000    capitals"])
    page.click(".selector button[data-t='0']")
    expect(page.locator("#sources-0 li")).to_have_text(["+0.9000    capitals", "+0.3000  <b>Paris</b> & Rome:"])
    expect(page.locator("#sources li").first).to_have_text("+2.0000  <b>Paris</b>")
    long = Unit("word " * 60, 0, 300, "prompt", (1,))
    spans = dataclasses.replace(explanation, levels=(Level("spans", (long,), rows[:1]), finest))
    other = page.context.new_page()  # a page's script declares its data once
    other.set_content(spans.to_html())
    expect(other.locator("h2", has_text="Most relevant spans")).to_have_text("Most relevant spans")
    expect(other.locator("#sources-0 li")).to_have_text(re.compile(r"^\+1\.8000  (word ){23}word\u2026$"))
