#!/usr/bin/env bash
# Set up, export SmolLM2-135M-Instruct once (cached in .atman/), and explain a real prompt as a heatmap.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
out=.atman/smollm2-log_additive
if [ ! -f "$out/atman.json" ]; then
  .venv/bin/atman-onnx export bundled:smollm2 "$out" --mode log_additive
fi
.venv/bin/atman-onnx explain "$out" \
  --prompt "Alice lives in Paris and Bob lives in Rome. Bob lives in the city of" \
  --max-new-tokens 4 --json .atman/explanation.json "$@"
