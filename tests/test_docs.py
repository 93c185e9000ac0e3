"""The docs site's generated pages are current, and the README stays a short front page that links into the docs.

``tools/test.sh`` builds the site itself (``mkdocs build --strict``); these checks need no docs tools.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
README = ROOT / "README.md"


def test_cli_reference_is_generated():
    from cli_reference import CLI, reference

    assert CLI.read_text(encoding="utf-8") == reference(), "stale docs/reference/cli.md: python tools/cli_reference.py"


def test_cli_reference_covers_every_flag():
    import argparse

    from atman_onnx.cli import parser

    page = (ROOT / "docs" / "reference" / "cli.md").read_text(encoding="utf-8")
    commands = next(a for a in parser()._actions if isinstance(a, argparse._SubParsersAction))
    for name, sub in commands.choices.items():
        assert f"## `atman-onnx {name}`" in page
        for action in sub._actions:
            for flag in action.option_strings:
                if flag.startswith("--") and flag != "--help":
                    assert f"`{flag}" in page, f"{flag} of {name} is missing from docs/reference/cli.md"


def test_http_reference_is_generated():
    pytest.importorskip("fastapi")
    pytest.importorskip("prometheus_client")
    from http_reference import outputs

    for path, text in outputs().items():
        assert path.read_text(encoding="utf-8") == text, f"{path} is stale: python tools/http_reference.py"


def test_readme_opens_with_the_demo_and_the_tests():
    first = re.search(r"```bash\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
    commands = [line.split("#")[0].strip() for line in first.group(1).splitlines()]
    assert commands == ["bash tools/demo.sh", "bash tools/test.sh"]


def test_readme_is_short_and_its_links_resolve():
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 250, "the README is a front page: move detail into docs/"
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
        if "://" not in target:
            assert (ROOT / target).exists(), f"README links to {target}, which does not exist"


def test_readme_holds_the_sections_the_docs_include():
    """docs/ shows the README's tested client snippets and its generated support table by inclusion."""
    text = README.read_text(encoding="utf-8")
    for page in (ROOT / "docs").rglob("*.md"):
        for name in re.findall(r'^--8<-- "README\.md:([\w-]+)"$', page.read_text(encoding="utf-8"), re.M):
            assert f"--8<-- [start:{name}]" in text and f"--8<-- [end:{name}]" in text, (page, name)


def test_every_docs_page_is_in_the_nav():
    config = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    nav = set(re.findall(r"^\s+- (?:[^:\n]+: )?([\w/.-]+\.md)$", config, re.M))
    pages = {str(p.relative_to(ROOT / "docs")) for p in (ROOT / "docs").rglob("*.md")}
    assert pages == nav, f"only in docs/: {sorted(pages - nav)}; only in the nav: {sorted(nav - pages)}"
