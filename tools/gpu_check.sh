#!/usr/bin/env bash
# The GPU check (docs/gpu.md): tools/gpu_check.sh ORT_DIR OUT_DIR [tools/gpu_check.py options]
#
# ORT_DIR: a folder holding onnxruntime-gpu (and whatever else the machine's Python lacks), as
# `pip install --target ORT_DIR onnxruntime-gpu` leaves it. It goes first on PYTHONPATH, ahead of a CPU onnxruntime,
# with the CUDA libraries of any nvidia-* packages (in ORT_DIR or the Python's own site-packages, e.g. torch's) on
# LD_LIBRARY_PATH. This checkout is put on the path as the atman_onnx package (its pyproject.toml maps core/,
# runtime/, ... into it), through links in a temporary folder, so nothing is installed. Everything is written under
# OUT_DIR; tools/gpu_check.py says what runs.
set -euo pipefail
if [ $# -lt 2 ]; then
  echo "usage: tools/gpu_check.sh ORT_DIR OUT_DIR [gpu_check.py options]" >&2
  exit 2
fi
ORT_DIR="$(cd "$1" && pwd)"
mkdir -p "$2"
OUT_DIR="$(cd "$2" && pwd)"
shift 2
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PY="${PYTHON:-python3}"

PACKAGE_ROOT="$(mktemp -d)"
trap 'rm -rf "$PACKAGE_ROOT"' EXIT
mkdir "$PACKAGE_ROOT/atman_onnx"
for entry in "$ROOT"/atman_onnx/*; do
  ln -s "$entry" "$PACKAGE_ROOT/atman_onnx/"
done
for sub in core export runtime models serve cluster; do
  ln -s "$ROOT/$sub" "$PACKAGE_ROOT/atman_onnx/$sub"
done

NVIDIA_LIBS="$("$PY" - "$ORT_DIR" <<'EOF'
import glob, os, site, sys
roots = [sys.argv[1], *site.getsitepackages()]
print(":".join(sorted({d for r in roots for d in glob.glob(os.path.join(r, "nvidia", "*", "lib"))})))
EOF
)"
export PYTHONPATH="$ORT_DIR:$PACKAGE_ROOT${PYTHONPATH:+:$PYTHONPATH}"
export LD_LIBRARY_PATH="${NVIDIA_LIBS}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export TOKENIZERS_PARALLELISM=false
echo "PYTHONPATH=$PYTHONPATH" | tee "$OUT_DIR/paths.txt"
echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH" | tee -a "$OUT_DIR/paths.txt"
cd "$ROOT"
"$PY" tools/gpu_check.py "$OUT_DIR" "$@"
