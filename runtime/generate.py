"""Greedy generation with the exported graph: what the model itself completes, when no target is given."""

from __future__ import annotations

import numpy as np

from atman_onnx.runtime.execute import Stop, guarded
from atman_onnx.runtime.session import Graph


def generate(
    graph: Graph, prompt: np.ndarray | list[int], max_new_tokens: int, end_ids: set[int], stop: Stop | None = None
) -> list[int]:
    """Greedy completion (unperturbed, reusing the graph's key/value cache) of ``prompt`` (token ids, or input
    embeddings [n, hidden]), up to ``max_new_tokens`` tokens or a token in ``end_ids``; returns the new ids. A set
    ``stop`` ends it with ``Stopped``, within one step."""
    new, past = np.asarray(prompt), None
    ids: list[int] = []
    for _ in range(max_new_tokens):
        total = len(prompt) + len(ids)
        with guarded(stop) as run_options:
            out = graph.run(
                new[None],
                np.ones((1, total), np.float32),
                np.array([[len(new) - 1]]),
                np.zeros((1, 1), np.int64),
                past=past,
                outputs=("label_logits", *graph.present_names),
                run_options=run_options,
            )
        token = int(out["label_logits"][0, 0].argmax())
        if token in end_ids:
            break
        ids.append(token)
        present = [out[name] for name in graph.present_names]
        if graph.row_past_names and past is not None:  # a graph with a row cache returns the new position's only
            present = [np.concatenate(pair, axis=2) for pair in zip(past, present)]
        new, past = np.array([token]), present
    return ids
