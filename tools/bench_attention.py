"""One layer's attention three ways on ONNX Runtime: opset 23's fused ``Attention``, the contrib
``MultiHeadAttention``, and op by op (MatMul, Add, Softmax, MatMul), with an additive bias as AtMan's log-additive
suppression gives it. SmolLM2-135M's heads by default: 9 query heads over 3 key/value heads of 64.

Usage: python tools/bench_attention.py [--queries 256] [--keys 4096] [--repeats 30] [--threads 2]

Needs the export extra (onnx, to build the graphs). Prints each form's median milliseconds and its ratio to the
fused operator's, and each one's largest difference from numpy's.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper

FLOAT = TensorProto.FLOAT


def graph(form: str, heads: int, kv_heads: int, dim: int) -> bytes:
    """The model for ``form``: inputs q [1, heads, S, dim], k and v [1, kv_heads, L, dim], bias [1, 1, S, L]."""
    scale = dim**-0.5
    inputs = [
        helper.make_tensor_value_info("q", FLOAT, [1, heads, "S", dim]),
        helper.make_tensor_value_info("k", FLOAT, [1, kv_heads, "L", dim]),
        helper.make_tensor_value_info("v", FLOAT, [1, kv_heads, "L", dim]),
        helper.make_tensor_value_info("bias", FLOAT, [1, 1, "S", "L"]),
    ]
    output = [helper.make_tensor_value_info("out", FLOAT, None)]
    repeat = heads // kv_heads
    grow = [  # k and v with each key/value head repeated for its query heads: [1, heads, L, dim]
        helper.make_node("Constant", [], ["axis2"], value=helper.make_tensor("a", TensorProto.INT64, [1], [2])),
        helper.make_node(
            "Constant", [], ["tile"], value=helper.make_tensor("t", TensorProto.INT64, [5], [1, 1, repeat, 1, 1])
        ),
        helper.make_node(
            "Constant", [], ["shape"], value=helper.make_tensor("s", TensorProto.INT64, [4], [1, heads, -1, dim])
        ),
    ]
    for name in ("k", "v"):
        grow += [
            helper.make_node("Unsqueeze", [name, "axis2"], [f"{name}5"]),
            helper.make_node("Tile", [f"{name}5", "tile"], [f"{name}t"]),
            helper.make_node("Reshape", [f"{name}t", "shape"], [f"{name}h"]),
        ]
    if form == "fused":
        nodes, opsets = [helper.make_node("Attention", ["q", "k", "v", "bias"], ["out"], scale=scale)], [("", 23)]
    elif form == "contrib":
        nodes = [
            *grow,
            helper.make_node("Transpose", ["q"], ["qt"], perm=[0, 2, 1, 3]),  # BSNH, then BS(NH)
            helper.make_node(
                "Constant", [], ["flat"], value=helper.make_tensor("f", TensorProto.INT64, [3], [1, -1, heads * dim])
            ),
            helper.make_node("Reshape", ["qt", "flat"], ["q3"]),
            helper.make_node(
                "MultiHeadAttention",
                ["q3", "kh", "vh", "", "", "bias"],
                ["out"],
                domain="com.microsoft",
                num_heads=heads,
                scale=scale,
            ),
        ]
        opsets = [("", 18), ("com.microsoft", 1)]
    else:
        nodes = [
            *grow,
            helper.make_node("Transpose", ["kh"], ["kT"], perm=[0, 1, 3, 2]),
            helper.make_node("MatMul", ["q", "kT"], ["scores"]),
            helper.make_node("Constant", [], ["c"], value=helper.make_tensor("c", FLOAT, [], [scale])),
            helper.make_node("Mul", ["scores", "c"], ["scaled"]),
            helper.make_node("Add", ["scaled", "bias"], ["biased"]),
            helper.make_node("Softmax", ["biased"], ["weights"], axis=-1),
            helper.make_node("MatMul", ["weights", "vh"], ["out"]),
        ]
        opsets = [("", 18)]
    model = helper.make_model(
        helper.make_graph(nodes, form, inputs, output), opset_imports=[helper.make_opsetid(d, v) for d, v in opsets]
    )
    return model.SerializeToString()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=256)
    parser.add_argument("--keys", type=int, default=4096)
    parser.add_argument("--heads", type=int, default=9)
    parser.add_argument("--kv-heads", type=int, default=3)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    feeds = {
        "q": rng.standard_normal((1, args.heads, args.queries, args.dim), np.float32),
        "k": rng.standard_normal((1, args.kv_heads, args.keys, args.dim), np.float32),
        "v": rng.standard_normal((1, args.kv_heads, args.keys, args.dim), np.float32),
        "bias": np.log(rng.uniform(0.05, 1.0, (1, 1, args.queries, args.keys))).astype(np.float32),
    }
    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    medians, outputs = {}, {}
    for form in ("fused", "contrib", "op-by-op"):
        session = ort.InferenceSession(
            graph(form, args.heads, args.kv_heads, args.dim), options, ["CPUExecutionProvider"]
        )
        out = session.run(None, feeds)[0]
        outputs[form] = (
            out.reshape(1, args.queries, args.heads, args.dim) if out.ndim == 3 else out.transpose(0, 2, 1, 3)
        )
        times = []
        for _ in range(args.repeats):
            started = time.perf_counter()
            session.run(None, feeds)
            times.append(time.perf_counter() - started)
        medians[form] = statistics.median(times) * 1000
    want = reference(feeds, args.heads // args.kv_heads, args.dim**-0.5)
    for form, ms in medians.items():
        worst = float(np.abs(outputs[form] - want).max())
        print(f"{form:>9} {ms:7.1f} ms  {ms / medians['fused']:.2f}x fused  max |diff| from numpy {worst:.1e}")


def reference(feeds: dict[str, np.ndarray], repeat: int, scale: float) -> np.ndarray:
    """The same attention in numpy, [1, S, heads, dim]."""
    k, v = (np.repeat(feeds[name], repeat, axis=1) for name in ("k", "v"))
    scores = feeds["q"] @ k.transpose(0, 1, 3, 2) * scale + feeds["bias"]
    weights = np.exp(scores - scores.max(-1, keepdims=True))
    return (weights / weights.sum(-1, keepdims=True) @ v).transpose(0, 2, 1, 3)


if __name__ == "__main__":
    main()
