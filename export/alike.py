"""Which models the exporter traces at two layers (``export.repeat`` grows the graph to the full depth): those
whose decoder layers are all the same code with the same settings, weights aside; and the model cut to two layers
while it is traced."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch

TRACED_DEPTH = 2


def decoder_layers(body: torch.nn.Module, depth: int) -> tuple[str, torch.nn.ModuleList] | None:
    """The model body's list of decoder layers (its attribute name and the list): the first ModuleList of
    ``depth`` modules, or None."""
    for name, child in body.named_children():
        if isinstance(child, torch.nn.ModuleList) and len(child) == depth:
            return name, child
    return None


def _settings(layer: torch.nn.Module) -> list:
    """A layer's plain settings (numbers, strings, flags of every submodule; not its index) and its buffers."""
    out: list = []
    for path, module in layer.named_modules():
        plain = {
            k: v
            for k, v in vars(module).items()
            if not k.startswith("_") and k != "layer_idx" and isinstance(v, (bool, int, float, str, tuple, type(None)))
        }
        out.append((path, type(module).__qualname__, sorted(plain.items(), key=lambda kv: kv[0])))
    return [out, [(name, tuple(p.shape), p.dtype) for name, p in layer.named_parameters()]]


def alike(config: Any, layers: torch.nn.ModuleList) -> bool:
    """Whether every layer is the same code with the same settings and buffers as layer 1 (weights aside), and the
    config's per-layer lists (such as ``layer_types``) hold one value each."""
    depth = len(layers)
    for value in vars(config).values():
        if isinstance(value, (list, tuple)) and len(value) == depth and len({repr(v) for v in value}) > 1:
            return False
    first = _settings(layers[1])
    buffers = dict(layers[1].named_buffers())
    for layer in list(layers)[2:]:
        if _settings(layer) != first:
            return False
        theirs = dict(layer.named_buffers())
        if theirs.keys() != buffers.keys() or any(not torch.equal(theirs[k], buffers[k]) for k in buffers):
            return False
    return True


@contextlib.contextmanager
def shallow(config: Any, body: torch.nn.Module, name: str) -> Iterator[None]:
    """The model cut to its first TRACED_DEPTH layers for the duration (its config's depth and per-layer lists
    too), restored after."""
    layers = getattr(body, name)
    depth = len(layers)
    saved = {k: v for k, v in vars(config).items() if isinstance(v, (list, tuple)) and len(v) == depth}
    saved["num_hidden_layers"] = config.num_hidden_layers
    try:
        setattr(body, name, torch.nn.ModuleList(list(layers)[:TRACED_DEPTH]))
        for key, value in saved.items():
            setattr(config, key, TRACED_DEPTH if key == "num_hidden_layers" else type(value)(value[:TRACED_DEPTH]))
        yield
    finally:
        setattr(body, name, layers)
        for key, value in saved.items():
            setattr(config, key, value)
