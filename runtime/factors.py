"""The perturbations: one row of per-key factors for every explained unit (docs/method.md, "Conceptual suppression").

A unit is a token position, or a group of positions suppressed together. With a conceptual threshold ``kappa``,
every other explained position whose input embedding has cosine similarity ``cos >= kappa`` to a position of the
unit is suppressed in the same pass with factor ``(1 - s) * (1 - cos) + s`` (the most similar member decides).
"""

from __future__ import annotations

import numpy as np

from atman_onnx.core.errors import InputError

# Chosen from the evaluation (README, Quality): in log_additive mode 0 takes the key out of attention, which ranked
# the evidence best at token units and matches the paper's multiplicative mode at 0.1.
DEFAULT_FACTOR = 0.0


def check_units(units: list[list[int]], n_fed: int) -> list[list[int]]:
    """Validate units (non-empty lists of positions inside the fed sequence)."""
    if not units:
        raise InputError("nothing to explain: no units were given")
    for unit in units:
        if not unit:
            raise InputError("a group to explain is empty")
        bad = [p for p in unit if not 0 <= p < n_fed]
        if bad:
            raise InputError(f"group positions {bad} lie outside the fed sequence of {n_fed} tokens")
    return [sorted(set(unit)) for unit in units]


def cosine_similarity(embeddings: np.ndarray) -> np.ndarray:
    """Pairwise cosine similarity of row vectors, computed in float64."""
    e = embeddings.astype(np.float64)
    e = e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)
    return e @ e.T


def plan_factors(
    units: list[list[int]],
    n_fed: int,
    factor: float,
    conceptual: float | None = None,
    embeddings: np.ndarray | None = None,
) -> np.ndarray:
    """Factors [n_units, n_fed] (float32, 1.0 = untouched) for suppressing each unit in its own pass."""
    factors = np.ones((len(units), n_fed), dtype=np.float64)
    if conceptual is not None:
        if embeddings is None:
            raise ValueError("conceptual suppression needs the input embeddings")
        explained = np.array(sorted({p for unit in units for p in unit}))
        similarity = cosine_similarity(embeddings[explained])
        index = {p: i for i, p in enumerate(explained)}
        for row, unit in enumerate(units):
            cos = similarity[[index[p] for p in unit]].max(axis=0)
            hit = cos >= conceptual
            factors[row, explained[hit]] = (1.0 - factor) * (1.0 - cos[hit]) + factor
    for row, unit in enumerate(units):
        factors[row, unit] = factor
    return factors.astype(np.float32)
