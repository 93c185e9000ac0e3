"""The torch module that is traced into the ONNX graph: AtMan-patched model plus the outputs the runtime reads.

It takes the graph contract's inputs (see ``atman_onnx.runtime.contract``) and returns label log-probs and logits
only at the requested positions, and the input embeddings for conceptual suppression, so that [batch, seq, vocab]
logits never leave the graph.
"""

from __future__ import annotations

import torch

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


class AtmanGraph(torch.nn.Module):
    """Wraps a patched causal LM with the signature of the exported graph."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.embed = model.get_input_embeddings()
        self.body = model.base_model
        self.head = model.get_output_embeddings()

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        attention_scale: torch.Tensor,
        label_positions: torch.Tensor,
        labels: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        embeds = self.embed(input_ids)
        hidden = self.body(
            inputs_embeds=embeds, attention_mask=attention_mask, atman_scale=attention_scale, use_cache=False
        ).last_hidden_state
        index = label_positions[..., None].expand(-1, -1, hidden.shape[-1])
        logits = self.head(hidden.gather(1, index)).float()
        logprobs = torch.log_softmax(logits, dim=-1).gather(-1, labels[..., None]).squeeze(-1)
        return logprobs, logits, embeds.float()
