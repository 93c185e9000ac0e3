"""The PyTorch reference AtMan explainer: what "exactly" means for parity. Not the product path.

Written independently of the runtime's planner and driver: one full-sequence pass per unit on the patched torch
model, following docs/method.md line by line. An image-text model runs whole, from pixels, as transformers runs it:
its vision tower, its own merging of the image features, and its text model.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from atman_onnx.models.patch import patch, text_model


@torch.no_grad()
def reference_relevance(
    model: torch.nn.Module,
    mode: str,
    prompt_ids: list[int],
    target_ids: list[int],
    *,
    factor: float = 0.1,
    conceptual: float | None = None,
    groups: list[list[int]] | None = None,
    pixel_values: np.ndarray | None = None,
) -> np.ndarray:
    """Relevance [n_units, n_target]: one unit per fed position, or per group when ``groups`` is given.
    ``pixel_values`` [tiles, 3, S, S]: the images of an image-text model's prompt."""
    patch(model, mode)
    ids = torch.tensor([prompt_ids + target_ids[:-1]])
    n_fed = ids.shape[1]
    at = torch.arange(len(prompt_ids) - 1, n_fed)
    labels = torch.tensor(target_ids)
    images = {} if pixel_values is None else {"pixel_values": torch.from_numpy(pixel_values)[None]}

    def cross_entropy(scale: torch.Tensor) -> torch.Tensor:
        logits = model(input_ids=ids, atman_scale=scale[None].float(), **images).logits[0, at].double()
        return -torch.log_softmax(logits, dim=-1)[torch.arange(len(labels)), labels]

    base = cross_entropy(torch.ones(n_fed))
    units = groups if groups is not None else [[j] for j in range(n_fed)]
    embeds = text_model(model).get_input_embeddings()(ids)
    if images:  # what the text model is fed: the image features in the place of the image tokens
        inner: Any = model.model  # a Hugging Face model's submodules are dynamic attributes (Tensor | Module to mypy)
        features = torch.cat(inner.get_image_features(**images).pooler_output)
        if hasattr(inner, "inputs_merger"):  # Idefics3
            embeds = inner.inputs_merger(ids, embeds, features)
        else:  # SmolVLM
            embeds = embeds.masked_scatter(inner.get_placeholder_mask(ids, embeds, features), features)
    embeds = embeds[0].double()
    explained = sorted({p for unit in units for p in unit})
    rows = []
    for unit in units:
        scale = torch.ones(n_fed, dtype=torch.float64)
        if conceptual is not None:
            for k in explained:
                cos = max(torch.cosine_similarity(embeds[j], embeds[k], dim=0).item() for j in unit)
                if cos >= conceptual:
                    scale[k] = (1 - factor) * (1 - cos) + factor
        scale[unit] = factor
        rows.append((cross_entropy(scale) - base).numpy())
    return np.stack(rows)
