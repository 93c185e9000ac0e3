"""The package's jinja2 templates, in ``atman_onnx/templates/``: the HTML report (``html``) and the service's page
(``serve/page``). One environment with autoescaping on, so that every value a template prints (a prompt, a token, a
model name) is text, never markup; Python computes the values, the templates hold the markup."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

import jinja2

FOLDER = Path(__file__).with_name("templates")


@lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    """The one environment, made on first use: templates are read once and kept compiled."""
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(FOLDER),
        autoescape=True,
        keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined,  # a value the template names but Python forgot fails loudly
    )


def render(name: str, **values: Any) -> str:
    """Template ``name`` (a file in ``templates/``) filled with ``values``."""
    return environment().get_template(name).render(**values)
