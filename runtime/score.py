"""Turn log-probs into AtMan relevance: R[j, t] = CE_j(t) - CE_0(t) (docs/method.md, "Relevance")."""

from __future__ import annotations

import numpy as np

from atman_onnx.core.errors import NumericError


def relevance(base_logprobs: np.ndarray, perturbed_logprobs: np.ndarray) -> np.ndarray:
    """[n_units, n_target]: how much suppressing each unit raised each target token's cross-entropy. Log-probs
    that are not finite (an fp16 graph's overflow, say) are refused rather than turned into NaN relevance."""
    bad = int((~np.isfinite(perturbed_logprobs)).any(axis=-1).sum()) + int(not np.isfinite(base_logprobs).all())
    if bad:
        raise NumericError(
            f"the graph gave log-probabilities that are not finite in {bad} of "
            f"{len(perturbed_logprobs) + 1} passes; its numbers overflowed (a lower precision "
            "export, or a large amplifying factor?)"
        )
    return (base_logprobs[None, :].astype(np.float64) - perturbed_logprobs.astype(np.float64)).astype(np.float32)


def by_columns(relevance: np.ndarray, columns: list[tuple[int, ...]]) -> np.ndarray:
    """[n_units, len(columns)]: relevance summed over each column's target tokens (exact: the log-probs of a
    sequence add up)."""
    return np.stack([relevance[:, list(c)].sum(axis=1) for c in columns], axis=1).astype(np.float32)
