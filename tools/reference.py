"""Write docs/reference/request.md, the table of the request's fields, from their one declaration
(``ExplainRequest`` in atman_onnx/request.py).

usage: python tools/reference.py [--check]

With ``--check`` it writes nothing and exits 1 when the committed file differs from what it would write;
tests/test_request_declared.py checks the same.
"""

from __future__ import annotations

import json
import sys

from generated import ROOT, write_or_check

from atman_onnx.request import FIELDS

REQUEST = ROOT / "docs" / "reference" / "request.md"
HEAD = """# Request fields

The fields of `ExplainRequest` (atman_onnx/request.py): the keyword arguments of `Explainer.explain`, the JSON body
of `POST /v1/explain` (with `model`), and the flags of `atman-onnx explain`. All three are checked alike, when the
request is made. Written by `python tools/reference.py` from the fields' declaration: edit that, not this file.
"""


def _cell(text: str) -> str:
    """Text safe in a markdown table cell: no column breaks, no HTML tags."""
    return text.replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")


def request_table() -> str:
    """The page: one row per field, in declaration order."""
    lines = [HEAD, "| field | type | default | allowed | flag | description |", "|---|---|---|---|---|---|"]
    for f in FIELDS.values():
        default = "required" if f.required else f"`{json.dumps(f.schema()['default'])}`"
        allowed = ", ".join(f"`{c}`" for c in f.choices) if f.choices else f.range() or "-"
        flag = f"`{f.flag}{' ' + f.kind.metavar if f.kind.metavar else ''}`" + (" (repeatable)" if f.kind.many else "")
        lines.append(f"| `{f.name}` | {_cell(f.what)} | {default} | {_cell(allowed)} | {flag} | {_cell(f.doc)} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    return write_or_check({REQUEST: request_table()}, "python tools/reference.py", __doc__.splitlines()[0])


if __name__ == "__main__":
    sys.exit(main())
