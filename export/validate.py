"""Check an exported graph against the PyTorch model it came from, on the outputs the runtime consumes.

One loop runs ONNX Runtime (CPU) and PyTorch on the same random cases and keeps the largest absolute differences.
A float32 graph must stay within ``TOLERANCE``; a lighter graph (fp16, int8) has its figures recorded against the
tolerance its precision is expected to reach, and fails only when grossly wrong.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from atman_onnx.core.contract import graph_inputs, graph_outputs, past_names, row_past_names
from atman_onnx.core.errors import AtmanError
from atman_onnx.export.precision import PrecisionError
from atman_onnx.models.graph import AtmanGraph

# keys/values are raw activations, on a larger scale than log-probs, so their float32 noise is larger in absolute terms;
# what they feed is checked through label_logprobs in the cached-prefix case.
TOLERANCE = {"label_logprobs": 1e-4, "inputs_embeds": 1e-5, "present": 1e-3}
# What fails a lighter graph: NaN or infinite differences, or label log-probs further off than this.
GROSS_LOGPROB_ERROR = 1.0
# batch, seq, labels, cached past, row cache (each row's own keys after the past: a query chunk after the first)
CASES = ((3, 17, 5, 0, 0), (2, 40, 8, 0, 0), (4, 9, 3, 12, 0), (3, 6, 2, 8, 5))


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


def as_feeds(graph_module: AtmanGraph, case: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A case's token ids as the graph takes them: unchanged, or looked up in the embedding matrix when the graph
    takes input embeddings."""
    if not graph_module.takes_embeds:
        return case
    feeds = dict(case)
    with torch.no_grad():
        feeds["inputs_embeds"] = graph_module.embed(torch.from_numpy(feeds.pop("input_ids"))).float().numpy()
    return feeds


def torch_outputs(graph_module: AtmanGraph, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    """The wrapper's outputs for graph feeds (contract inputs, then the cache)."""
    names = graph_inputs(graph_module.dims["num_layers"], graph_module.takes_embeds)
    args = [torch.from_numpy(feeds[name]) for name in names if name in feeds]
    with torch.no_grad():
        return [t.numpy() for t in graph_module(*args)]


def compare(session, graph_module: AtmanGraph, feeds: dict[str, np.ndarray]) -> dict[str, float]:
    """Max absolute differences, ONNX Runtime against PyTorch, for the outputs the runtime consumes."""
    names = list(graph_outputs(graph_module.dims["num_layers"], graph_module.takes_embeds))
    got = dict(zip(names, session.run(None, feeds)))
    want = dict(zip(names, torch_outputs(graph_module, feeds)))
    diff = {
        name: float(np.abs(got[name] - want[name]).max())
        for name in ("label_logprobs", "inputs_embeds")
        if name in names
    }
    diff["present"] = max(float(np.abs(got[n] - want[n]).max()) for n in names if n.startswith("present."))
    return diff


def max_differences(graph_module: AtmanGraph, onnx_path: Path, seed: int = 0) -> dict[str, float]:
    """The largest differences over ``CASES`` (random inputs, with and without a cached prefix); NaN sticks."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    vocab = graph_module.embed.num_embeddings
    layers = graph_module.dims["num_layers"]
    worst = {name: 0.0 for name in TOLERANCE if not (graph_module.takes_embeds and name == "inputs_embeds")}
    first_present = 2 if graph_module.takes_embeds else 3  # after label_logprobs, label_logits[, inputs_embeds]
    for i, (batch, seq, labels, past, rows) in enumerate(CASES):
        prefix = as_feeds(graph_module, random_case(vocab, 1, past, 1, seed + 10 + i)) if past else None
        cache = (
            torch_outputs(graph_module, prefix)[first_present:]
            if prefix
            else [e.numpy() for e in graph_module.empty_past()]
        )
        row_cache = [e.numpy() for e in graph_module.empty_past(batch)]
        if rows:  # the rows' own keys and values of ``rows`` positions fed on top of the past
            before = as_feeds(graph_module, random_case(vocab, batch, rows, 1, seed + 20 + i, past))
            before.update(zip(past_names(layers), cache))
            before.update(zip(row_past_names(layers), row_cache))
            row_cache = torch_outputs(graph_module, before)[first_present:]
        feeds = as_feeds(graph_module, random_case(vocab, batch, seq, labels, seed + i, past + rows))
        feeds.update(zip(past_names(layers), cache))
        feeds.update(zip(row_past_names(layers), row_cache))
        for name, value in compare(session, graph_module, feeds).items():
            worst[name] = float(np.maximum(worst[name], value))
    return worst


def describe(max_abs_diff: dict[str, float]) -> str:
    """The figures in one line: ``label_logprobs 2.1e-06, inputs_embeds 0.0e+00, present 3.8e-06``."""
    return ", ".join(f"{name} {value:.1e}" for name, value in max_abs_diff.items())


def validate(
    graph_module: AtmanGraph,
    onnx_path: Path,
    precision: str = "fp32",
    tolerance: dict[str, float] = TOLERANCE,
    seed: int = 0,
) -> dict:
    """Compare the graph with the float32 PyTorch model; return the figures for the manifest.

    A float32 graph raises ``ValidationError`` past ``tolerance``. A lighter ``precision`` has its figures recorded
    against ``tolerance`` and raises ``PrecisionError`` only on NaN or infinite differences, or label log-probs off
    by more than ``GROSS_LOGPROB_ERROR``."""
    worst = max_differences(graph_module, onnx_path, seed)
    if precision == "fp32":
        failed = [  # "not <=" fails NaN too
            f"{n} differs by {worst[n]:.2e} > {limit:.0e}"
            for n, limit in tolerance.items()
            if n in worst and not worst[n] <= limit
        ]
        if failed:
            raise ValidationError("exported graph disagrees with PyTorch: " + "; ".join(failed))
        return {
            "passed": True,
            "max_abs_diff": worst,
            "tolerance": tolerance,
            "cases": "random ids, scales uniform in (0.05, 1]; batch x seq (+ cached past): "
            + ", ".join(
                f"{batch}x{seq}" + (f" (+{past}" + (f", rows +{rows})" if rows else ")") if past else "")
                for batch, seq, _, past, rows in CASES
            ),
        }
    if not all(math.isfinite(value) for value in worst.values()):
        raise PrecisionError(f"the {precision} graph produces NaN or infinite outputs")
    if worst["label_logprobs"] > GROSS_LOGPROB_ERROR:
        raise PrecisionError(
            f"the {precision} graph's label log-probs differ from PyTorch float32 by {worst['label_logprobs']:.2f} "
            f"> {GROSS_LOGPROB_ERROR}: the conversion broke the model"
        )
    return {
        "precision": precision,
        "max_abs_diff": worst,
        "tolerance": tolerance,
        "within_tolerance": all(worst[n] <= tolerance[n] for n in tolerance if n in worst),
        "fails_above": {"label_logprobs": GROSS_LOGPROB_ERROR},
        "reference": "PyTorch float32",
        "cases": "as for the float32 graph (random ids, scales uniform in (0.05, 1])",
    }


VISION_TOLERANCE = 1e-4  # absolute, as for label_logprobs: a deep tower of random weights reaches 1e-5
VISION_TILES = (1, 3)  # tiles per call in the vision graph's cases


def validate_vision(vision_module: torch.nn.Module, onnx_path: Path, tile_size: int, seed: int = 0) -> dict:
    """Compare the vision graph with PyTorch on random tiles (pixels uniform in [-1, 1], as normalised images are);
    raises ``ValidationError`` past ``VISION_TOLERANCE``, else returns the figures for the manifest."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(seed)
    worst = 0.0
    for tiles in VISION_TILES:
        pixels = rng.uniform(-1, 1, size=(tiles, 3, tile_size, tile_size)).astype(np.float32)
        with torch.no_grad():
            want = vision_module(torch.from_numpy(pixels)).numpy()
        (got,) = session.run(None, {"pixel_values": pixels})
        worst = float(np.maximum(worst, np.abs(got - want).max()))
    if not worst <= VISION_TOLERANCE:
        raise ValidationError(
            f"exported vision graph disagrees with PyTorch: image_features differs by {worst:.2e}"
            f" > {VISION_TOLERANCE:.0e}"
        )
    return {
        "passed": True,
        "max_abs_diff": {"image_features": worst},
        "tolerance": VISION_TOLERANCE,
        "cases": f"random pixels uniform in [-1, 1]; tiles per call: {', '.join(map(str, VISION_TILES))}",
    }
