"""Write docs/reference/cli.md, the command line's reference, from its parser (``atman_onnx.cli.parser()``).

usage: python tools/cli_reference.py [--check]

Every subcommand gets a synopsis and a table of its arguments: the flag and its value, the default, and the help
text argparse shows. The flags of ``atman-onnx explain`` that come from ``ExplainRequest``'s fields link to
docs/reference/request.md. With ``--check`` it writes nothing and exits 1 when the committed file differs from what it
would write; tests/test_docs.py checks the same.
"""

from __future__ import annotations

import argparse
import json
import sys

from generated import ROOT, write_or_check

from atman_onnx.cli import parser
from atman_onnx.request import FIELDS

CLI = ROOT / "docs" / "reference" / "cli.md"
HEAD = """# Command line

`atman-onnx` has one subcommand per job. Written by `python tools/cli_reference.py` from the parser
(`atman_onnx.cli.parser()`): edit the parser, not this file. `atman-onnx COMMAND --help` prints the same.

Errors end with one line `atman-onnx: error: ...` and exit status 2; an interrupted command exits 130.
"""
REQUEST_NOTE = (
    "The flags marked *request* are `ExplainRequest`'s fields, written from their declaration; [Request fields]"
    "(request.md) gives their types and bounds, and the same names in Python and JSON."
)


def _cell(text: str) -> str:
    """Text safe in a markdown table cell: no column breaks, no HTML tags."""
    return text.replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;").replace("\n", " ")


def _help(action: argparse.Action) -> str:
    return (action.help or "").replace("%%", "%")


def _value(action: argparse.Action) -> str:
    """The word a flag takes, as argparse names it: its metavar, its choices, or its destination in capitals."""
    if action.nargs == 0:
        return ""
    if action.metavar is not None:
        return str(action.metavar)
    if action.choices is not None:
        return "{" + ",".join(map(str, action.choices)) + "}"
    return action.dest.upper()


def _form(action: argparse.Action) -> str:
    """How the argument is written: ``--flag VALUE`` (the longest option string), or a positional's name."""
    if not action.option_strings:
        name = _value(action)
        return f"{name} [{name} ...]" if action.nargs == "+" else name
    flag = max(action.option_strings, key=len)
    value = _value(action)
    return f"{flag} {value}" if value else flag


def _default(action: argparse.Action) -> str:
    """The default shown: the request's own for a flag left out of the request (``SUPPRESS``), else argparse's."""
    if action.required:
        return "required"
    if action.default is argparse.SUPPRESS:
        if action.dest in FIELDS:
            return f"`{json.dumps(FIELDS[action.dest].schema().get('default'))}`"
        return "-"
    if action.nargs == 0:
        return "off"
    if action.default is None:
        return "-"
    return f"`{action.default}`"


def _arguments(sub: argparse.ArgumentParser) -> list[argparse.Action]:
    return [a for a in sub._actions if not isinstance(a, argparse._HelpAction)]


def _synopsis(name: str, sub: argparse.ArgumentParser) -> str:
    actions = _arguments(sub)
    words = [_form(a) for a in actions if not a.option_strings]
    words += [_form(a) for a in actions if a.option_strings and a.required]
    if any(a.option_strings and not a.required for a in actions):
        words.append("[options]")
    return " ".join(["atman-onnx", name, *words])


def _subparsers(root: argparse.ArgumentParser) -> argparse._SubParsersAction:
    return next(a for a in root._actions if isinstance(a, argparse._SubParsersAction))


def reference() -> str:
    """The page: a table of the subcommands, then one section per subcommand in the parser's order."""
    commands = _subparsers(parser())
    helps = {choice.dest: choice.help or "" for choice in commands._choices_actions}
    lines = [HEAD, "| command | what it does |", "|---|---|"]
    lines += [f"| [`{name}`](#atman-onnx-{name}) | {_cell(helps.get(name, ''))} |" for name in commands.choices]
    for name, sub in commands.choices.items():
        text = helps.get(name, "")
        lines += [
            "",
            f"## `atman-onnx {name}`",
            "",
            text[:1].upper() + text[1:] + ".",
            "",
            "```",
            _synopsis(name, sub),
            "```",
            "",
        ]
        if any(a.dest in FIELDS for a in _arguments(sub)):
            lines += [REQUEST_NOTE, ""]
        lines += ["| argument | default | description |", "|---|---|---|"]
        for action in _arguments(sub):
            note = "*request*: " if action.dest in FIELDS else ""
            choices = ""
            if action.choices is not None and action.metavar is not None:
                choices = " One of " + ", ".join(f"`{c}`" for c in action.choices) + "."
            repeat = " Repeatable." if isinstance(action, argparse._AppendAction) and action.dest not in FIELDS else ""
            text = note + _help(action) + choices + repeat
            lines.append(f"| `{_cell(_form(action))}` | {_default(action)} | {_cell(text) or '-'} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    return write_or_check({CLI: reference()}, "python tools/cli_reference.py", __doc__.splitlines()[0])


if __name__ == "__main__":
    sys.exit(main())
