"""The torch module that is traced into the ONNX graph: AtMan-patched model plus the outputs the runtime reads.

It takes the graph contract's inputs (see ``atman_onnx.core.contract``): new tokens, optionally on top of the
cached keys and values of an unperturbed pass over a shared prefix. It returns label log-probs and logits only at
the requested positions, the input embeddings for conceptual suppression, and the keys and values of every
position, so that [batch, seq, vocab] logits never leave the graph.
"""

from __future__ import annotations

import torch
from transformers import DynamicCache

from atman_onnx.models.attention import implementation_name, register
from atman_onnx.models.registry import family


def patch(model: torch.nn.Module, mode: str) -> torch.nn.Module:
    """Switch ``model`` (in place) to AtMan attention in ``mode``; refuses unsupported architectures."""
    family(model.config.model_type)
    register()
    name = implementation_name(mode)
    model.config._attn_implementation = name
    for sub in model.modules():
        cfg = getattr(sub, "config", None)
        if cfg is not None and hasattr(cfg, "_attn_implementation"):
            cfg._attn_implementation = name
    return model.eval()


def dims(config) -> dict[str, int]:
    """The sizes the runtime needs to build caches and budget memory."""
    heads = config.num_attention_heads
    return {
        "num_layers": config.num_hidden_layers,
        "num_heads": heads,
        "kv_heads": getattr(config, "num_key_value_heads", None) or heads,
        "head_dim": getattr(config, "head_dim", None) or config.hidden_size // heads,
        "intermediate_size": getattr(config, "intermediate_size", None) or 4 * config.hidden_size,
    }


class AtmanGraph(torch.nn.Module):
    """Wraps a patched causal LM with the signature of the exported graph."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.config = model.config
        self.dims = dims(model.config)
        self.embed = model.get_input_embeddings()
        self.body = model.base_model
        self.head = model.get_output_embeddings()

    def empty_past(self) -> list[torch.Tensor]:
        shape = (1, self.dims["kv_heads"], 0, self.dims["head_dim"])
        return [torch.zeros(shape) for _ in range(2 * self.dims["num_layers"])]

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        attention_scale: torch.Tensor,
        label_positions: torch.Tensor,
        labels: torch.Tensor,
        *past: torch.Tensor,
    ) -> tuple[torch.Tensor, ...]:
        past = past or tuple(self.empty_past())
        batch = input_ids.shape[0]
        pairs = [(past[i].expand(batch, -1, -1, -1), past[i + 1].expand(batch, -1, -1, -1)) for i in range(0, len(past), 2)]
        cache = DynamicCache(ddp_cache_data=pairs, config=self.config)
        embeds = self.embed(input_ids)
        out = self.body(
            inputs_embeds=embeds,
            attention_mask=attention_mask,
            atman_scale=attention_scale,
            past_key_values=cache,
            use_cache=True,
        )
        hidden = out.last_hidden_state
        index = label_positions[..., None].expand(-1, -1, hidden.shape[-1])
        logits = self.head(hidden.gather(1, index)).float()
        logprobs = torch.log_softmax(logits, dim=-1).gather(-1, labels[..., None]).squeeze(-1)
        present = [t for layer in out.past_key_values.layers for t in (layer.keys, layer.values)]
        return (logprobs, logits, embeds.float(), *present)
