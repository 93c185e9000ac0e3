"""How big each graph call of an explanation is: query chunks, rows per call, and the memory that takes.

A call's peak memory is estimated per row (``row_mb``: the row's keys and values, one layer's attention scores, the
hidden states and MLP activations of the positions fed at once, the logits at the labels) and, for a whole
explanation, as its largest call (``largest_call_mb``) with the keys and values and factor rows that every batch
reads (``shared_mb``, ``factors_mb``). On CPU the rows per call are what a host budget holds; on a GPU the budget
comes from the device's free memory, and a call's fixed cost (``GPU_CALL_COST``) is weighed against positions by the
prefix schedule (docs/gpu.md).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from atman_onnx.core.contract import attention_planes
from atman_onnx.runtime.device import FREE_SHARE

DEFAULT_MEMORY_BUDGET_MB = 1024
CHUNK = 256  # queries per graph call of a long suffix (graphs with a row cache)
CHUNK_FROM = 512  # shorter sequences run whole: their scores are small, and large batches pay there
# At the peak of a call in query chunks a row holds its cache, the cache extended by the call's keys and values, and
# the graph's own concatenation; measured on SmolLM2 (tools/bench_long.py, 1,024 to 4,096 tokens), the memory above
# the loaded model grew by about 5 copies of one row's keys and values per position (the shared cache among them).
ROW_CACHE_COPIES = 4
# Beyond its largest call, its keys and values and its factor rows, an explanation holds memory that does not grow
# with the length: the unperturbed pass's outputs and their copies, and ONNX Runtime's arena, which grows in doubling
# steps. Measured on SmolLM2 with attention op by op (8 span units): 55, 8, 7, 32 and 30 MiB from 256 to 4,096 tokens;
# with fused attention (docs/bench-long-smollm2-cpu.json) the estimate is 0.94x to 1.11x the measured peak above load
# from 256 to 8,192 tokens but at 512 (1.32x).
PLAN_OVERHEAD_MB = 40
POSITIONS_PER_CALL = 512  # in query chunks: rows x chunk per call past which CPU throughput stops rising
# On a GPU a graph call has a fixed cost that dwarfs a few recomputed positions: the prefix schedule then weighs
# calls against positions (``plan_batches``' ``call_cost``). Measured on an H200 with SmolLM2-135M at 256 tokens:
# ~92,000 positions/s and ~15 ms per call, so one call costs as much as 0.015 s x 92,000/s ~ 1,400 positions.
GPU_CALL_COST = 1500  # token positions
GPU_MIN_ROWS = 8  # on a GPU a suffix runs whole while the budget holds this many whole rows per call; else in chunks


def chunk_for(n_fed: int, row_cache: bool, requested: int | None = None) -> int | None:
    """Queries per graph call of a suffix on a graph with a row cache: ``requested``, else ``CHUNK`` for sequences
    longer than ``CHUNK_FROM``; None (the whole suffix in one call) where the sequence is no longer than the chunk
    or the graph has no row cache. Chunks bound the attention scores to ``chunk x n_fed`` instead of
    ``n_fed x n_fed``."""
    if not row_cache or (requested is None and n_fed <= CHUNK_FROM):
        return None
    chunk = requested or CHUNK
    return chunk if n_fed > chunk else None


def kv_floats(dims: dict[str, int]) -> int:
    """Floats of keys and values one position holds, all layers."""
    return 2 * dims["num_layers"] * dims["kv_heads"] * dims["head_dim"]


def row_mb(
    dims: dict[str, int],
    hidden: int,
    vocab: int,
    n_fed: int,
    n_labels: int,
    chunk: int | None = None,
    start: int = 0,
) -> float:
    """Estimated MiB one row of a call holds at its peak, the row fed from position ``start`` to ``n_fed``: whole
    (``chunk`` None) or in query chunks, where it carries its own keys and values from chunk to chunk (measured:
    about ``ROW_CACHE_COPIES`` copies of them at the peak of a call)."""
    queries = min(chunk, n_fed - start) if chunk else n_fed - start
    floats = (
        kv_floats(dims) * n_fed * (ROW_CACHE_COPIES if chunk else 1)  # every layer's keys and values
        + planes(dims) * queries * n_fed  # one layer's attention scores
        + queries * (4 * hidden + 3 * dims["intermediate_size"])  # hidden states and MLP activations
        + 2 * n_labels * vocab  # logits and log-probs at the labels
    )
    return 4 * floats / 2**20


def planes(dims: dict[str, int]) -> int:
    """[queries x keys] float planes of one layer's attention at its peak: as the export recorded them, else (folders
    written before it) those of attention op by op."""
    return dims.get("attention_planes") or attention_planes(dims["num_heads"], fused=False)


def shared_mb(dims: dict[str, int], n_fed: int) -> float:
    """MiB of the unperturbed pass's keys and values of every position and layer, which every batch reads."""
    return 4 * kv_floats(dims) * n_fed / 2**20


def largest_call_mb(
    dims: dict[str, int],
    hidden: int,
    vocab: int,
    n_fed: int,
    n_labels: int,
    chunk: int | None,
    calls: Iterable[tuple[int, int]],
) -> float:
    """Estimated MiB of a plan's largest graph call, of the batches' ``calls`` (rows, first fed position) and the
    unperturbed pass (one row from 0)."""
    largest = max(
        (rows * row_mb(dims, hidden, vocab, n_fed, n_labels, chunk, start) for rows, start in calls),
        default=0.0,
    )
    return max(largest, row_mb(dims, hidden, vocab, n_fed, n_labels, chunk))


def factors_mb(n_units: int, n_fed: int) -> float:
    """MiB of a plan's factor rows, one per unit over every fed position: float32, and the batches' copies."""
    return 8 * n_units * n_fed / 2**20


def batch_size_for(
    dims: dict[str, int],
    hidden: int,
    vocab: int,
    n_fed: int,
    n_labels: int,
    budget_mb: float,
    chunk: int | None = None,
) -> int:
    """Rows per call: as many as keep one call's activations within ``budget_mb``; in query chunks, no more than
    ``POSITIONS_PER_CALL`` positions per call, since more rows cost memory without running faster."""
    rows = max(1, int(budget_mb // row_mb(dims, hidden, vocab, n_fed, n_labels, chunk)))
    return rows if chunk is None else max(1, min(rows, POSITIONS_PER_CALL // chunk))


def memory_budget_mb(device: str, requested_mb: float | None, free_mb: float | None) -> float:
    """The MiB one graph call's activations may take on ``device`` ('cpu', 'cuda'): ``requested_mb`` when given;
    on a GPU whose free memory ``free_mb`` is known, ``FREE_SHARE`` of it unless a budget other than the host
    default ``DEFAULT_MEMORY_BUDGET_MB`` was asked for (that default says nothing about a GPU); else the default."""
    if device != "cpu" and free_mb is not None and requested_mb in (None, DEFAULT_MEMORY_BUDGET_MB):
        return FREE_SHARE * free_mb
    return DEFAULT_MEMORY_BUDGET_MB if requested_mb is None else requested_mb


@dataclass(frozen=True)
class Sizing:
    """How the calls of one explanation's plan are sized on its device."""

    chunk: int | None  # queries per call of a suffix (None: whole)
    batch_size: int  # rows per call
    call_cost: float  # token positions one call costs beyond its positions (0: the CPU's rule, ``WASTE``)
    budget_mb: float  # what one call's activations may take


def size_calls(
    dims: dict[str, int],
    hidden: int,
    vocab: int,
    n_fed: int,
    n_labels: int,
    row_cache: bool,
    device: str = "cpu",
    budget_mb: float | None = None,
    free_mb: float | None = None,
    chunk_size: int | None = None,
    batch_size: int | None = None,
) -> Sizing:
    """Query chunks, rows per call and the call cost for ``n_fed`` positions scoring ``n_labels`` on ``device``,
    ``chunk_size`` and ``batch_size`` when given. On CPU: ``chunk_for`` and ``batch_size_for`` within
    ``budget_mb``, and no call cost (exactly as without a device). On a GPU (budget from its free memory ``free_mb``,
    see ``memory_budget_mb``): a suffix runs whole unless the budget holds fewer than ``GPU_MIN_ROWS`` whole rows,
    as many rows per call as the budget holds (no CPU throughput cap), and ``GPU_CALL_COST``."""
    budget = memory_budget_mb(device, budget_mb, free_mb)
    if device == "cpu":
        chunk = chunk_for(n_fed, row_cache, chunk_size)
        rows = batch_size or batch_size_for(dims, hidden, vocab, n_fed, n_labels, budget, chunk)
        return Sizing(chunk, rows, 0, budget)
    if chunk_size is not None:
        chunk = chunk_for(n_fed, row_cache, chunk_size)
    elif budget // row_mb(dims, hidden, vocab, n_fed, n_labels) >= GPU_MIN_ROWS:
        chunk = None
    else:
        chunk = chunk_for(n_fed, row_cache, CHUNK)
    rows = batch_size or max(1, int(budget // row_mb(dims, hidden, vocab, n_fed, n_labels, chunk)))
    return Sizing(chunk, rows, GPU_CALL_COST, budget)
