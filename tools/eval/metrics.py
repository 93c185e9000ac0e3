"""Metric functions of the evaluation (numpy only, no model): average precision, curve areas, perturbation plans."""

from __future__ import annotations

import numpy as np


def average_precision(scores, positives) -> float:
    """Average precision of ranking items by ``scores`` (higher = more relevant) against boolean ``positives``.

    AP = sum over score thresholds of (recall gain) x (precision at that threshold), as scikit-learn's
    ``average_precision_score``: tied scores enter together, so the result does not depend on the order of ties.
    """
    scores = np.asarray(scores, dtype=np.float64)
    positives = np.asarray(positives, dtype=bool)
    if scores.shape != positives.shape or scores.ndim != 1:
        raise ValueError("scores and positives must be 1-d and of equal length")
    n_pos = int(positives.sum())
    if n_pos == 0:
        raise ValueError("average precision needs at least one positive")
    order = np.argsort(-scores, kind="stable")
    s, p = scores[order], positives[order]
    hits = np.cumsum(p)
    last = np.r_[np.flatnonzero(np.diff(s) != 0), len(s) - 1]  # the last index of every group of tied scores
    precision = hits[last] / (last + 1)
    recall = hits[last] / n_pos
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def curve_area(fractions, values) -> float:
    """Normalised area under a curve: the trapezoid integral over ``fractions`` divided by their range (so the
    result is the curve's mean height, in the units of ``values``)."""
    x = np.asarray(fractions, dtype=np.float64)
    y = np.asarray(values, dtype=np.float64)
    if x.shape != y.shape or len(x) < 2 or np.any(np.diff(x) <= 0):
        raise ValueError("need at least two points with increasing fractions")
    return float(np.sum((y[1:] + y[:-1]) / 2 * np.diff(x)) / (x[-1] - x[0]))


def top_k(scores, fraction: float) -> np.ndarray:
    """Indices of the ``round(fraction * n)`` highest scores (stable: earlier index first among ties)."""
    scores = np.asarray(scores, dtype=np.float64)
    k = round(fraction * len(scores))
    return np.argsort(-scores, kind="stable")[:k]


def perturbation_rows(scores, candidates, n_fed: int, fractions, factor: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Attention-scale rows [len(fractions), n_fed] for the deletion and the insertion curves of one ranking.

    ``scores`` rank the fed positions ``candidates``. Deletion at fraction k sets the top ``k`` of the candidates
    to ``factor``; insertion at k starts from all candidates at ``factor`` and restores the top ``k`` to 1.
    """
    candidates = np.asarray(candidates, dtype=np.int64)
    deletion = np.ones((len(fractions), n_fed), dtype=np.float32)
    insertion = np.ones((len(fractions), n_fed), dtype=np.float32)
    insertion[:, candidates] = factor
    for row, fraction in enumerate(fractions):
        top = candidates[top_k(scores, fraction)]
        deletion[row, top] = factor
        insertion[row, top] = 1.0
    return deletion, insertion


def aggregate(token_scores, groups) -> np.ndarray:
    """One score per group of positions: the sum of its tokens' scores."""
    token_scores = np.asarray(token_scores, dtype=np.float64)
    return np.array([token_scores[list(g)].sum() for g in groups])


def random_ap(n: int, n_pos: int) -> float:
    """The expected average precision of a uniformly random ranking of ``n`` items with ``n_pos`` positives
    (exact: sum over ranks r of P(positive at r) * E[precision at r | positive at r] / n_pos)."""
    if not 0 < n_pos <= n:
        raise ValueError("need 0 < n_pos <= n")
    r = np.arange(1, n + 1, dtype=np.float64)
    # given a positive at rank r, the other r - 1 items above it hold (n_pos - 1) / (n - 1) positives on average
    above = (r - 1) * ((n_pos - 1) / (n - 1) if n > 1 else 0.0)
    return float(np.sum((n_pos / n) * (1 + above) / r) / n_pos)
