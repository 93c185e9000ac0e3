"""The JavaScript demo page (js/demo/) in headless Chromium, driven by Playwright: served over HTTP from the
repository's root, it loads the conformance kit's tiny folder with onnxruntime-web (WebAssembly), explains the
form's prompt, fills the heatmap as batches finish, and gives the Python runtime's scores.

Needs the JavaScript package built (``cd js && npm ci && npm run build``; tools/test.sh does it first); skipped
with a reason where it is not, or where no Chromium is installed."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from atman_onnx import Explainer

ROOT = Path(__file__).resolve().parents[1]
KIT_FOLDER = ROOT / "conformance" / "models" / "llama-log_additive"
BUILT = ROOT / "js" / "dist" / "src" / "index.js"
sys.path.insert(0, str(ROOT / "tools"))
from js_bench import repository_site  # noqa: E402 (tools/js_bench.py serves the demo the same way)


@pytest.fixture(scope="module")
def site():
    if not BUILT.exists() or not (ROOT / "js" / "node_modules" / "onnxruntime-web").exists():
        pytest.skip("the JavaScript package is not built (cd js && npm ci && npm run build)")
    with repository_site() as url:
        yield url


def test_demo_page_explains_in_the_browser_as_python_does(site, page):
    from playwright.sync_api import expect

    page.goto(f"{site}/js/demo/")
    page.fill("#prompt", "Alice met Bob in the garden, and Bob gave")
    page.fill("#target", " Alice a red apple.")
    page.select_option("#granularity", "word")
    page.click("#explain")
    expect(page.locator("#status")).to_contain_text("passes", timeout=60_000)
    want = Explainer.load(KIT_FOLDER, provider="cpu").explain(
        "Alice met Bob in the garden, and Bob gave", " Alice a red apple.", granularity="word", factor=0.0
    )
    assert page.locator("#status").inner_text().startswith(f"{len(want.units)} units, {want.timings['passes']} passes")
    prompt_units = [(u, t) for u, t in zip(want.units, want.total) if u.segment == "prompt"]
    spans = page.locator("#heatmap span.unit")
    expect(spans).to_have_count(len(prompt_units))
    for k, (unit, total) in enumerate(prompt_units):
        text, score = spans.nth(k).get_attribute("title").rsplit(": ", 1)
        assert spans.nth(k).inner_text() == text == unit.text and abs(float(score) - total) < 1e-3
    progress = page.locator("#progress")
    assert progress.get_attribute("value") == progress.get_attribute("max")
    assert page.locator("#explain").is_enabled() and page.locator("#stop").is_disabled()
