"""Write docs/reference/openapi.json, the HTTP service's OpenAPI document, and docs/reference/openapi.md, a page
that reads it: every route, its request body's fields and its replies.

usage: python tools/http_reference.py [--check]

The document is the one a running service answers at ``GET /openapi.json``: ``serve.app.create_app`` builds it from
the routes and from ``serve/schema.py`` (the request's fields as ``ExplainRequest`` declares them, the explanation's
fields with their meaning). It is built here with no model loaded (an application serving no folder), so it needs
the serve extra but no export. With ``--check`` it writes nothing and exits 1 when either committed file differs from
what it would write; tests/test_docs.py checks the same.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from generated import ROOT, write_or_check

SPEC = ROOT / "docs" / "reference" / "openapi.json"
PAGE = ROOT / "docs" / "reference" / "openapi.md"
HEAD = """# OpenAPI

The routes of `atman-onnx serve`, read from its OpenAPI document: [openapi.json](openapi.json), the same document a
running service answers at `GET /openapi.json` (and shows at `GET /docs`). Written by `python tools/http_reference.py`,
which builds the application with no model loaded: edit `serve/app.py` or `serve/schema.py`, not this file. The
[HTTP API](http.md) page explains the behaviour behind these routes: limits, errors, cancellation, request ids.
"""


def openapi() -> dict[str, Any]:
    """The application's OpenAPI document, from an application that serves no model."""
    from atman_onnx.serve.app import create_app
    from atman_onnx.serve.config import ServeConfig

    return create_app(ServeConfig(folders=()), {}).openapi()


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;").replace("\n", " ")


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def kind(schema: dict[str, Any]) -> str:
    """A schema in a few words: its type(s), choices, bounds and items."""
    if "anyOf" in schema:
        return " or ".join(kind(arm) for arm in schema["anyOf"])
    if "const" in schema:
        return f"`{json.dumps(schema['const'])}`"
    if "enum" in schema:
        return "one of " + ", ".join(f"`{json.dumps(v)}`" for v in schema["enum"])
    types = schema.get("type", "any")
    types = types if isinstance(types, list) else [types]
    words = []
    for name in types:
        if name == "array":
            items = schema.get("items")
            size = ""
            if "minItems" in schema and schema.get("minItems") == schema.get("maxItems"):
                size = f" {schema['minItems']}"
            inner = kind(items) if items else ""
            inner = f"({inner})" if " or " in inner or "," in inner else inner
            words.append(f"array of{size} {inner}" if items else "array")
        elif name == "object" and "properties" in schema:
            words.append("object {" + ", ".join(schema["properties"]) + "}")
        elif name == "string" and "contentEncoding" in schema:
            words.append(f"string ({schema['contentEncoding']})")
        else:
            words.append(name)
    text = " or ".join(words)
    bounds = []
    if "minimum" in schema:
        bounds.append(f">= {_number(schema['minimum'])}")
    if "exclusiveMinimum" in schema:
        bounds.append(f"> {_number(schema['exclusiveMinimum'])}")
    if "maximum" in schema:
        bounds.append(f"<= {_number(schema['maximum'])}")
    return text + (f", {' and '.join(bounds)}" if bounds else "")


def fields(schema: dict[str, Any], defaults: bool) -> list[str]:
    """A table of an object schema's properties."""
    required = set(schema.get("required", []))
    head = "| field | type | required | " + ("default | " if defaults else "") + "description |"
    lines = [head, "|---|---|---|" + ("---|" if defaults else "") + "---|"]
    for name, prop in schema.get("properties", {}).items():
        default = f"`{json.dumps(prop['default'])}`" if "default" in prop else "-"
        cells = [f"`{name}`", _cell(kind(prop)), "yes" if name in required else "no"]
        cells += [default] if defaults else []
        cells.append(_cell(prop.get("description", "-")))
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _anchor(method: str, path: str) -> str:
    return (method + path.replace("/", "-")).strip("-").rstrip("-") or method


def page(spec: dict[str, Any]) -> str:
    """The readable page: a table of the routes, one section per route, then the error body."""
    error_schema: dict[str, Any] | None = None
    routes = [(method.upper(), path, op) for path, ops in spec["paths"].items() for method, op in ops.items()]
    lines = [
        HEAD,
        f"{spec['info']['title']} {spec['info']['version']}: {spec['info'].get('description', '')}",
        "",
        "| route | what it does |",
        "|---|---|",
    ]
    lines += [f"| [`{m} {p}`](#{_anchor(m.lower(), p)}) | {_cell(op.get('summary', ''))} |" for m, p, op in routes]
    for method, path, op in routes:
        lines += [
            "",
            f"## `{method} {path}` {{#{_anchor(method.lower(), path)}}}",
            "",
            (op.get("summary") or "")[:1].upper() + (op.get("summary") or "")[1:] + ".",
            "",
        ]
        body = op.get("requestBody")
        if body:
            for media, content in body.get("content", {}).items():
                schema = content.get("schema", {})
                lines += [f"Request body (`{media}`{', required' if body.get('required') else ''}):", ""]
                lines += fields(schema, defaults=True) if "properties" in schema else [f"{_cell(kind(schema))}."]
                if schema.get("additionalProperties") is False:
                    lines += ["", "Any other field is refused (422, naming it)."]
                lines.append("")
        lines += ["| status | content | meaning |", "|---|---|---|"]
        replies = []
        for status, reply in sorted(op.get("responses", {}).items()):
            content = reply.get("content", {})
            media = ", ".join(f"`{m}`" for m in content) or "-"
            meaning = reply.get("description", "")
            for m, c in content.items():
                schema = c.get("schema", {})
                if m == "application/json" and set(schema.get("properties", {})) >= {"error", "type"}:
                    error_schema = schema
                    meaning += " ([error body](#error-body))"
                elif m == "application/json" and "properties" in schema:
                    replies.append((status, schema))
            lines.append(f"| {status} | {media} | {_cell(meaning)} |")
        for status, schema in replies:
            lines += ["", f"The {status} reply's fields:", "", *fields(schema, defaults=False)]
    if error_schema is not None:
        lines += [
            "",
            "## Error body {#error-body}",
            "",
            "Every error reply has this body, whatever the route:",
            "",
            *fields(error_schema, defaults=False),
        ]
    return "\n".join(lines) + "\n"


def outputs() -> dict[Path, str]:
    spec = openapi()
    return {SPEC: json.dumps(spec, indent=1, ensure_ascii=False) + "\n", PAGE: page(spec)}


def main() -> int:
    return write_or_check(outputs(), "python tools/http_reference.py", __doc__.splitlines()[0])


if __name__ == "__main__":
    sys.exit(main())
