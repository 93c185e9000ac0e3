#!/usr/bin/env bash
# Set up and run the whole test suite (tiny random models plus the real SmolLM2, exported once per session).
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
.venv/bin/python -m pytest "$@"
