"""Which models the exporter traces at two layers (``export.repeat`` grows the graph to the full depth): those
whose decoder layers are all the same code with the same settings, weights aside; and the model cut to two layers
while it is traced."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch

from atman_onnx.models.graph import AtmanGraph

TRACED_DEPTH = 2


def decoder_layers(body: torch.nn.Module, depth: int) -> tuple[str, torch.nn.ModuleList] | None:
    """The model body's list of decoder layers (its attribute name and the list): the first ModuleList of
    ``depth`` modules, or None."""
    for name, child in body.named_children():
        if isinstance(child, torch.nn.ModuleList) and len(child) == depth:
            return name, child
    return None


def _settings(layer: torch.nn.Module, config: Any) -> list | None:
    """What a layer is, weights aside: each submodule's class and attributes (not its index; tensors, such as
    buffers, by value) and its parameters' names, shapes and types. None for what cannot be compared: a forward set
    on the instance, or a submodule with a config of its own."""
    out: list = []
    for path, module in layer.named_modules():
        own = {k: v for k, v in vars(module).items() if not k.startswith("_") or k == "_buffers"}
        if "forward" in own or own.get("config", config) is not config:
            return None
        own.pop("layer_idx", None)
        own.pop("config", None)
        for key, value in sorted(own.items()):
            if isinstance(value, torch.Tensor) or key == "_buffers":
                tensors = value if key == "_buffers" else {key: value}
                value = {
                    k: None if t is None else (t.dtype, tuple(t.shape), t.detach().cpu().numpy().tobytes())
                    for k, t in tensors.items()
                }
            elif isinstance(value, torch.nn.Module):
                continue  # a submodule: compared on its own path
            out.append((path, type(module).__qualname__, key, repr(value)))
    return [out, [(name, tuple(p.shape), p.dtype) for name, p in layer.named_parameters()]]


def alike(config: Any, layers: torch.nn.ModuleList) -> bool:
    """Whether every layer after the first is what layer 1 is (``_settings``), and the config's per-layer lists
    (such as ``layer_types``) hold one value each. Layer 0 is held to layer 1 on the traced graph instead."""
    depth = len(layers)
    if getattr(config, "is_heterogeneous", False):
        return False
    for value in vars(config).values():
        if isinstance(value, (list, tuple)) and len(value) == depth and len({repr(v) for v in value}) > 1:
            return False
    first = _settings(layers[1], config)
    return first is not None and all(_settings(layer, config) == first for layer in list(layers)[2:])


@contextlib.contextmanager
def shallow(graph_module: AtmanGraph, name: str) -> Iterator[None]:
    """The traced module cut to its first TRACED_DEPTH layers for the duration (the body's layer list, the config's
    depth and per-layer lists, the module's dims), restored after."""
    body, config, dims = graph_module.body, graph_module.config, graph_module.dims
    layers = getattr(body, name)
    saved = {k: v for k, v in vars(config).items() if isinstance(v, (list, tuple)) and len(v) == len(layers)}
    depth = config.num_hidden_layers
    try:
        setattr(body, name, torch.nn.ModuleList(list(layers)[:TRACED_DEPTH]))
        for key, value in saved.items():
            setattr(config, key, type(value)(value[:TRACED_DEPTH]))
        config.num_hidden_layers = TRACED_DEPTH
        graph_module.dims = {**dims, "num_layers": TRACED_DEPTH}
        yield
    finally:
        setattr(body, name, layers)
        for key, value in saved.items():
            setattr(config, key, value)
        config.num_hidden_layers = depth
        graph_module.dims = dims
