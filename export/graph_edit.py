"""Walks and edits of an ONNX graph for the lighter precisions, on ONNX Runtime's ``OnnxModel`` wrapper.

The walks find what a conversion must leave in float32: the logits projection (the matmul nearest upstream of the
log-softmax), each softmax back to its ``q.k^T`` matmul, and everything after the log-softmax. The edits rewrite
Gemm as MatMul, which the int8 quantizers take, and remove the Cast nodes the float16 converter leaves behind:
duplicates, and float32 -> float16 -> float32 round trips between nodes kept in float32.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from onnx import NodeProto, TensorProto, helper, numpy_helper

if TYPE_CHECKING:  # imported where a model is loaded: importing onnxruntime.transformers extends sys.path
    from onnxruntime.transformers.onnx_model import OnnxModel

MATMULS = ("MatMul", "Gemm")
SHAPE_OPS = ("Shape", "Size")  # read only their input's shape, so a walk back through values stops there


def name_nodes(model: OnnxModel) -> None:
    """Give every node a unique name: block and quantize lists refer to nodes by name."""
    seen: set[str] = set()
    for i, node in enumerate(model.graph().node):
        if not node.name or node.name in seen:
            node.name = f"{node.op_type}_atman_{i}"
        seen.add(node.name)


def upstream_to_matmul(model: OnnxModel, start: list[NodeProto]) -> set[str]:
    """Names of ``start`` and their ancestors, back to (and including) the nearest MatMul/Gemm or Shape/Size."""
    producers = model.output_name_to_node()
    stop_types = (*MATMULS, *SHAPE_OPS)
    stops = [n for n in model.graph().node if n.op_type in stop_types]
    inner = [*start, *(n for node in start for n in model.get_parent_subgraph_nodes(node, stops, producers))]
    edge = [p for node in inner for p in model.get_parents(node, producers) if p.op_type in stop_types]
    return {node.name for node in (*inner, *edge)}


def downstream(model: OnnxModel, start: list[NodeProto]) -> set[str]:
    """Names of ``start`` and every node that depends on their first output."""
    consumers = model.input_name_to_nodes()
    return {n.name for node in start for n in (node, *model.get_children_subgraph_nodes(node, [], consumers))}


def head_matmuls(model: OnnxModel) -> set[str]:
    """The MatMul/Gemm nodes that produce the logits: the nearest ones upstream of the log-softmax."""
    upstream = upstream_to_matmul(model, model.get_nodes_by_op_type("LogSoftmax"))
    return {n.name for n in model.graph().node if n.name in upstream and n.op_type in MATMULS}


def _plain_gemm(model: OnnxModel, node: NodeProto) -> bool:
    """A Gemm that is x @ B (+ C): constant B, alpha = beta = 1, A not transposed."""
    attribute = model.get_node_attribute
    return (
        node.op_type == "Gemm"
        and attribute(node, "alpha") in (None, 1.0)
        and attribute(node, "beta") in (None, 1.0)
        and not attribute(node, "transA")
        and model.get_initializer(node.input[1]) is not None
    )


def gemm_to_matmul(model: OnnxModel) -> int:
    """Rewrite plain Gemm nodes as MatMul (+ Add for the bias) in place, in the same position; returns how many."""
    graph = model.graph()
    nodes, rewritten = [], 0
    for node in graph.node:
        if not _plain_gemm(model, node):
            nodes.append(node)
            continue
        weight = node.input[1]
        if model.get_node_attribute(node, "transB"):
            transposed = numpy_helper.to_array(model.get_initializer(weight)).T.copy()
            weight = f"{weight}_atman_t"
            model.add_initializer(numpy_helper.from_array(transposed, weight))
        has_bias = len(node.input) > 2 and node.input[2]
        product = f"{node.output[0]}_atman_mm" if has_bias else node.output[0]
        nodes.append(helper.make_node("MatMul", [node.input[0], weight], [product], name=f"{node.name}_matmul"))
        if has_bias:
            nodes.append(helper.make_node("Add", [product, node.input[2]], [node.output[0]], name=f"{node.name}_bias"))
        rewritten += 1
    if rewritten:
        del graph.node[:]
        graph.node.extend(nodes)
        model.update_graph()  # drops the initializers nothing reads any more
    return rewritten


def drop_duplicate_casts(model: OnnxModel) -> int:
    """Remove the later copies of Cast nodes that write an output already written: the float16 converter adds one
    per blocked consumer of a float16 value, all alike, and ONNX Runtime refuses a graph with them."""
    graph = model.graph()
    seen: set[str] = set()
    duplicates = []
    for index, node in enumerate(graph.node):
        if node.op_type == "Cast" and node.output[0] in seen:
            duplicates.append(index)
        seen.update(node.output)
    for index in reversed(duplicates):
        del graph.node[index]
    return len(duplicates)


def drop_round_trips(model: OnnxModel) -> int:
    """Bypass float32 -> float16 -> float32 Cast pairs and prune the casts left unread; returns how many.

    The converter casts every blocked node's output to float16 and back before the next blocked node, so float32
    sections (squares of large activations, the most negative float32 of the mask fill) would still pass through
    float16 and overflow."""
    producers = model.output_name_to_node()
    outputs = {o.name for o in model.graph().output}

    def cast_to(node: NodeProto | None) -> int | None:
        return model.get_node_attribute(node, "to") if node is not None and node.op_type == "Cast" else None

    bypass: dict[str, str] = {}
    for node in model.get_nodes_by_op_type("Cast"):
        if cast_to(node) != TensorProto.FLOAT or node.output[0] in outputs:
            continue
        half = producers.get(node.input[0])
        if cast_to(half) == TensorProto.FLOAT16 and model.get_dtype(half.input[0]) == TensorProto.FLOAT:
            bypass[node.output[0]] = half.input[0]
    for cast_output, float_input in bypass.items():
        model.replace_input_of_all_nodes(cast_output, float_input)
    if bypass:
        model.prune_graph(allow_remove_graph_inputs=False)
    return len(bypass)
