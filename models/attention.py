"""AtMan attention: one attention function per manipulation mode, registered with transformers.

The per-key factors travel as the keyword argument ``atman_scale`` ([batch, kv_len] float), which transformers
passes from the model's forward down to every attention call. Registering the function (and a boolean mask
builder) under a name and setting ``config._attn_implementation`` to it patches every layer and head without
forking modeling code.
"""

from __future__ import annotations

import functools

import torch
from transformers import AttentionInterface
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from atman_onnx.core.errors import AtmanError

MODES = ("log_additive", "multiplicative")
# Keywords that carry no attention arithmetic (positions for other kernels, cache, router and output flags); every other
# keyword besides those named in ``atman_attention``'s signature is refused.
PASSIVE = frozenset({"position_ids", "use_cache", "output_router_logits", "output_attentions", "output_hidden_states"})
# log(0) would give rows of -inf when a row sees only the suppressed key; the smallest normal float32 keeps it finite.
_TINY = torch.finfo(torch.float32).tiny


class UnsupportedAttentionError(AtmanError):
    """A model's attention passes something AtMan attention does not honour."""


def implementation_name(mode: str, fused: bool = False) -> str:
    """The attention-implementation name registered for ``mode``; ``fused``: the one exported graphs use, which
    runs log-additive attention as one fused attention call (multiplicative has no fused form)."""
    if mode not in MODES:
        raise ValueError(f"unknown manipulation mode {mode!r}; supported: {', '.join(MODES)}")
    return f"atman_{mode}_fused" if fused and mode == "log_additive" else f"atman_{mode}"


def _repeat_kv(x: torch.Tensor, n_rep: int) -> torch.Tensor:
    """Expand grouped key/value heads [b, kv_heads, s, d] to the query heads [b, kv_heads * n_rep, s, d]."""
    if n_rep == 1:
        return x
    b, h, s, d = x.shape
    return x[:, :, None].expand(b, h, n_rep, s, d).reshape(b, h * n_rep, s, d)


def manipulated_scores(
    raw: torch.Tensor,
    visible: torch.Tensor | None,
    scale: torch.Tensor | None,
    scaling: float,
    mode: str,
    softcap: float | None = None,
) -> torch.Tensor:
    """Scaled, AtMan-manipulated attention scores before masking (docs/method.md, "The manipulation").

    raw: q.k^T [b, h, q, k]; visible: bool [b, 1, q, k] or None (all visible); scale: [b, k] or None.
    With ``softcap`` (Gemma 2) the scaled scores are capped first, ``tanh(s / c) * c``, and manipulated after.
    """
    if softcap is not None:
        raw, scaling = torch.tanh(raw * scaling / softcap) * softcap, 1.0
    if scale is None:
        return raw * scaling
    f = scale.to(torch.float32)[:, None, None, :]
    if mode == "multiplicative":
        hidden = torch.zeros_like(raw, dtype=torch.bool) if visible is None else ~visible
        row_min = raw.masked_fill(hidden, float("inf")).amin(dim=-1, keepdim=True)
        return (raw - row_min) * f * scaling
    return raw * scaling + log_factors(scale)


def log_factors(scale: torch.Tensor) -> torch.Tensor:
    """The log-additive bias of factors [b, k]: log f as [b, 1, 1, k] (float32), a factor of 0 taken as the smallest
    normal float32 so that every row stays finite."""
    return torch.log(scale.to(torch.float32).clamp_min(_TINY))[:, None, None, :]


def atman_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    softcap: float | None = None,
    sliding_window: int | None = None,
    *,
    mode: str,
    fused: bool = False,
    atman_scale: torch.Tensor | None = None,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Eager attention with the AtMan factors applied; same signature and outputs as transformers' eager path.

    ``scaling`` is used exactly as the model passes it; ``sliding_window`` is enforced by the mask (built by the
    registered mask function over a cache of full layers); any keyword outside ``PASSIVE`` is refused. ``fused``
    (log-additive, no softcap): the factors' logarithms and the mask become one additive bias of a single
    ``scaled_dot_product_attention`` call, which the exporter writes as ONNX's fused ``Attention`` (opset 23),
    so the graph never writes the scores out op by op; it returns no weights.
    """
    unknown = sorted(set(kwargs) - PASSIVE)
    if unknown:
        raise UnsupportedAttentionError(
            f"{type(module).__name__} passes attention keyword {unknown[0]!r}, which AtMan attention does not honour"
        )
    if scaling is None:
        raise UnsupportedAttentionError(f"{type(module).__name__} passes no attention scaling")
    q_len, k_len = query.shape[-2], key.shape[-2]
    if attention_mask is None:  # a plain causal mask, aligned to the last query (cached keys come first)
        visible = torch.ones(q_len, k_len, dtype=torch.bool, device=query.device).tril(k_len - q_len)[None, None]
    else:
        visible = attention_mask if attention_mask.dtype == torch.bool else attention_mask == 0
        visible = visible[:, :, :, :k_len]
    if fused and mode == "log_additive" and softcap is None:
        return _fused(query, key, value, visible, atman_scale, scaling, dropout if module.training else 0.0), None
    n_rep = query.shape[1] // key.shape[1]
    key, value = _repeat_kv(key, n_rep), _repeat_kv(value, n_rep)
    raw = torch.matmul(query.float(), key.float().transpose(-1, -2))
    scores = manipulated_scores(raw, visible, atman_scale, scaling, mode, softcap)
    scores = scores.masked_fill(~visible, torch.finfo(scores.dtype).min)
    weights = torch.softmax(scores, dim=-1).to(value.dtype)
    weights = torch.nn.functional.dropout(weights, p=dropout, training=module.training)
    out = torch.matmul(weights, value).transpose(1, 2).contiguous()
    return out, weights


def _fused(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    visible: torch.Tensor,
    scale: torch.Tensor | None,
    scaling: float,
    dropout: float,
) -> torch.Tensor:
    """Log-additive attention as one ``scaled_dot_product_attention``: softmax(q.k^T * scaling + log f + mask).v,
    the same arithmetic as the explicit path with grouped key/value heads left to the call."""
    f = torch.ones(1, key.shape[-2], device=query.device) if scale is None else scale
    bias = log_factors(f).masked_fill(~visible, torch.finfo(torch.float32).min)
    out = torch.nn.functional.scaled_dot_product_attention(
        query.float(),
        key.float(),
        value.float(),
        attn_mask=bias,
        dropout_p=dropout,
        scale=scaling,
        enable_gqa=query.shape[1] != key.shape[1],  # the exporter takes grouped heads only where they are grouped
    )
    return out.to(value.dtype).transpose(1, 2).contiguous()


def _visibility_mask(*args, **kwargs) -> torch.Tensor | None:
    """transformers' boolean sdpa mask, always materialised: the multiplicative mode needs the visible keys."""
    kwargs["allow_is_causal_skip"] = False
    return sdpa_mask(*args, **kwargs)


def register() -> None:
    """Register both modes, and the fused log-additive attention, with transformers' attention and mask interfaces
    (idempotent)."""
    for mode, fused in [(mode, False) for mode in MODES] + [("log_additive", True)]:
        name = implementation_name(mode, fused)
        AttentionInterface.register(name, functools.partial(atman_attention, mode=mode, fused=fused))
        AttentionMaskInterface.register(name, _visibility_mask)
