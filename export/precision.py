"""Lighter graphs: an exported float32 graph converted to float16 weights and matmuls, or to int8 weights.

All keep the graph contract unchanged (every graph input and output stays float32), and all keep in float32 what
AtMan measures: the attention scores from ``q.k^T`` through the scale arithmetic and the mask to the softmax, and
the log-prob head (the log-softmax over the logits and the gather of the labels; int8 also leaves the projection to
the logits, which is the tied embedding matrix in SmolLM2, in float32).

- ``int8`` (``--quantize int8``): weight-only int8 through ``onnxruntime.quantization``'s ``MatMulNBitsQuantizer``
  (8 bits, symmetric, a scale per block of 32 input channels) on the linear layers: MatMul with a constant
  right-hand side, Gemm rewritten to MatMul + Add first. Activations stay float32 (``accuracy_level`` 0: the kernel
  dequantizes the weights and multiplies in float), so a perturbation's log-probs do not depend on the other
  perturbations in its batch. ``accuracy_level`` 4 (int8 dot products, activations quantised per row and block of
  32) ran 4x faster on an AVX2 CPU but agreed less with float32 (Spearman 0.83-0.99 against 0.98-1.00 on SmolLM2).
- ``int8-dynamic`` (``--quantize int8-dynamic``): ``quantize_dynamic`` on the same layers: int8 weights per tensor,
  uint8 activations with one scale per call. Smaller code path and the classic recipe, but on SmolLM2 (activations
  up to ~24,000 in the residual stream) the shared activation scale is too coarse for AtMan's small log-prob
  differences: see the README's On-device section. Kept for comparison.
- ``quant_pre_process`` is not run for either: its symbolic shape inference fails on these graphs, and ORT's
  optimizer folds the ``Transpose`` of a tied embedding into a second, transposed copy of the embedding matrix
  (for SmolLM2 +113 MB, about what int8 saves on the layers). The quantizers run ONNX shape inference themselves.
- ``fp16``: ``onnxruntime.transformers.float16.convert_float_to_float16`` with ``keep_io_types=True``: weights and
  matmuls in float16; float32 kept (by op type and by node) for the attention-score path, the normalisation
  statistics and the log-softmax onwards, with the converter's float32 -> float16 -> float32 round trips between
  kept nodes removed.

``validate_lighter`` compares the lighter graph with the float32 PyTorch model on the random cases ``validate``
uses and returns the figures; it raises only on gross errors (NaN, or label log-probs off by more than 1.0).
"""

from __future__ import annotations

import math
from collections import deque
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from atman_onnx.core.errors import AtmanError

PRECISIONS = ("fp32", "fp16", "int8", "int8-dynamic")
DTYPES = ("fp32", "fp16")
QUANTIZATIONS = ("int8", "int8-dynamic")
INT8_BLOCK = 32  # input channels per weight scale
INT8_ACCURACY_LEVEL = 0  # MatMulNBits: 0 computes in float (activations never quantised); 4 would use int8 dot products
# What a lighter graph is expected to reach against the float32 PyTorch model (recorded with the figures, not
# enforced); SmolLM2-135M measured fp16 0.023 / 4.8e-4 / 0.050 and int8 0.64 / 0 / 0.53 (keys reach ~17 there; the
# random token ids of these cases are far harder on int8 than real text, see the README's On-device section).
TOLERANCE = {
    "fp16": {"label_logprobs": 5e-2, "inputs_embeds": 1e-3, "present": 1e-1},
    "int8": {"label_logprobs": 7.5e-1, "inputs_embeds": 1e-5, "present": 2.0},
    "int8-dynamic": {"label_logprobs": 7.5e-1, "inputs_embeds": 1e-5, "present": 2.0},
}
# ... and what fails the export: NaN anywhere, or label log-probs further off than this.
GROSS_LOGPROB_ERROR = 1.0
# Op types kept in float32 in the fp16 graph, besides the attention-score and head nodes found in the graph.
FP16_OP_BLOCK = (
    "Softmax", "LogSoftmax", "Log", "Clip", "ReduceMin", "Pow", "ReduceMean", "Sqrt", "Reciprocal",
    "LayerNormalization", "SimplifiedLayerNormalization", "Range", "CumSum",
)


class PrecisionError(AtmanError):
    """A lighter graph could not be made, or is grossly wrong."""


def precision_name(dtype: str = "fp32", quantize: str | None = None) -> str:
    """The precision that ``--dtype`` and ``--quantize`` ask for: 'fp32', 'fp16' or 'int8'."""
    if dtype not in DTYPES:
        raise PrecisionError(f"unknown dtype {dtype!r}; supported: {', '.join(DTYPES)}")
    if quantize is not None and quantize not in QUANTIZATIONS:
        raise PrecisionError(f"unknown quantization {quantize!r}; supported: {', '.join(QUANTIZATIONS)}")
    if quantize and dtype != "fp32":
        raise PrecisionError(f"--quantize {quantize} quantizes a float32 graph; it cannot be combined with --dtype {dtype}")
    return quantize or dtype


def _producers(graph: onnx.GraphProto) -> dict[str, onnx.NodeProto]:
    return {out: node for node in graph.node for out in node.output}


def _consumers(graph: onnx.GraphProto) -> dict[str, list[onnx.NodeProto]]:
    found: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            found.setdefault(name, []).append(node)
    return found


def _name_nodes(graph: onnx.GraphProto) -> None:
    """Give every node a unique name (block and quantize lists refer to nodes by name)."""
    seen: set[str] = set()
    for i, node in enumerate(graph.node):
        if not node.name or node.name in seen:
            node.name = f"{node.op_type}_atman_{i}"
        seen.add(node.name)


def _upstream_to_matmul(graph: onnx.GraphProto, start: list[onnx.NodeProto]) -> set[str]:
    """Names of ``start`` and their ancestors, walking back until (and including) the nearest MatMul/Gemm."""
    producers = _producers(graph)
    found: set[str] = set()
    queue = deque(start)
    while queue:
        node = queue.popleft()
        if node.name in found:
            continue
        found.add(node.name)
        if node.op_type in ("MatMul", "Gemm") and node not in start or node.op_type in ("Shape", "Size"):
            continue
        queue.extend(producers[name] for name in node.input if name in producers)
    return found


def _downstream(graph: onnx.GraphProto, start: list[onnx.NodeProto]) -> set[str]:
    """Names of ``start`` and every node that depends on them."""
    consumers = _consumers(graph)
    found: set[str] = set()
    queue = deque(start)
    while queue:
        node = queue.popleft()
        if node.name in found:
            continue
        found.add(node.name)
        queue.extend(c for name in node.output for c in consumers.get(name, []))
    return found


def head_matmuls(graph: onnx.GraphProto) -> set[str]:
    """The MatMul/Gemm nodes that produce the logits: the nearest ones upstream of the log-softmax."""
    heads = [n for n in graph.node if n.op_type == "LogSoftmax"]
    by_name = {n.name: n for n in graph.node}
    return {name for name in _upstream_to_matmul(graph, heads) if by_name[name].op_type in ("MatMul", "Gemm")}


def _gemm_to_matmul(graph: onnx.GraphProto) -> int:
    """Rewrite Gemm (constant B, alpha = beta = 1, no transA) as MatMul (+ Add), so dynamic int8 can take it."""
    inits = {t.name: t for t in graph.initializer}
    nodes, rewritten = [], 0
    for node in graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        plain = attrs.get("alpha", 1.0) == 1.0 and attrs.get("beta", 1.0) == 1.0 and not attrs.get("transA", 0)
        if node.op_type != "Gemm" or not plain or node.input[1] not in inits:
            nodes.append(node)
            continue
        weight = node.input[1]
        if attrs.get("transB", 0):
            transposed = numpy_helper.to_array(inits[weight]).T.copy()
            weight = f"{weight}_atman_t"
            graph.initializer.append(numpy_helper.from_array(transposed, weight))
        has_bias = len(node.input) > 2 and node.input[2]
        product = f"{node.output[0]}_atman_mm" if has_bias else node.output[0]
        nodes.append(helper.make_node("MatMul", [node.input[0], weight], [product], name=f"{node.name}_matmul"))
        if has_bias:
            nodes.append(helper.make_node("Add", [product, node.input[2]], [node.output[0]], name=f"{node.name}_bias"))
        rewritten += 1
    if rewritten:
        del graph.node[:]
        graph.node.extend(nodes)
        used = {name for node in graph.node for name in node.input}
        keep = [t for t in graph.initializer if t.name in used]
        del graph.initializer[:]
        graph.initializer.extend(keep)
    return rewritten


def _save(model: onnx.ModelProto, path: Path, external_data: bool) -> None:
    if external_data:
        onnx.save_model(model, str(path), save_as_external_data=True, location=path.name + ".data")
    else:
        onnx.save_model(model, str(path))


def _quiet_import_nbits():
    """Import ORT's MatMulNBits quantizer without letting its ``logging.basicConfig(level=INFO)`` configure the
    root logger of the whole process."""
    import logging

    root = logging.getLogger()
    placeholder = logging.NullHandler()
    root.addHandler(placeholder)
    try:
        from onnxruntime.quantization import matmul_nbits_quantizer
    finally:
        root.removeHandler(placeholder)
    logging.getLogger(matmul_nbits_quantizer.__name__).setLevel(logging.WARNING)
    return matmul_nbits_quantizer


def linear_matmuls(graph: onnx.GraphProto) -> list[str]:
    """The linear layers int8 takes: MatMul with a constant right-hand side, except the logits projection."""
    inits = {t.name for t in graph.initializer}
    head = head_matmuls(graph)
    return [n.name for n in graph.node if n.op_type == "MatMul" and n.input[1] in inits and n.name not in head]


def to_int8(src: Path, dst: Path, external_data: bool = False, method: str = "weights") -> dict:
    """int8 weights for the linear layers; returns what was done.

    method "weights" (``--quantize int8``): weight-only, ``MatMulNBits`` with 8 bits, symmetric, one float scale per
    block of ``INT8_BLOCK`` input channels, activations in float (``INT8_ACCURACY_LEVEL``), so no row depends on
    the others in its batch.
    method "dynamic" (``--quantize int8-dynamic``): ``quantize_dynamic``, int8 weights per tensor and one uint8
    activation scale per call, shared by the whole batch.
    """
    import logging

    model = onnx.load(str(src))
    graph = model.graph
    _name_nodes(graph)
    gemms = _gemm_to_matmul(graph)
    linear = linear_matmuls(graph)
    if not linear:
        raise PrecisionError("found no linear layers (MatMul with constant weights) to quantize")
    kept = sorted(head_matmuls(graph))
    if method == "weights":
        nbits = _quiet_import_nbits()
        quantizer = nbits.MatMulNBitsQuantizer(
            model, bits=8, block_size=INT8_BLOCK, is_symmetric=True, accuracy_level=INT8_ACCURACY_LEVEL,
            nodes_to_include=linear, op_types_to_quantize=("MatMul",),
        )
        quantizer.process()
        quantizer.model.save_model_to_file(str(dst), external_data)
        described = (f"onnxruntime.quantization MatMulNBitsQuantizer: 8-bit symmetric weights, blocks of {INT8_BLOCK}, "
                     f"accuracy_level {INT8_ACCURACY_LEVEL}")
    elif method == "dynamic":
        from onnxruntime.quantization import QuantType, quantize_dynamic

        quant_logger = logging.getLogger()  # quantize_dynamic warns about pre-processing on the root logger
        level = quant_logger.level
        quant_logger.setLevel(logging.ERROR)
        try:
            quantize_dynamic(
                model, str(dst), op_types_to_quantize=["MatMul"], nodes_to_quantize=linear,
                weight_type=QuantType.QInt8, use_external_data_format=external_data,
                extra_options={"MatMulConstBOnly": True},
            )
        finally:
            quant_logger.setLevel(level)
        described = "onnxruntime.quantization.quantize_dynamic: int8 weights, uint8 activations per call"
    else:
        raise PrecisionError(f"unknown int8 method {method!r}; known: weights, dynamic")
    return {"method": described, "quantized_matmuls": len(linear), "gemm_rewritten": gemms, "kept_float": kept}


def fp16_block_list(graph: onnx.GraphProto) -> set[str]:
    """Nodes kept in float32: each softmax back to its q.k^T matmul (scale, mask, AtMan factors included), the
    normalisation statistics, and the log-softmax with everything after it."""
    softmax = [n for n in graph.node if n.op_type == "Softmax"]
    block = _upstream_to_matmul(graph, softmax)
    block |= _downstream(graph, [n for n in graph.node if n.op_type == "LogSoftmax"])
    consumers = _consumers(graph)
    for node in graph.node:  # x * rsqrt(mean(x^2) + eps): keep the eps Add between the float32 ops
        if node.op_type == "ReduceMean":
            for nxt in consumers.get(node.output[0], []):
                if nxt.op_type in ("Add", "Div"):
                    block.add(nxt.name)
    return block


def _dedupe_casts(graph: onnx.GraphProto) -> int:
    """Drop repeated Cast nodes: the converter adds one per blocked consumer of a float16 value, all with the same
    name and output, which ONNX Runtime refuses."""
    seen: set[str] = set()
    keep = []
    for node in graph.node:
        if node.op_type == "Cast" and node.output[0] in seen:
            continue
        seen.update(node.output)
        keep.append(node)
    dropped = len(graph.node) - len(keep)
    if dropped:
        del graph.node[:]
        graph.node.extend(keep)
    return dropped


def _drop_round_trips(graph: onnx.GraphProto) -> int:
    """Remove float32 -> float16 -> float32 Cast pairs. The converter casts every blocked node's output to float16
    and back before the next blocked node, so float32 sections (x^2 of a 24,000-sized activation, the -3.4e38 mask
    fill) would still pass through float16 and overflow. Returns how many float32 casts were bypassed."""
    float_type, half_type = onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16
    types = {v.name: v.type.tensor_type.elem_type for v in (*graph.input, *graph.value_info, *graph.output)}
    types.update((t.name, t.data_type) for t in graph.initializer)
    producers = _producers(graph)
    outputs = {o.name for o in graph.output}

    def cast_to(node: onnx.NodeProto) -> int | None:
        if node.op_type != "Cast":
            return None
        return next((helper.get_attribute_value(a) for a in node.attribute if a.name == "to"), None)

    replace: dict[str, str] = {}
    for node in graph.node:
        if cast_to(node) != float_type or node.output[0] in outputs:
            continue
        half = producers.get(node.input[0])
        if half is not None and cast_to(half) == half_type and types.get(half.input[0]) == float_type:
            replace[node.output[0]] = half.input[0]
    if not replace:
        return 0
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name in replace:
                node.input[i] = replace[name]
    while True:  # drop the casts nothing reads any more
        used = {name for node in graph.node for name in node.input} | outputs
        keep = [n for n in graph.node if n.op_type != "Cast" or any(o in used for o in n.output)]
        if len(keep) == len(graph.node):
            break
        del graph.node[:]
        graph.node.extend(keep)
    return len(replace)


def to_fp16(src: Path, dst: Path, external_data: bool = False) -> dict:
    """Float16 weights and matmuls; float32 graph inputs/outputs, attention scores, softmax and log-prob head."""
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

    model = onnx.load(str(src))
    _name_nodes(model.graph)
    block = fp16_block_list(model.graph)
    converted = convert_float_to_float16(
        model,
        keep_io_types=True,
        op_block_list=[*DEFAULT_OP_BLOCK_LIST, *FP16_OP_BLOCK],
        node_block_list=sorted(block),
    )
    _dedupe_casts(converted.graph)
    _drop_round_trips(converted.graph)
    _save(converted, dst, external_data)
    return {"method": "onnxruntime.transformers.float16.convert_float_to_float16 (keep_io_types)",
            "float32_nodes": len(block) + sum(n.op_type in FP16_OP_BLOCK for n in model.graph.node if n.name not in block)}


def convert(src: Path, dst: Path, precision: str, external_data: bool = False) -> dict:
    """Write the ``precision`` version of the float32 graph ``src`` to ``dst``; returns a description."""
    if precision in ("int8", "int8-dynamic"):
        return to_int8(src, dst, external_data, method="weights" if precision == "int8" else "dynamic")
    if precision == "fp16":
        return to_fp16(src, dst, external_data)
    raise PrecisionError(f"no conversion to {precision!r}; lighter precisions: {', '.join(PRECISIONS[1:])}")


def validate_lighter(graph_module, onnx_path: Path, precision: str, seed: int = 0) -> dict:
    """The lighter graph against the float32 PyTorch model on ``validate``'s random cases; raises on NaN or label
    log-probs off by more than ``GROSS_LOGPROB_ERROR``, else returns the figures."""
    import onnxruntime as ort

    from atman_onnx.export.validate import random_case, torch_outputs
    from atman_onnx.core.contract import graph_outputs, past_names

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    vocab = graph_module.embed.num_embeddings
    layers = graph_module.dims["num_layers"]
    names = list(graph_outputs(layers))
    worst = {"label_logprobs": 0.0, "inputs_embeds": 0.0, "present": 0.0}
    finite = True
    for i, (batch, seq, labels, past) in enumerate([(3, 17, 5, 0), (2, 40, 8, 0), (4, 9, 3, 12)]):
        feeds = random_case(vocab, batch, seq, labels, seed + i, past)
        prefix = random_case(vocab, 1, past, 1, seed + 10 + i) if past else None
        cache = torch_outputs(graph_module, prefix)[3:] if prefix else [e.numpy() for e in graph_module.empty_past()]
        feeds.update(zip(past_names(layers), cache))
        got = dict(zip(names, session.run(None, feeds)))
        want = dict(zip(names, torch_outputs(graph_module, feeds)))
        finite = finite and all(bool(np.isfinite(got[n]).all()) for n in ("label_logprobs", "inputs_embeds"))
        diff = {n: float(np.abs(got[n] - want[n]).max()) for n in ("label_logprobs", "inputs_embeds")}
        diff["present"] = max(float(np.abs(got[n] - want[n]).max()) for n in names if n.startswith("present."))
        for name, value in diff.items():
            worst[name] = max(worst[name], value) if not math.isnan(value) else math.nan
    if not finite or any(math.isnan(v) for v in worst.values()):
        raise PrecisionError(f"the {precision} graph produces NaN or infinite outputs")
    if worst["label_logprobs"] > GROSS_LOGPROB_ERROR:
        raise PrecisionError(
            f"the {precision} graph's label log-probs differ from PyTorch float32 by {worst['label_logprobs']:.2f} "
            f"> {GROSS_LOGPROB_ERROR}: the conversion broke the model"
        )
    tolerance = TOLERANCE[precision]
    return {
        "precision": precision,
        "max_abs_diff": worst,
        "tolerance": tolerance,
        "within_tolerance": all(worst[n] <= tolerance[n] for n in tolerance),
        "fails_above": {"label_logprobs": GROSS_LOGPROB_ERROR},
        "reference": "PyTorch float32",
        "cases": "as for the float32 graph (random ids, scales uniform in (0.05, 1])",
    }
