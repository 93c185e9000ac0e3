"""Trace two decoder layers and repeat the second to the model's depth: the exporter's shortcut for models whose
layers are all alike (``export.alike``).

torch.export spends most of an export tracing each decoder layer op by op through fake tensors, twice (to capture,
then to decompose). Where every layer is the same code with the same settings, the graph of layer 1 (fed by layer
0, as every later layer is fed by the one before) is that of any later layer: so the model is traced at depth 2,
and layer 1's nodes, with the cache plumbing that reads its ``past.1.*`` inputs and writes its ``present.1.*``
outputs, are copied for each later layer on its own weights, inputs and outputs. Layer 0's nodes must mirror layer
1's one for one (operators, attributes, wiring), else every layer is traced; the result is validated either way.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Mapping

import numpy as np
import onnx_ir as ir

from atman_onnx.core.contract import graph_inputs, graph_outputs, past_names, present_names, row_past_names
from atman_onnx.export.alike import TRACED_DEPTH

SCOPES = "pkg.torch.onnx.name_scopes"
SLICE = re.compile(r"\.slice\([^)]*\)")


def _layer_of(node: ir.Node, scopes: list[str]) -> int | None:
    """The traced layer whose module the node was traced in, if any. A model that iterates over a slice of its
    layers (``self.layers[:n]``) records them as ``body.layers.slice(None, n, None).i``."""
    names = {SLICE.sub("", name) for name in ast.literal_eval(node.metadata_props.get(SCOPES, "[]"))}
    return next((i for i, scope in enumerate(scopes) if scope in names), None)


def _io(i: int) -> tuple[list[str], list[str]]:
    """Layer ``i``'s graph inputs and outputs by name."""
    return past_names(i + 1)[-2:] + row_past_names(i + 1)[-2:], present_names(i + 1)[-2:]


def _split(graph: ir.Graph, prefix: str) -> list[list[ir.Node]] | None:
    """The nodes of each traced layer: those traced in its module (not constants: the exporter shares them), and
    the plumbing outside any layer that reads its cache inputs (not just their shapes) or feeds its present
    outputs. None where plumbing mixes layers."""
    scopes = [f"{prefix}.{i}" for i in range(TRACED_DEPTH)]
    owner: dict[int, int] = {}  # id(value) -> layer
    for i in range(TRACED_DEPTH):
        names = set(_io(i)[0])
        owner.update({id(v): i for v in graph.inputs if v.name in names})
        owner.update({id(v): i for v in graph.initializers.values() if (v.name or "").startswith(scopes[i] + ".")})
    feeds = [_upstream(graph, set(_io(i)[1])) for i in range(TRACED_DEPTH)]
    placed: dict[int, int] = {}  # id(node) -> layer
    unmarked: set[int] = set()  # layer nodes that read nothing of any layer's
    for node in graph:
        if node.op_type == "Constant":
            continue
        marks = {owner[id(v)] for v in node.inputs if v is not None and id(v) in owner}
        layer = _layer_of(node, scopes)
        if layer is None and node.op_type != "Shape" and marks:
            if len(marks) > 1:
                return None
            (mark,) = marks
            producers = [v.producer() for v in node.inputs if v is not None]
            from_plumbing = all(_layer_of(p, scopes) is None for p in producers if p is not None)
            layer = mark if from_plumbing or id(node) in feeds[mark] else None
        if layer is not None:
            placed[id(node)] = layer
            owner.update({id(v): layer for v in node.outputs})
            if not marks:
                unmarked.add(id(node))
    # The exporter makes a shape computation once, in the first layer that needs it, and later layers reuse it:
    # such a node, made of shared values alone and used beyond its layer, is shared (latest first, so that what
    # feeds only it follows it out).
    for node in reversed(list(graph)):
        users = [user for v in node.outputs for user, _ in v.uses()]
        if id(node) in unmarked and any(placed.get(id(user)) != placed[id(node)] for user in users):
            del placed[id(node)]
    return [[node for node in graph if placed.get(id(node)) == i] for i in range(TRACED_DEPTH)]


def _upstream(graph: ir.Graph, outputs: set[str]) -> set[int]:
    """The nodes that the named graph outputs depend on."""
    seen: set[int] = set()
    stack = [v.producer() for v in graph.outputs if v.name in outputs]
    while stack:
        node = stack.pop()
        if node is not None and id(node) not in seen:
            seen.add(id(node))
            stack.extend(v.producer() for v in node.inputs if v is not None)
    return seen


def _key(node: ir.Node) -> tuple:
    """What makes two nodes the same operation: operator, arity and attributes (tensors by their bytes)."""
    attributes = []
    for name, attr in sorted(node.attributes.items()):
        value = attr.value
        if isinstance(value, ir.TensorProtocol):
            value = (value.dtype, tuple(value.shape), value.numpy().tobytes())
        attributes.append((name, repr(value)))
    return node.domain, node.op_type, len(node.inputs), len(node.outputs), attributes


def _same(u: ir.Value, v: ir.Value, layered: set[int]) -> bool:
    """Whether two values outside the layers are the same: one value, or made alike from the same values (each layer
    gets its own copy of a constant or of a shape computation)."""
    if u is v:
        return True
    made_u, made_v = u.producer(), v.producer()
    if made_u is None or made_v is None or id(u) in layered or id(v) in layered or _key(made_u) != _key(made_v):
        return False
    if list(made_u.outputs).index(u) != list(made_v.outputs).index(v):
        return False
    return all(
        a is b or (a is not None and b is not None and _same(a, b, layered))
        for a, b in zip(made_u.inputs, made_v.inputs)
    )


def repeat_layers(
    model: ir.Model, prefix: str, depth: int, takes_embeds: bool, weights: Mapping[str, np.ndarray]
) -> bool:
    """Grow ``model``, traced at depth 2, to ``depth`` layers in place: layer 1's nodes copied for each later
    layer, on the tensors ``weights`` holds under its initializers' names. Returns False, leaving the model as
    it was, where layer 0 and layer 1 do not mirror each other or a later layer's tensor is missing."""
    graph = model.graph
    parts = _split(graph, prefix)
    if parts is None or len(parts[0]) != len(parts[1]) or not parts[1]:
        return False
    first, second = parts
    index = {id(v): (k, j) for k, node in enumerate(second) for j, v in enumerate(node.outputs)}
    earlier = {id(v): (k, j) for k, node in enumerate(first) for j, v in enumerate(node.outputs)}
    if not _mirrors(graph, first, second, prefix, index, earlier):
        return False
    own = f"{prefix}.1."
    names = [v.name for n in second for v in n.inputs if v is not None and v.is_initializer() and v.name]
    later = [f"{prefix}.{i}.{name[len(own) :]}" for name in names if name.startswith(own) for i in range(2, depth)]
    if any(name not in weights for name in later):
        return False
    mine = {id(node) for node in first + second}
    copies = [[list(node.outputs) for node in second]]
    for layer in range(TRACED_DEPTH, depth):
        copies.append(_copy(graph, second, copies[-1], index, earlier, prefix, layer, weights))
        mine.update(id(outs[0].producer()) for outs in copies[-1])
    last = {id(v): copies[-1][k][j] for k, node in enumerate(second) for j, v in enumerate(node.outputs)}
    for node in second:  # what read layer 1's work, outside the layers (the final norm), reads the last layer's
        for v in node.outputs:
            for user, at in list(v.uses()):
                if id(user) not in mine:
                    user.replace_input_with(at, last[id(v)])
    inputs, outputs = {v.name: v for v in graph.inputs}, {v.name: v for v in graph.outputs}
    graph.inputs.clear()  # in the contract's order
    graph.inputs.extend(inputs[name] for name in graph_inputs(depth, takes_embeds))
    graph.outputs.clear()
    graph.outputs.extend(outputs[name] for name in graph_outputs(depth, takes_embeds))
    graph.sort()
    return True


def _mirrors(graph: ir.Graph, first: list, second: list, prefix: str, index: dict, earlier: dict) -> bool:
    """Whether layer 0's nodes mirror layer 1's one for one: the same operations, each input the counterpart of the
    other's (its own layer's value, input or weight; where layer 1 reads layer 0's work, layer 0 reads what came
    before it), and layer 0's work ends in layer 1 or in its own outputs."""
    (ins0, outs0), ins1 = _io(0), _io(1)[0]
    inputs, role = {v.name: v for v in graph.inputs}, dict(zip(ins1, ins0))
    own0, own1 = f"{prefix}.0.", f"{prefix}.1."
    layered = set(index) | set(earlier)

    def pair(u: ir.Value | None, v: ir.Value | None) -> bool:
        if u is None or v is None:
            return u is v
        if id(v) in index:
            return earlier.get(id(u)) == index[id(v)]
        if id(v) in earlier:  # the chain
            return id(u) not in layered
        if v.name in role:
            return u is inputs.get(role[v.name])
        if v.is_initializer() and v.name and v.name.startswith(own1):
            return u.name == own0 + v.name[len(own1) :]
        return _same(u, v, layered)

    if any(_key(a) != _key(b) or not all(map(pair, a.inputs, b.inputs)) for a, b in zip(first, second)):
        return False
    mine = {id(node) for node in first + second}
    return all(
        all(id(user) in mine for user, _ in v.uses()) and (not v.is_graph_output() or v.name in outs0)
        for node in first
        for v in node.outputs
    )


def _copy(
    graph: ir.Graph,
    template: list[ir.Node],
    before: list[list[ir.Value]],
    index: dict[int, tuple[int, int]],
    earlier: dict[int, tuple[int, int]],
    prefix: str,
    layer: int,
    weights: Mapping[str, np.ndarray],
) -> list[list[ir.Value]]:
    """Layer ``layer``'s copy of the template (layer 1's nodes); ``before`` holds the previous layer's outputs.
    Returns the copy's outputs, node by node."""
    ins1, outs1 = _io(1)
    ins, outs = _io(layer)
    own1, own = f"{prefix}.1.", f"{prefix}.{layer}."
    made: list[list[ir.Value]] = []
    fresh: dict[str, ir.Value] = {}

    def source(v: ir.Value | None) -> ir.Value | None:
        if v is None:
            return None
        if id(v) in index:
            k, j = index[id(v)]
            return made[k][j]
        if id(v) in earlier:  # the chain: what the layer before made
            k, j = earlier[id(v)]
            return before[k][j]
        if v.name in ins1:
            name = ins[ins1.index(v.name)]
            if name not in fresh:
                fresh[name] = ir.Value(name=name, shape=v.shape, type=v.type)
                graph.inputs.append(fresh[name])
            return fresh[name]
        if v.is_initializer() and v.name and v.name.startswith(own1):
            name = own + v.name[len(own1) :]
            if name not in fresh:
                tensor = ir.tensor(weights[name], name=name)
                fresh[name] = ir.Value(name=name, shape=v.shape, type=v.type, const_value=tensor)
                graph.register_initializer(fresh[name])
            return fresh[name]
        return v

    for node in template:
        copy = ir.Node(
            node.domain,
            node.op_type,
            [source(v) for v in node.inputs],
            attributes=list(node.attributes.values()),
            num_outputs=len(node.outputs),
            version=node.version,
            name=f"{node.name}.layer{layer}" if node.name else None,
        )
        for old, new in zip(node.outputs, copy.outputs):
            new.name = outs[outs1.index(old.name)] if old.name in outs1 else old.name and f"{old.name}.layer{layer}"
            new.shape, new.type = old.shape and old.shape.copy(), old.type
            if old.name in outs1:
                graph.outputs.append(new)
        graph.append(copy)
        made.append(list(copy.outputs))
    return made
