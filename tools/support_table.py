"""Write the README's support table from the architecture registry and the parity tests' measurements.

usage: python tools/support_table.py [--measure]

With ``--measure`` it first runs the relevance parity tests of every family (tests/test_families.py, tiny random
models, both modes) with ``ATMAN_ONNX_PARITY_OUT`` set, and stores the largest differences they measured in
docs/support.json. Then it writes the table between the README's ``support-table`` markers, from the registry's
rows and docs/support.json. tests/test_families.py checks that the README holds what this writes.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from atman_onnx.models.registry import ARCHITECTURES, REFUSED

ROOT = Path(__file__).resolve().parents[1]
FIGURES = ROOT / "docs" / "support.json"
README = ROOT / "README.md"
START, END = "<!-- support-table:start -->", "<!-- support-table:end -->"


def measure() -> dict:
    """Run the parity tests and collect, per family, the largest differences in each mode."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "parity.jsonl"
        command = [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            str(ROOT / "tests" / "test_families.py"),
            "-k",
            "relevance_parity",
            "-p",
            "no:cacheprovider",
        ]
        subprocess.run(command, check=True, cwd=ROOT, env={**os.environ, "ATMAN_ONNX_PARITY_OUT": str(out)})
        rows = [json.loads(line) for line in out.read_text().splitlines()]
    figures: dict = {}
    for row in rows:
        figures.setdefault(row.pop("family"), {})[row.pop("mode")] = row
    return figures


def table(figures: dict) -> str:
    """The markdown table: one row per supported family, then the refused ones."""
    lines = [
        (
            "| `model_type` | real checkpoints it covers | quirks honoured | attention keywords "
            "| relevance vs PyTorch, log_additive / multiplicative | graph label log-probs vs PyTorch |"
        ),
        "|---|---|---|---|---|---|",
    ]
    for name, spec in sorted(ARCHITECTURES.items()):
        measured = figures.get(name, {})
        relevance = " / ".join(
            f"{measured[m]['relevance']:.1e}" if m in measured else "-" for m in ("log_additive", "multiplicative")
        )
        graph = max((m["graph_label_logprobs"] for m in measured.values()), default=None)
        lines.append(
            f"| `{name}` | {', '.join(f'`{c}`' for c in spec.checkpoints)} | {'; '.join(spec.quirks)} | "
            f"{', '.join(sorted(spec.keywords))} | {relevance} | {'-' if graph is None else f'{graph:.1e}'} |"
        )
    refused = "; ".join(f"`{name}` ({why})" for name, why in sorted(REFUSED.items()))
    return "\n".join(lines) + f"\n\nRefused in one line: {refused}."


def write_readme(text: str) -> None:
    readme = README.read_text()
    head, rest = readme.split(START, 1)
    README.write_text(head + START + "\n" + text + "\n" + END + rest.split(END, 1)[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--measure", action="store_true", help="run the parity tests first (a few minutes)")
    args = parser.parse_args()
    if args.measure:
        FIGURES.write_text(json.dumps(measure(), indent=1, sort_keys=True) + "\n")
    write_readme(table(json.loads(FIGURES.read_text())))
    print(f"wrote the support table of {len(ARCHITECTURES)} families into {README}")


if __name__ == "__main__":
    main()
