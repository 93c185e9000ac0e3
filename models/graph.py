"""The torch module that is traced into the ONNX graph: AtMan-patched model plus the outputs the runtime reads.

It takes the graph contract's inputs (see ``atman_onnx.core.contract``): new tokens, optionally on top of the
cached keys and values of an unperturbed pass over a shared prefix. It returns label log-probs and logits only at
the requested positions, the input embeddings for conceptual suppression, and the keys and values of every
position, so that [batch, seq, vocab] logits never leave the graph.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from transformers import DynamicCache

from atman_onnx.models.patch import text_model
from atman_onnx.models.registry import Architecture, architecture

# The Hugging Face models wrapped here are typed Any: their config and submodules are dynamic attributes (mypy sees
# nn.Module.__getattr__'s Tensor | Module).


def dims(config, spec: Architecture) -> dict[str, int]:
    """The sizes the runtime needs to build caches and budget memory (no key/value heads: as many as heads; no
    head size: hidden / heads; no MLP width: 4 x hidden)."""
    heads = config.num_attention_heads
    return {
        "num_layers": config.num_hidden_layers,
        "num_heads": heads,
        "kv_heads": getattr(config, "num_key_value_heads", None) or heads,
        "head_dim": getattr(config, "head_dim", None) or config.hidden_size // heads,
        "intermediate_size": getattr(config, spec.intermediate, None) or 4 * config.hidden_size,
    }


def cache_keyword(body: torch.nn.Module) -> str:
    """The name the model body takes its key/value cache by, and returns it under: ``cache`` where its forward
    accepts that (transformers 5.24 deprecated ``past_key_values``), else ``past_key_values``."""
    return "cache" if "cache" in inspect.signature(body.forward).parameters else "past_key_values"


class AtmanGraph(torch.nn.Module):
    """Wraps a patched causal LM (or an image-text model's text model and head) with the signature of the exported
    graph; its first input is token ids, or input embeddings when ``takes_embeds``."""

    def __init__(self, model: Any):
        super().__init__()
        text = text_model(model)
        self.takes_embeds = text is not model
        self.config = text.config
        spec = architecture(text.config.model_type)
        self.dims = dims(text.config, spec)
        self.embed = text.get_input_embeddings()  # a module: Gemma scales inside it
        self.body = text.base_model
        self.head = model.get_output_embeddings()  # a module: Phi's and GPT-J's biases
        self.softcap = getattr(text.config, "final_logit_softcapping", None)
        self.divisor = getattr(text.config, spec.logits_divisor) if spec.logits_divisor else None
        self.cache_keyword = cache_keyword(self.body)

    def empty_past(self, batch: int = 1) -> list[torch.Tensor]:
        shape = (batch, self.dims["kv_heads"], 0, self.dims["head_dim"])
        return [torch.zeros(shape) for _ in range(2 * self.dims["num_layers"])]

    def forward(
        self,
        inputs: torch.Tensor,
        attention_mask: torch.Tensor,
        attention_scale: torch.Tensor,
        label_positions: torch.Tensor,
        labels: torch.Tensor,
        *caches: torch.Tensor,
    ) -> tuple[torch.Tensor, ...]:
        """The contract's outputs; ``caches`` are the shared past (batch 1) of every layer, then each row's own
        past (the row cache) of every layer."""
        batch, n = inputs.shape[0], 2 * self.dims["num_layers"]
        past = caches[:n] or tuple(self.empty_past())
        rows = caches[n:] or tuple(self.empty_past(batch))
        keys = [torch.cat([past[i].expand(batch, -1, -1, -1), rows[i]], dim=2) for i in range(n)]
        pairs = [(keys[i], keys[i + 1]) for i in range(0, n, 2)]
        # A cache of full layers, also for sliding-window models: every layer returns all keys, so the factors line
        # up with them, and the mask alone enforces the window.
        cache = DynamicCache(ddp_cache_data=pairs)
        embeds = inputs if self.takes_embeds else self.embed(inputs)
        out = self.body(
            inputs_embeds=embeds,
            attention_mask=attention_mask,
            atman_scale=attention_scale,
            use_cache=True,
            **{self.cache_keyword: cache},
        )
        hidden = out.last_hidden_state
        index = label_positions[..., None].expand(-1, -1, hidden.shape[-1])
        logits = self.head(hidden.gather(1, index)).float()
        if self.divisor is not None:  # Granite
            logits = logits / self.divisor
        if self.softcap is not None:  # Gemma 2 and 3
            logits = torch.tanh(logits / self.softcap) * self.softcap
        logprobs = torch.log_softmax(logits, dim=-1).gather(-1, labels[..., None]).squeeze(-1)
        seq = inputs.shape[1]  # the keys and values of the positions fed in this call
        present = [
            t.narrow(2, t.shape[2] - seq, seq)
            for layer in getattr(out, self.cache_keyword).layers
            for t in (layer.keys, layer.values)
        ]
        if self.takes_embeds:  # the caller has them: an output of the same name would clash with the input
            return (logprobs, logits, *present)
        return (logprobs, logits, embeds.float(), *present)


class VisionGraph(torch.nn.Module):
    """An image-text model's vision tower and connector: tiles [tiles, 3, S, S] to the features of their image
    tokens [tiles, tokens per tile, hidden], for whole (unpadded) tiles."""

    def __init__(self, model: Any):
        super().__init__()
        self.vision = model.model.vision_model
        self.connector = model.model.connector
        self.patch_size = model.config.vision_config.patch_size

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        side = pixel_values.shape[-1] // self.patch_size
        patches = torch.ones(pixel_values.shape[0], side, side, dtype=torch.bool)
        hidden = self.vision(pixel_values=pixel_values, patch_attention_mask=patches).last_hidden_state
        return self.connector(hidden)
