"""Check an exported graph against the PyTorch model it came from, on the outputs the runtime consumes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from atman_onnx.runtime.errors import AtmanError

TOLERANCE = {"label_logprobs": 1e-4, "inputs_embeds": 1e-5}


class ValidationError(AtmanError):
    """The ONNX graph disagrees with PyTorch beyond tolerance."""


def random_case(vocab_size: int, batch: int, seq: int, labels: int, seed: int) -> dict[str, np.ndarray]:
    """Random graph inputs with attention scales in (0.05, 1] (ones in the first row, the unperturbed pass)."""
    rng = np.random.default_rng(seed)
    scale = rng.uniform(0.05, 1.0, size=(batch, seq)).astype(np.float32)
    scale[0] = 1.0
    return {
        "input_ids": rng.integers(0, vocab_size, size=(batch, seq), dtype=np.int64),
        "attention_mask": np.ones((batch, seq), dtype=np.int64),
        "attention_scale": scale,
        "label_positions": np.sort(rng.choice(seq, size=(batch, labels)), axis=1).astype(np.int64),
        "labels": rng.integers(0, vocab_size, size=(batch, labels), dtype=np.int64),
    }


def validate(graph_module: torch.nn.Module, onnx_path: Path, vocab_size: int, seed: int = 0) -> dict:
    """Run ONNX Runtime (CPU) and PyTorch on random inputs; raise past tolerance, else return the figures."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    worst = {name: 0.0 for name in TOLERANCE}
    for i, (batch, seq, labels) in enumerate([(3, 17, 5), (2, 40, 8)]):
        feeds = random_case(vocab_size, batch, seq, labels, seed + i)
        got = dict(zip(["label_logprobs", "label_logits", "inputs_embeds"], session.run(None, feeds)))
        with torch.no_grad():
            want = graph_module(*(torch.from_numpy(feeds[k]) for k in feeds))
        want = dict(zip(["label_logprobs", "label_logits", "inputs_embeds"], (w.numpy() for w in want)))
        for name in TOLERANCE:
            worst[name] = max(worst[name], float(np.abs(got[name] - want[name]).max()))
    failed = [f"{n} differs by {worst[n]:.2e} > {TOLERANCE[n]:.0e}" for n in TOLERANCE if worst[n] > TOLERANCE[n]]
    if failed:
        raise ValidationError("exported graph disagrees with PyTorch: " + "; ".join(failed))
    return {
        "passed": True,
        "max_abs_diff": worst,
        "tolerance": TOLERANCE,
        "cases": "random ids, scales uniform in (0.05, 1], batch 3 x seq 17 and batch 2 x seq 40",
    }
