"""Switch a Hugging Face causal LM to AtMan attention, as its architecture's spec row says, and prove it took.

``patch`` selects the registered AtMan attention for every layer, the exportable experts implementation of MoE
families, and, where a decoder layer drops its keyword arguments, hooks that hand ``atman_scale`` on to its
attention. ``probe`` runs the patched model once and checks that every layer's attention received the factors,
so a family whose attention bypasses the registered function is refused instead of explained wrongly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from transformers import AttentionInterface

from atman_onnx.models.attention import implementation_name, register
from atman_onnx.models.registry import VISION_LANGUAGE, Architecture, UnsupportedArchitectureError, architecture

# Hugging Face models are typed Any where their config and submodules are read: those are dynamic attributes (mypy
# sees nn.Module.__getattr__'s Tensor | Module).


def text_model(model: Any) -> Any:
    """The part of ``model`` that AtMan manipulates: an image-text model's text model (its vision tower keeps its
    own attention), else the model itself."""
    return model.model.text_model if model.config.model_type in VISION_LANGUAGE else model


def patch(model: Any, mode: str, fused: bool = False) -> torch.nn.Module:
    """Switch ``model`` (in place) to AtMan attention in ``mode``; refuses unsupported architectures. Of an
    image-text model only the text model is switched. ``fused``: the attention that exported graphs run
    (``atman_attention``'s fused path); the reference keeps the explicit one, so parity checks one against the
    other."""
    whole, model = model, text_model(model)
    spec = architecture(model.config.model_type)
    register()
    name = implementation_name(mode, fused)
    model.config._attn_implementation = name
    for sub in model.modules():
        cfg = getattr(sub, "config", None)
        if cfg is not None and hasattr(cfg, "_attn_implementation"):
            cfg._attn_implementation = name
    if spec.experts:
        model.set_experts_implementation(spec.experts)
    if spec.relay_scale and not getattr(model, "_atman_relayed", False):
        _relay_scale(model)
    return whole.eval()


def _attention_modules(model: Any) -> list[tuple[torch.nn.Module, torch.nn.Module]]:
    """(decoder layer, its attention module) for every layer."""
    return [(layer, layer.self_attn) for layer in model.base_model.layers]


def _relay_scale(model: Any) -> None:
    """Hooks that take ``atman_scale`` from each decoder layer's keyword arguments and give it to its attention."""
    for layer, attention in _attention_modules(model):

        def take(module, args, kwargs, attention=attention):
            attention._atman_scale = kwargs.get("atman_scale")

        def give(module, args, kwargs):
            if module._atman_scale is not None:
                kwargs = {**kwargs, "atman_scale": module._atman_scale}
            return args, kwargs

        layer.register_forward_pre_hook(take, with_kwargs=True)
        attention.register_forward_pre_hook(give, with_kwargs=True)
    model._atman_relayed = True


@dataclass(frozen=True)
class Probe:
    """What one forward pass of a patched model handed its attention function."""

    layers: int  # attention calls that received atman_scale
    keywords: frozenset[str]  # every keyword passed besides query, key, value, mask and atman_scale
    scalings: tuple[float, ...]  # the scaling of each call


def probe(model: Any, length: int = 6) -> Probe:
    """Run the patched ``model`` once on ``length`` tokens, recording each attention call."""
    name: str = model.config._attn_implementation  # the one ``patch`` selected
    attend = AttentionInterface()[name]
    calls: list[tuple[bool, frozenset[str], float]] = []

    def recording(module, query, key, value, attention_mask, **kwargs):
        calls.append(
            (
                kwargs.get("atman_scale") is not None,
                frozenset(kwargs) - {"atman_scale"},
                float(kwargs.get("scaling") or 0.0),
            )
        )
        return attend(module, query, key, value, attention_mask, **kwargs)

    ids = torch.zeros(1, length, dtype=torch.long)
    AttentionInterface.register(name, recording)
    try:
        with torch.no_grad():
            model(input_ids=ids, atman_scale=torch.ones(1, length))
    finally:
        register()
    return Probe(
        sum(reached for reached, _, _ in calls),
        frozenset().union(*(k for _, k, _ in calls)),
        tuple(s for _, _, s in calls),
    )


def check(model: Any) -> Architecture:
    """Refuse, in one line, a patched model whose attention does not receive the factors in every layer."""
    model = text_model(model)
    spec = architecture(model.config.model_type)
    found = probe(model)
    layers = model.config.num_hidden_layers
    if found.layers != layers:
        raise UnsupportedArchitectureError(
            f"architecture {spec.model_type!r}: AtMan factors reached {found.layers} of {layers} attention layers"
        )
    return spec
