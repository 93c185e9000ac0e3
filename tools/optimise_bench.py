"""The export's optimise stage: onnxscript's ``optimize_ir`` (what ``ONNXProgram.optimize()`` runs) against
``atman_onnx.export.optimise`` (the same passes without ``slice_split_rule``), on one traced graph.

Traces the model once (as the export does), saves it unoptimised, then for each optimiser, ``--repeats`` times
alternating: loads the saved graph, optimises it (timed), saves it, and hashes the file. Reports the median seconds,
the nodes left, and whether the two graphs are byte-identical (same SHA-256).

Usage: python tools/optimise_bench.py [--model bundled:smollm2] [--mode log_additive] [--repeats 3]
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import tempfile
import time
from pathlib import Path

import onnx_ir as ir
from onnxscript.optimizer import optimize_ir

from atman_onnx.core.contract import DEFAULT_OPSET
from atman_onnx.export import source
from atman_onnx.export.exporter import _trace
from atman_onnx.export.optimise import optimise
from atman_onnx.models.graph import AtmanGraph
from atman_onnx.models.patch import check, patch

OPTIMISERS = {"onnxscript optimize_ir": optimize_ir, "export.optimise": optimise}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="bundled:smollm2")
    parser.add_argument("--mode", default="log_additive")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    lm, _ = source.load(args.model, None)
    check(patch(lm, args.mode, fused=True))
    started = time.perf_counter()
    program = _trace(AtmanGraph(lm).eval(), DEFAULT_OPSET)
    print(f"traced in {time.perf_counter() - started:.1f} s: {len(program.model.graph)} nodes", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw.onnx"
        program.save(str(raw))
        seconds: dict[str, list[float]] = {name: [] for name in OPTIMISERS}
        nodes, digests = {}, {}
        for _ in range(args.repeats):
            for name, run in OPTIMISERS.items():
                model = ir.load(raw)
                started = time.perf_counter()
                run(model)
                seconds[name].append(time.perf_counter() - started)
                out = Path(tmp) / "out.onnx"
                ir.save(model, out)
                nodes[name], digests[name] = len(model.graph), hashlib.sha256(out.read_bytes()).hexdigest()
        print("| optimiser | median s | runs s | nodes |\n|---|---:|---|---:|")
        for name in OPTIMISERS:
            runs = ", ".join(f"{s:.1f}" for s in seconds[name])
            print(f"| {name} | {statistics.median(seconds[name]):.1f} | {runs} | {nodes[name]} |")
        print(f"byte-identical graphs: {len(set(digests.values())) == 1}")


if __name__ == "__main__":
    main()
