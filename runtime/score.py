"""Turn log-probs into AtMan relevance: R[j, t] = CE_j(t) - CE_0(t) (docs/method.md, "Relevance")."""

from __future__ import annotations

import numpy as np


def relevance(base_logprobs: np.ndarray, perturbed_logprobs: np.ndarray) -> np.ndarray:
    """[n_units, n_target]: how much suppressing each unit raised each target token's cross-entropy."""
    return (base_logprobs[None, :].astype(np.float64) - perturbed_logprobs.astype(np.float64)).astype(np.float32)
