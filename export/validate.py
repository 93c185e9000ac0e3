"""Check an exported graph against the PyTorch model it came from, on the outputs the runtime consumes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from atman_onnx.models.graph import AtmanGraph
from atman_onnx.core.contract import INPUTS, graph_outputs, past_names
from atman_onnx.core.errors import AtmanError

# keys/values are raw activations, on a larger scale than log-probs, so their float32 noise is larger in absolute terms;
# what they feed is checked through label_logprobs in the cached-prefix case.
TOLERANCE = {"label_logprobs": 1e-4, "inputs_embeds": 1e-5, "present": 1e-3}


class ValidationError(AtmanError):
    """The ONNX graph disagrees with PyTorch beyond tolerance."""


def random_case(vocab_size: int, batch: int, seq: int, labels: int, seed: int, past: int = 0) -> dict[str, np.ndarray]:
    """Random graph inputs (without the cache) with attention scales in (0.05, 1]; row 0 is unperturbed."""
    rng = np.random.default_rng(seed)
    scale = rng.uniform(0.05, 1.0, size=(batch, past + seq)).astype(np.float32)
    scale[0] = 1.0
    return {
        "input_ids": rng.integers(0, vocab_size, size=(batch, seq), dtype=np.int64),
        "attention_mask": np.ones((batch, past + seq), dtype=np.int64),
        "attention_scale": scale,
        "label_positions": np.sort(rng.choice(seq, size=(batch, labels)), axis=1).astype(np.int64),
        "labels": rng.integers(0, vocab_size, size=(batch, labels), dtype=np.int64),
    }


def torch_outputs(graph_module: AtmanGraph, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    """The wrapper's outputs for graph feeds (contract inputs, then the cache)."""
    layers = graph_module.dims["num_layers"]
    args = [torch.from_numpy(feeds[name]) for name in (*INPUTS, *past_names(layers)) if name in feeds]
    with torch.no_grad():
        return [t.numpy() for t in graph_module(*args)]


def compare(session, graph_module: AtmanGraph, feeds: dict[str, np.ndarray]) -> dict[str, float]:
    """Max absolute differences, ONNX Runtime against PyTorch, for the outputs the runtime consumes."""
    names = list(graph_outputs(graph_module.dims["num_layers"]))
    got = dict(zip(names, session.run(None, feeds)))
    want = dict(zip(names, torch_outputs(graph_module, feeds)))
    diff = {name: float(np.abs(got[name] - want[name]).max()) for name in ("label_logprobs", "inputs_embeds")}
    diff["present"] = max(float(np.abs(got[n] - want[n]).max()) for n in names if n.startswith("present."))
    return diff


def validate(graph_module: AtmanGraph, onnx_path: Path, seed: int = 0) -> dict:
    """Run ONNX Runtime (CPU) and PyTorch on random inputs, with and without a cached prefix; raise past
    tolerance, else return the figures."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    vocab = graph_module.embed.num_embeddings
    layers = graph_module.dims["num_layers"]
    worst = dict.fromkeys(TOLERANCE, 0.0)
    for i, (batch, seq, labels, past) in enumerate([(3, 17, 5, 0), (2, 40, 8, 0), (4, 9, 3, 12)]):
        feeds = random_case(vocab, batch, seq, labels, seed + i, past)
        prefix = random_case(vocab, 1, past, 1, seed + 10 + i) if past else None
        cache = torch_outputs(graph_module, prefix)[3:] if prefix else [e.numpy() for e in graph_module.empty_past()]
        feeds.update(zip(past_names(layers), cache))
        for name, value in compare(session, graph_module, feeds).items():
            worst[name] = max(worst[name], value)
    failed = [f"{n} differs by {worst[n]:.2e} > {TOLERANCE[n]:.0e}" for n in TOLERANCE if worst[n] > TOLERANCE[n]]
    if failed:
        raise ValidationError("exported graph disagrees with PyTorch: " + "; ".join(failed))
    return {
        "passed": True,
        "max_abs_diff": worst,
        "tolerance": TOLERANCE,
        "cases": "random ids, scales uniform in (0.05, 1]; batch x seq (+ cached past): 3x17, 2x40, 4x9 (+12)",
    }
