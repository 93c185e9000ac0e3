"""The HTML report: self-contained, every unit shown, and coloured by relevance in a real (headless) Chromium."""

from __future__ import annotations

import html
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest

from atman_onnx import Explanation, Token, Unit

CHROMIUM = Path("/usr/bin/chromium")
PROMPT = "<b>Paris</b> & Rome:\n  capitals"
TARGET = " of France"

# Appended to a copy of the page: writes each unit's computed background into data-computed (for "all"), then
# selects target token 0 and writes those into data-computed0; --dump-dom then serialises the DOM.
PROBE = """<script>
window.addEventListener("load", () => {
  const units = document.querySelectorAll(".unit");
  units.forEach(el => el.dataset.computed = getComputedStyle(el).backgroundColor);
  selectTarget(0);
  units.forEach(el => el.dataset.computed0 = getComputedStyle(el).backgroundColor);
  document.body.dataset.probed = "yes";
});
</script>"""


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


def render_in_chromium(page: str, tmp_path: Path) -> str:
    if not CHROMIUM.exists():
        pytest.skip("headless Chromium not installed at /usr/bin/chromium (Debian: apt-get install chromium)")
    path = tmp_path / "report.html"
    path.write_text(page.replace("</body>", PROBE + "</body>"), encoding="utf-8")
    command = [
        str(CHROMIUM),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--virtual-time-budget=2000",
        "--dump-dom",
        path.as_uri(),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert 'data-probed="yes"' in done.stdout, "the probe script did not run:\n" + done.stderr[-2000:]
    return done.stdout


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> tuple[Explanation, dict[int, dict[str, str]]]:
    explanation = make_explanation()
    return explanation, units_in(render_in_chromium(explanation.to_html(), tmp_path_factory.mktemp("chromium")))


def test_chromium_shows_units_coloured_by_relevance(rendered):
    explanation, units = rendered
    assert [units[i]["text"] for i in range(len(explanation.units))] == [u.text for u in explanation.units]
    total = explanation.total
    high, low = units[int(total.argmax())], units[int(total.argmin())]
    assert high["data-computed"] != low["data-computed"]
    assert high["data-computed"] == "rgb(214, 39, 40)"  # the largest |total| gets the full red
    assert units[0]["data-computed"] == "rgb(255, 255, 255)"  # zero relevance is white


def test_selecting_a_target_token_recolours(rendered):
    explanation, units = rendered
    first = explanation.relevance[:, 0]
    assert units[int(first.argmax())]["data-computed0"] == "rgb(214, 39, 40)"
    assert units[int(first.argmin())]["data-computed0"] != units[int(first.argmax())]["data-computed0"]
    assert any(u["data-computed0"] != u["data-computed"] for u in units.values())
    # target 0 is scaled by its own max |value| (2.0) while "all" is scaled by 2.5: unit 4 changes shade
    assert units[4]["data-computed0"] != units[4]["data-computed"]
