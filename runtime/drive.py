"""Drive planned perturbations through the graph in batches and collect the target tokens' log-probs."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from atman_onnx.runtime.session import Graph

# Default batch: about this many token positions per graph call keeps CPU caches and memory in check.
TOKENS_PER_BATCH = 4096


def default_batch_size(n_fed: int) -> int:
    return max(1, TOKENS_PER_BATCH // max(n_fed, 1))


def label_logprobs(
    graph: Graph,
    fed_ids: list[int],
    factors: np.ndarray,
    label_positions: list[int],
    labels: list[int],
    batch_size: int,
    on_batch: Callable[[int], None] | None = None,
) -> np.ndarray:
    """log p(labels) [n_rows, n_labels] for every row of ``factors`` [n_rows, n_fed]."""
    ids = np.asarray(fed_ids, dtype=np.int64)
    positions = np.asarray(label_positions, dtype=np.int64)
    targets = np.asarray(labels, dtype=np.int64)
    out = np.empty((len(factors), len(labels)), dtype=np.float32)
    for start in range(0, len(factors), batch_size):
        rows = factors[start : start + batch_size]
        n = len(rows)
        result = graph.run(
            np.broadcast_to(ids, (n, len(ids))),
            rows,
            np.broadcast_to(positions, (n, len(positions))),
            np.broadcast_to(targets, (n, len(targets))),
        )
        out[start : start + n] = result["label_logprobs"]
        if on_batch is not None:
            on_batch(n)
    return out
