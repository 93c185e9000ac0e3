"""``GET /``: a page where a person types a prompt (and optionally a target), watches the progress, and reads the
same interactive report ``--html`` writes (``POST /v1/report`` renders it with ``html.render_html``). The markup is
the template ``page.html`` of ``atman_onnx.templating``; this module picks what it offers."""

from __future__ import annotations

from atman_onnx.runtime.groups import GRANULARITIES
from atman_onnx.templating import render


def page(models: list[str], needs_key: bool) -> str:
    """The page for these model names; with ``needs_key`` it asks for the API key too. Spans and documents
    are not offered: the page has no field for them."""
    granularities = [g for g in GRANULARITIES if g not in ("spans", "document")]
    return render("page.html", models=models, granularities=granularities, needs_key=needs_key)
