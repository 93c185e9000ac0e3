"""Plans for a GPU, checked on the CPU: the device's memory budget, few large calls, query chunks only where the
budget needs them, and the keys and values kept on the device (the same path run on host memory)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import onnxruntime as ort
import pytest

from atman_onnx import ExplainRequest
from atman_onnx.runtime.device import FREE_SHARE, free_memory_mb
from atman_onnx.runtime.execute import chunks
from atman_onnx.runtime.plan import Shared, graph_calls, make_plan
from atman_onnx.runtime.sizing import (
    CHUNK,
    DEFAULT_MEMORY_BUDGET_MB,
    GPU_CALL_COST,
    batch_size_for,
    chunk_for,
    memory_budget_mb,
    size_calls,
)

# SmolLM2-135M
DIMS = {"num_layers": 30, "num_heads": 9, "kv_heads": 3, "head_dim": 64, "intermediate_size": 1536}
HIDDEN, VOCAB = 576, 49152
TARGET_TOKENS = 8
FREE_40_GB = 40 * 1024


def token_level_plan(prompt_tokens: int, device: str, free_mb: float | None):
    """The plan of a token-level explanation (one unit per prompt token) of an 8-token target, sized for the
    device, on a stand-in unperturbed pass (the plan only needs its positions)."""
    n_fed = prompt_tokens + TARGET_TOKENS - 1
    sizing = size_calls(DIMS, HIDDEN, VOCAB, n_fed, TARGET_TOKENS, True, device, None, free_mb)
    labels = np.arange(n_fed - TARGET_TOKENS, n_fed)
    shared = Shared(np.zeros(n_fed, np.int64), labels, labels, np.zeros(TARGET_TOKENS, np.float32), (), sizing.chunk)
    factors = np.ones((prompt_tokens, n_fed), np.float32)
    factors[np.arange(prompt_tokens), np.arange(prompt_tokens)] = 0.0
    return sizing, make_plan(shared, factors, sizing.batch_size, "prefix", sizing.call_cost)


def calls_counted(plan) -> int:
    """Every graph call the plan makes, as ``unperturbed`` and ``run_batch`` loop: one per query chunk."""
    n_fed, chunk = plan.shared.n_fed, plan.shared.chunk
    return len(chunks(0, n_fed, chunk)) + sum(len(chunks(b.start, n_fed, chunk)) for b in plan.batches)


def test_a_cuda_plan_at_256_tokens_makes_few_calls():
    sizing, plan = token_level_plan(256, "cuda", FREE_40_GB)
    assert sizing.budget_mb == FREE_SHARE * FREE_40_GB and sizing.call_cost == GPU_CALL_COST
    assert calls_counted(plan) == graph_calls(plan) <= 10
    assert plan.settled == 0 and sum(len(b.rows) for b in plan.batches) == 256
    _, on_cpu = token_level_plan(256, "cpu", None)  # the CPU's plan: many small calls, as before
    assert graph_calls(on_cpu) > 40


def test_a_cuda_plan_at_1024_tokens_uses_large_batches():
    sizing, plan = token_level_plan(1024, "cuda", FREE_40_GB)
    assert sizing.chunk is None and sizing.batch_size >= 64  # the host budget gave 5 (whole) or 2 (chunked)
    assert all(32 <= len(b.rows) <= sizing.batch_size for b in plan.batches)
    assert calls_counted(plan) == graph_calls(plan) <= 25
    _, on_cpu = token_level_plan(1024, "cpu", None)
    assert on_cpu.batch_size <= 5 and graph_calls(on_cpu) > 500


def test_gpu_query_chunks_only_where_the_budget_needs_them():
    n_fed = 4096 + TARGET_TOKENS - 1
    roomy = size_calls(DIMS, HIDDEN, VOCAB, n_fed, TARGET_TOKENS, True, "cuda", None, FREE_40_GB)
    tight = size_calls(DIMS, HIDDEN, VOCAB, n_fed, TARGET_TOKENS, True, "cuda", None, 4 * 1024)
    assert roomy.chunk is None and tight.chunk == CHUNK
    assert tight.batch_size > 2  # no CPU throughput cap on a GPU's chunked calls
    asked = size_calls(DIMS, HIDDEN, VOCAB, n_fed, TARGET_TOKENS, True, "cuda", None, FREE_40_GB, chunk_size=512)
    assert asked.chunk == 512
    no_row_cache = size_calls(DIMS, HIDDEN, VOCAB, n_fed, TARGET_TOKENS, False, "cuda", None, 4 * 1024)
    assert no_row_cache.chunk is None


@pytest.mark.parametrize("n_fed", [20, 263, 600, 1031, 4103])
@pytest.mark.parametrize("chunk_size", [None, 5, 256])
@pytest.mark.parametrize("budget", [None, 64, 1024, 4096])
def test_cpu_sizing_is_unchanged(n_fed, chunk_size, budget):
    for row_cache in (True, False):
        sizing = size_calls(DIMS, HIDDEN, VOCAB, n_fed, TARGET_TOKENS, row_cache, "cpu", budget, FREE_40_GB, chunk_size)
        chunk = chunk_for(n_fed, row_cache, chunk_size)
        rows = batch_size_for(DIMS, HIDDEN, VOCAB, n_fed, TARGET_TOKENS, budget or DEFAULT_MEMORY_BUDGET_MB, chunk)
        assert (sizing.chunk, sizing.batch_size, sizing.call_cost) == (chunk, rows, 0)
        assert (
            size_calls(
                DIMS, HIDDEN, VOCAB, n_fed, TARGET_TOKENS, row_cache, "cpu", budget, None, chunk_size, batch_size=3
            ).batch_size
            == 3
        )


def test_memory_budget_on_a_device():
    assert memory_budget_mb("cuda", None, 1000) == memory_budget_mb("cuda", DEFAULT_MEMORY_BUDGET_MB, 1000) == 800
    assert memory_budget_mb("cuda", 2048, 1000) == 2048  # a budget asked for wins
    assert memory_budget_mb("cuda", None, None) == DEFAULT_MEMORY_BUDGET_MB  # the device did not answer
    assert memory_budget_mb("cpu", None, 1000) == DEFAULT_MEMORY_BUDGET_MB
    assert memory_budget_mb("cpu", 64, None) == 64


def test_the_device_query_fails_soft():
    free = free_memory_mb()
    assert free is None or free > 0


class StandIn:
    """What ``Explainer`` reads of a graph to size its calls, for a graph of SmolLM2's dimensions on ``device``."""

    def __init__(self, device: str, free_mb: float | None):
        self.device, self.free_mb = device, free_mb
        self.manifest = SimpleNamespace(dims=DIMS, hidden_size=HIDDEN, vocab_size=VOCAB, row_cache=True)


@pytest.mark.parametrize("device", ["cuda", "cpu"])
def test_the_explainer_sizes_for_its_graphs_device(device):
    from atman_onnx import Explainer

    request, n_fed = ExplainRequest(prompt="x"), 1024 + TARGET_TOKENS - 1
    explainer = Explainer(StandIn(device, FREE_40_GB), codec=None)
    rows = explainer._sizing(n_fed, TARGET_TOKENS, request).batch_size
    small = (
        Explainer(StandIn(device, FREE_40_GB), codec=None, memory_budget_mb=512)
        ._sizing(n_fed, TARGET_TOKENS, request)
        .batch_size
    )  # a budget asked for wins over the device's
    if device == "cuda":
        assert rows >= 64 and small < 8
    else:  # the host budget, as without a device
        for budget, got in ((DEFAULT_MEMORY_BUDGET_MB, rows), (512, small)):
            assert got == batch_size_for(DIMS, HIDDEN, VOCAB, n_fed, TARGET_TOKENS, budget, chunk_for(n_fed, True))


PROMPT, TARGET = "The dog met the dog and the fox in the garden. The capital of France is", " Paris is the capital"


def relevance_of(explainer, request, call_cost):
    from atman_onnx.runtime.execute import LocalExecutor, execute
    from atman_onnx.runtime.score import relevance

    result = explainer.explain(PROMPT, TARGET)
    fed = result.prompt_ids + result.target_ids[:-1]
    plan = explainer.plan(fed, result.target_ids, list(result.units), request, call_cost=call_cost)
    return plan, relevance(plan.shared.logprobs, execute(plan, LocalExecutor(explainer.graph)))


@pytest.mark.parametrize("mode", ["log_additive", "multiplicative"])
def test_wider_windows_keep_the_relevance(tiny_export, mode):
    from atman_onnx import Explainer

    explainer = Explainer.load(tiny_export("llama", mode), provider="cpu")
    request = ExplainRequest(prompt=PROMPT, batch_size=64, conceptual=0.2)
    narrow, want = relevance_of(explainer, request, 0)
    wide, got = relevance_of(explainer, request, 10**6)
    assert len(wide.batches) == 1 < len(narrow.batches) and wide.positions > narrow.positions
    assert np.abs(got - want).max() < 1e-5 and np.abs(want).max() > 1e-3


@pytest.mark.parametrize("chunk_size", [None, 5])
def test_keys_and_values_kept_on_the_device_give_the_same_relevance(tiny_export, monkeypatch, chunk_size):
    """The resident path (CUDA's default) run on host memory: the plan's cache copied into OrtValues once per plan,
    each batch's shared past cut from it, and the rows' keys and values of query chunks joined there."""
    from atman_onnx import Explainer
    from atman_onnx.runtime.session import Graph

    folder = tiny_export("llama", "multiplicative")
    host = Explainer.load(folder, provider="cpu")
    resident = Graph(folder, provider="cpu", resident=True)
    assert resident.resident and not host.graph.resident
    on_device = Explainer(resident, host.codec)
    uploads = []
    real = ort.OrtValue.ortvalue_from_numpy
    monkeypatch.setattr(
        ort.OrtValue, "ortvalue_from_numpy", staticmethod(lambda *a, **k: uploads.append(a[0].shape) or real(*a, **k))
    )
    options = dict(conceptual=0.2, batch_size=3, chunk_size=chunk_size, factor=0.1)
    got = on_device.explain(PROMPT, TARGET, **options)
    monkeypatch.undo()
    want = host.explain(PROMPT, TARGET, **options)
    assert got.timings["chunk_size"] == chunk_size and got.timings["passes"] > 3
    assert np.abs(got.relevance - want.relevance).max() < 1e-6 and np.abs(want.relevance).max() > 1e-3
    # the plan's cache went into OrtValues once: one value per layer's keys and per layer's values
    assert len(uploads) == len(resident.past_names)
    assert {shape[2] for shape in uploads} == {len(got.prompt_ids) + len(got.target_ids) - 1}


def test_a_resident_graph_cuts_and_joins_keys_on_its_device(tiny_export):
    from atman_onnx.runtime.session import Graph

    graph = Graph(tiny_export("gpt2", "log_additive"), provider="cpu", resident=True)
    rng = np.random.default_rng(0)
    cache = tuple(rng.standard_normal((1, 3, 11, 4)).astype(np.float32) for _ in range(2))
    for start in (0, 1, 7, 11):
        cut = graph.shared_past(cache, start)
        assert [
            np.array_equal(np.asarray(c.numpy() if isinstance(c, ort.OrtValue) else c), layer[:, :, :start])
            for c, layer in zip(cut, cache)
        ] == [True, True]
    rows = [ort.OrtValue.ortvalue_from_numpy(rng.standard_normal((2, 3, n, 4)).astype(np.float32)) for n in (5, 2)]
    new = [ort.OrtValue.ortvalue_from_numpy(rng.standard_normal((2, 3, n, 4)).astype(np.float32)) for n in (3, 6)]
    joined = graph.extend(rows, new)
    for old, added, both in zip(rows, new, joined):
        assert np.array_equal(both.numpy(), np.concatenate([old.numpy(), added.numpy()], axis=2))
    assert graph.extend(None, new) == new


def test_the_gpu_check_runs_every_step_on_cpu(tiny_export, tmp_path):
    """tools/gpu_check.py's dry run: the script a lent device runs must not break between loans."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    tool = Path(__file__).resolve().parents[1] / "tools" / "gpu_check.py"
    model = tiny_export("llama", "log_additive")
    options = ["--provider", "cpu", "--model", str(model), "--skip", "pytest", "export", "--lengths", "24"]
    options += ["--long-tokens", "60", "--bench-lengths", "24", "--repeats", "1"]
    done = subprocess.run([sys.executable, str(tool), str(tmp_path), *options], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    steps = json.loads((tmp_path / "summary.json").read_text())["steps"]
    ran = {s["step"]: s["status"] for s in steps if s["step"] not in ("pytest", "export")}
    assert ran and set(ran.values()) == {"passed"}, ran
