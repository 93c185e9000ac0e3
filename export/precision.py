"""Lighter graphs: a validated float32 graph converted to float16 weights and matmuls, or to int8 weights.

All keep the graph contract unchanged (every graph input and output stays float32), and all keep in float32 what
AtMan measures: the attention scores from ``q.k^T`` through the scale arithmetic and the mask to the softmax, and
the log-prob head (the log-softmax over the logits and the gather of the labels; int8 also leaves the projection to
the logits in float32).

- ``int8`` (``--quantize int8``): weight-only int8 through ``onnxruntime.quantization``'s ``MatMulNBitsQuantizer``
  (8 bits, symmetric, a scale per block of 32 input channels) on the linear layers: MatMul with a constant
  right-hand side, Gemm rewritten to MatMul + Add first. Activations stay float32 (``accuracy_level`` 0: the kernel
  dequantizes the weights and multiplies in float), so a perturbation's log-probs do not depend on the other
  perturbations in its batch; ``accuracy_level`` 4 (int8 dot products) is faster but agrees less with float32.
- ``int8-dynamic`` (``--quantize int8-dynamic``): ``quantize_dynamic`` on the same layers: int8 weights per tensor,
  uint8 activations with one scale per call, shared by the whole batch, which is too coarse for AtMan's small
  log-prob differences when activations are large. Kept for comparison.
- ``quant_pre_process`` is not run for either: its symbolic shape inference fails on these graphs, and ORT's
  optimizer folds the ``Transpose`` of a tied embedding into a second, transposed copy of the embedding matrix.
  The quantizers run ONNX shape inference themselves.
- ``fp16``: ``onnxruntime.transformers.float16.convert_float_to_float16`` with ``keep_io_types=True``: weights and
  matmuls in float16; float32 kept (by op type and by node) for the attention-score path, the normalisation
  statistics and the log-softmax onwards, with the converter's duplicate casts and float32 -> float16 -> float32
  round trips between kept nodes removed.

The graph walks and edits these recipes use are in ``atman_onnx.export.graph_edit``; ``atman_onnx.export.validate``
checks the converted graph against the float32 PyTorch model.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import onnx

from atman_onnx.core.errors import AtmanError
from atman_onnx.export import graph_edit

if TYPE_CHECKING:
    from onnxruntime.transformers.onnx_model import OnnxModel

PRECISIONS = ("fp32", "fp16", "int8", "int8-dynamic")
DTYPES = ("fp32", "fp16")
QUANTIZATIONS = ("int8", "int8-dynamic")
INT8_BLOCK = 32  # input channels per weight scale
INT8_ACCURACY_LEVEL = 0  # MatMulNBits: 0 computes in float (activations never quantised); 4 would use int8 dot products
# What a lighter graph is expected to reach against the float32 PyTorch model: recorded with the figures, not
# enforced (the random token ids of the validation cases are far harder on int8 than real text).
TOLERANCE = {
    "fp16": {"label_logprobs": 5e-2, "inputs_embeds": 1e-3, "present": 1e-1},
    "int8": {"label_logprobs": 7.5e-1, "inputs_embeds": 1e-5, "present": 2.0},
    "int8-dynamic": {"label_logprobs": 7.5e-1, "inputs_embeds": 1e-5, "present": 2.0},
}
# Op types kept in float32 in the fp16 graph, besides the attention-score and head nodes found in the graph.
FP16_OP_BLOCK = (
    "Attention",  # the fused attention: its scores and softmax
    "Softmax",
    "LogSoftmax",
    "Log",
    "Clip",
    "ReduceMin",
    "Pow",
    "ReduceMean",
    "Sqrt",
    "Reciprocal",
    "LayerNormalization",
    "SimplifiedLayerNormalization",
    "Range",
    "CumSum",
)


class PrecisionError(AtmanError):
    """A lighter graph could not be made, or is grossly wrong."""


def precision_name(dtype: str = "fp32", quantize: str | None = None) -> str:
    """The precision that ``--dtype`` and ``--quantize`` ask for: 'fp32', 'fp16', 'int8' or 'int8-dynamic'."""
    if dtype not in DTYPES:
        raise PrecisionError(f"unknown dtype {dtype!r}; supported: {', '.join(DTYPES)}")
    if quantize is not None and quantize not in QUANTIZATIONS:
        raise PrecisionError(f"unknown quantization {quantize!r}; supported: {', '.join(QUANTIZATIONS)}")
    if quantize and dtype != "fp32":
        raise PrecisionError(
            f"--quantize {quantize} quantizes a float32 graph; it cannot be combined with --dtype {dtype}"
        )
    return quantize or dtype


def _load(src: Path) -> OnnxModel:
    """The graph at ``src`` in ORT's ``OnnxModel`` wrapper, its nodes uniquely named."""
    from onnxruntime.transformers.onnx_model import OnnxModel

    model = OnnxModel(onnx.load(str(src)))
    graph_edit.name_nodes(model)
    return model


def _quiet_import_nbits():
    """Import ORT's MatMulNBits quantizer without letting its ``logging.basicConfig(level=INFO)`` configure the
    root logger of the whole process."""
    root = logging.getLogger()
    placeholder = logging.NullHandler()
    root.addHandler(placeholder)
    try:
        from onnxruntime.quantization import matmul_nbits_quantizer
    finally:
        root.removeHandler(placeholder)
    logging.getLogger(matmul_nbits_quantizer.__name__).setLevel(logging.WARNING)
    return matmul_nbits_quantizer


def linear_matmuls(model: OnnxModel) -> list[str]:
    """The linear layers int8 takes: MatMul with a constant right-hand side, except the logits projection."""
    head = graph_edit.head_matmuls(model)
    return [
        n.name
        for n in model.graph().node
        if n.op_type == "MatMul" and model.get_initializer(n.input[1]) is not None and n.name not in head
    ]


def to_int8(src: Path, dst: Path, external_data: bool = False, method: str = "weights") -> dict:
    """int8 weights for the linear layers; returns what was done.

    method "weights" (``--quantize int8``): weight-only, ``MatMulNBits`` with 8 bits, symmetric, one float scale per
    block of ``INT8_BLOCK`` input channels, activations in float (``INT8_ACCURACY_LEVEL``), so no row depends on
    the others in its batch.
    method "dynamic" (``--quantize int8-dynamic``): ``quantize_dynamic``, int8 weights per tensor and one uint8
    activation scale per call, shared by the whole batch.
    """
    model = _load(src)
    gemms = graph_edit.gemm_to_matmul(model)
    linear = linear_matmuls(model)
    if not linear:
        raise PrecisionError("found no linear layers (MatMul with constant weights) to quantize")
    kept = sorted(graph_edit.head_matmuls(model))
    if method == "weights":
        nbits = _quiet_import_nbits()
        quantizer = nbits.MatMulNBitsQuantizer(
            model.model,
            bits=8,
            block_size=INT8_BLOCK,
            is_symmetric=True,
            accuracy_level=INT8_ACCURACY_LEVEL,
            nodes_to_include=linear,
            op_types_to_quantize=("MatMul",),
        )
        quantizer.process()
        quantizer.model.save_model_to_file(str(dst), external_data)
        described = (
            f"onnxruntime.quantization MatMulNBitsQuantizer: 8-bit symmetric weights, blocks of {INT8_BLOCK}, "
            f"accuracy_level {INT8_ACCURACY_LEVEL}"
        )
    elif method == "dynamic":
        from onnxruntime.quantization import QuantType, quantize_dynamic

        quant_logger = logging.getLogger()  # quantize_dynamic warns about pre-processing on the root logger
        level = quant_logger.level
        quant_logger.setLevel(logging.ERROR)
        try:
            quantize_dynamic(
                model.model,
                str(dst),
                op_types_to_quantize=["MatMul"],
                nodes_to_quantize=linear,
                weight_type=QuantType.QInt8,
                use_external_data_format=external_data,
                extra_options={"MatMulConstBOnly": True},
            )
        finally:
            quant_logger.setLevel(level)
        described = "onnxruntime.quantization.quantize_dynamic: int8 weights, uint8 activations per call"
    else:
        raise PrecisionError(f"unknown int8 method {method!r}; known: weights, dynamic")
    return {"method": described, "quantized_matmuls": len(linear), "gemm_rewritten": gemms, "kept_float": kept}


def fp16_block_list(model: OnnxModel) -> set[str]:
    """Nodes kept in float32: each softmax back to its q.k^T matmul (scale, mask, AtMan factors included), the
    additive bias of each fused Attention (AtMan factors and mask), the normalisation statistics, and the
    log-softmax with everything after it."""
    block = graph_edit.upstream_to_matmul(model, model.get_nodes_by_op_type("Softmax"))
    producers = model.output_name_to_node()
    biases = [
        producers[node.input[3]]
        for node in model.get_nodes_by_op_type("Attention")
        if len(node.input) > 3 and node.input[3] in producers
    ]
    block |= graph_edit.upstream_to_matmul(model, biases)
    block |= graph_edit.downstream(model, model.get_nodes_by_op_type("LogSoftmax"))
    consumers = model.input_name_to_nodes()
    for node in model.get_nodes_by_op_type("ReduceMean"):  # x * rsqrt(mean(x^2) + eps): keep the eps Add in float32
        block |= {n.name for n in model.get_children(node, consumers, output_index=0) if n.op_type in ("Add", "Div")}
    return block


def to_fp16(src: Path, dst: Path, external_data: bool = False) -> dict:
    """Float16 weights and matmuls; float32 graph inputs/outputs, attention scores, softmax and log-prob head."""
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16
    from onnxruntime.transformers.onnx_model import OnnxModel

    model = _load(src)
    block = fp16_block_list(model)
    kept_by_type = sum(n.op_type in FP16_OP_BLOCK for n in model.graph().node if n.name not in block)
    converted = OnnxModel(
        convert_float_to_float16(
            model.model,
            keep_io_types=True,
            op_block_list=[*DEFAULT_OP_BLOCK_LIST, *FP16_OP_BLOCK],
            node_block_list=sorted(block),
        )
    )
    graph_edit.drop_duplicate_casts(converted)
    graph_edit.drop_round_trips(converted)
    _save(converted.model, dst, external_data)
    return {
        "method": "onnxruntime.transformers.float16.convert_float_to_float16 (keep_io_types)",
        "float32_nodes": len(block) + kept_by_type,
    }


def _save(model: onnx.ModelProto, path: Path, external_data: bool) -> None:
    if external_data:
        onnx.save_model(model, str(path), save_as_external_data=True, location=path.name + ".data")
    else:
        onnx.save_model(model, str(path))


def convert(src: Path, dst: Path, precision: str, external_data: bool = False) -> dict:
    """Write the ``precision`` version of the float32 graph ``src`` to ``dst``; returns a description."""
    if precision in ("int8", "int8-dynamic"):
        return to_int8(src, dst, external_data, method="weights" if precision == "int8" else "dynamic")
    if precision == "fp16":
        return to_fp16(src, dst, external_data)
    raise PrecisionError(f"no conversion to {precision!r}; lighter precisions: {', '.join(PRECISIONS[1:])}")
