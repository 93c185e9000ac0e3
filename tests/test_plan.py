"""The plan: batch starts, sorting, batch sizing, the planner's factors, and the plan's batches."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from atman_onnx import ExplainRequest
from atman_onnx.runtime.factors import plan_factors
from atman_onnx.runtime.plan import WASTE, calls_from, first_changed, plan_batches
from atman_onnx.runtime.sizing import batch_size_for

DIMS = {"num_layers": 30, "num_heads": 9, "kv_heads": 3, "head_dim": 64, "intermediate_size": 1536}


def test_first_changed_and_batches_share_prefixes():
    factors = np.ones((4, 6), np.float32)
    factors[0, 4] = factors[1, 1] = factors[2, 3] = 0.1
    factors[3, [2, 5]] = 0.5
    starts = first_changed(factors)
    assert starts.tolist() == [4, 1, 3, 2]
    batches = plan_batches(starts, 2, "prefix", 6, waste=0.5)
    assert [(rows.tolist(), start) for rows, start in batches] == [([1, 3], 1), ([2, 0], 3)]
    # a row whose start lies beyond the waste window of the batch's suffix opens a new batch
    assert [rows.tolist() for rows, _ in plan_batches(starts, 4, "prefix", 6, waste=0.2)] == [[1, 3], [2], [0]]
    assert [start for _, start in plan_batches(starts, 2, "naive", 6)] == [0, 0]


def test_prefix_batches_bound_recomputed_work():
    n = 263
    starts = np.arange(n)
    batches = plan_batches(starts, 64, "prefix", n)
    useful = sum(n - s for s in starts)
    computed = sum(len(rows) * (n - start) for rows, start in batches)
    assert sorted(np.concatenate([rows for rows, _ in batches]).tolist()) == list(range(n))
    assert useful <= computed <= (1 + WASTE / 2 + 0.005) * useful  # recomputed: about WASTE / 2 of the useful


def waste_rule(starts, batch_size, n_fed, waste=WASTE):
    """The prefix schedule's batches as they were before the call cost: a row joins while its start lies within
    ``waste`` of the batch's suffix."""
    order = np.argsort(starts, kind="stable")
    batches, k = [], 0
    while k < len(order):
        first, end = int(starts[order[k]]), k + 1
        while end < len(order) and end - k < batch_size and starts[order[end]] - first <= waste * (n_fed - first):
            end += 1
        batches.append((order[k:end].tolist(), first))
        k = end
    return batches


def test_no_call_cost_keeps_the_waste_rule():
    rng = np.random.default_rng(0)
    for _ in range(200):
        n_fed = int(rng.integers(1, 400))
        starts = rng.integers(0, n_fed + 1, size=int(rng.integers(1, 300)))
        batch_size = int(rng.integers(1, 70))
        got = plan_batches(starts, batch_size, "prefix", n_fed, call_cost=0)
        assert [(rows.tolist(), start) for rows, start in got] == waste_rule(starts, batch_size, n_fed)
        default = plan_batches(starts, batch_size, "prefix", n_fed)
        assert [(rows.tolist(), start) for rows, start in default] == waste_rule(starts, batch_size, n_fed)


def cost_of(batches, n_fed, call_cost, chunk=None):
    return sum(
        call_cost * calls_from(start, n_fed, chunk) + len(rows) * max(0, n_fed - start) for rows, start in batches
    )


def cheapest_by_search(starts, batch_size, n_fed, call_cost, chunk=None):
    """The least cost of any split of the sorted starts into runs of at most ``batch_size``, by trying them all."""
    s = sorted(int(v) for v in starts)

    def best(i):
        if i == len(s):
            return 0
        return min(
            call_cost * calls_from(s[i], n_fed, chunk) + (j - i) * max(0, n_fed - s[i]) + best(j)
            for j in range(i + 1, min(len(s), i + batch_size) + 1)
        )

    return best(0)


@pytest.mark.parametrize("chunk", [None, 3])
def test_call_cost_batches_are_the_cheapest_and_within_the_batch_size(chunk):
    rng = np.random.default_rng(1)
    for _ in range(150):
        n_fed = int(rng.integers(1, 40))
        starts = rng.integers(0, n_fed + 1, size=int(rng.integers(1, 9)))
        batch_size, call_cost = int(rng.integers(1, 6)), float(rng.choice([0.5, 3, 17, 100, 1e4]))
        batches = plan_batches(starts, batch_size, "prefix", n_fed, call_cost=call_cost, chunk=chunk)
        rows = np.concatenate([r for r, _ in batches])
        assert sorted(rows.tolist()) == list(range(len(starts)))  # every row once
        assert all(1 <= len(r) <= batch_size for r, _ in batches)
        assert all(start == starts[r].min() for r, start in batches)  # a batch feeds from its earliest start
        assert cost_of(batches, n_fed, call_cost, chunk) == pytest.approx(
            cheapest_by_search(starts, batch_size, n_fed, call_cost, chunk)
        )


def test_a_call_cost_widens_the_windows():
    n = 263
    starts = np.arange(256)
    cheap = plan_batches(starts, 1024, "prefix", n)
    costly = plan_batches(starts, 1024, "prefix", n, call_cost=1500)
    assert len(costly) <= 6 < len(cheap)
    assert all(len(rows) <= 1024 for rows, _ in costly)
    huge = plan_batches(starts, 100, "prefix", n, call_cost=1e9)  # calls dominate: as few as the batch size allows
    assert len(huge) == 3 and all(len(rows) <= 100 for rows, _ in huge)


def test_batch_size_follows_budget():
    small = batch_size_for(DIMS, 576, 49152, 263, 8, budget_mb=64)
    large = batch_size_for(DIMS, 576, 49152, 263, 8, budget_mb=1024)
    assert 1 <= small < large <= 1024 / 20  # over 20 MB of activations per 263-token row
    assert batch_size_for(DIMS, 576, 49152, 263, 8, budget_mb=0.001) == 1


def test_conceptual_factors():
    embeddings = np.array([[1.0, 0.0], [1.0, 0.0], [0.8, 0.6], [0.0, 1.0]])  # cos to row 0: 1, 0.8, 0
    factors = plan_factors([[0], [1], [2], [3]], 4, factor=0.1, conceptual=0.7, embeddings=embeddings)
    assert factors[0].tolist() == pytest.approx([0.1, 0.1, 0.9 * 0.2 + 0.1, 1.0])
    assert factors[3].tolist() == pytest.approx([1.0, 1.0, 1.0, 0.1])
    # only explained positions are suppressed conceptually
    alone = plan_factors([[0]], 4, factor=0.1, conceptual=0.7, embeddings=embeddings)
    assert alone[0].tolist() == pytest.approx([0.1, 1.0, 1.0, 1.0])


class Cancelled(Exception):
    pass


class ElsewhereExecutor:
    """Runs batches as another process would: the shared data unpickled once, each batch unpickled alone, on a
    session of its own, in reverse order."""

    def __init__(self, folder):
        from atman_onnx.runtime.session import Graph

        self.graph = Graph(folder, provider="cpu")
        self.calls = 0

    def run(self, shared, batches, stop=None):
        from atman_onnx.runtime.execute import run_batch

        received = pickle.loads(pickle.dumps(shared))
        for batch in reversed([pickle.dumps(b) for b in batches]):
            batch = pickle.loads(batch)
            self.calls += 1
            yield batch, run_batch(self.graph, received, batch, stop)


PROMPT, TARGET = "The dog met the dog and the fox in the garden. The capital of France is", " Paris is the capital"


def test_another_executor_gives_the_same_explanation(runtime_model):
    from atman_onnx import Explainer

    folder = runtime_model("multiplicative")
    local = Explainer.load(folder, provider="cpu")
    elsewhere = ElsewhereExecutor(folder)
    remote = Explainer(local.graph, local.codec, executor=elsewhere)
    want = local.explain(PROMPT, TARGET, conceptual=0.2, batch_size=4)
    got = remote.explain(PROMPT, TARGET, conceptual=0.2, batch_size=4)
    assert np.array_equal(got.relevance, want.relevance) and np.abs(want.relevance).max() > 1e-3
    counts = lambda e: {k: v for k, v in e.timings.items() if not k.endswith("_s")}
    assert elsewhere.calls > 1 and counts(got) == counts(want)


@pytest.mark.parametrize("schedule", ["prefix", "naive"])
def test_labels_before_a_rows_first_change_keep_the_unperturbed_logprobs(schedule):
    """docs/method.md, prefix schedule, step 3: whatever a batch computes for a row at labels before the row's own
    first changed position (a later row of a batch, or any row of the naive schedule), those keep the unperturbed
    log-probs exactly; labels from there on take the batch's."""
    from atman_onnx.runtime.execute import execute
    from atman_onnx.runtime.plan import Shared, make_plan

    n_fed, label_positions = 12, np.arange(6, 12)
    shared = Shared(np.arange(n_fed), label_positions, np.arange(6), np.full(6, -2.0, np.float32), ())
    firsts = np.array([6, 7, 9, 11])  # within the prefix schedule's waste of one another only for a long suffix
    factors = np.ones((len(firsts), n_fed), np.float32)
    factors[np.arange(len(firsts)), firsts] = 0.0
    plan = make_plan(shared, factors, batch_size=4, schedule=schedule)

    class Recomputes:  # every label a batch scores comes back changed, as rounding may change them
        def run(self, shared, batches, stop=None):
            for batch in batches:
                yield batch, np.full((len(batch.rows), len(batch.scored)), -5.0, np.float32)

    out = execute(plan, Recomputes())
    assert np.array_equal(out, np.where(label_positions[None, :] >= firsts[:, None], -5.0, -2.0))
    assert schedule == "prefix" or all(b.start == 0 for b in plan.batches)


def test_plan_counts_and_progress_have_one_owner(tiny_export):
    from atman_onnx import Explainer
    from atman_onnx.runtime.execute import unperturbed

    explainer = Explainer.load(tiny_export("gpt2", "log_additive"), provider="cpu")
    seen = []
    result = explainer.explain(PROMPT, TARGET, batch_size=5, on_progress=lambda done, total: seen.append((done, total)))
    n_units = len(result.units)
    assert seen[-1] == (n_units, n_units) and [d for d, _ in seen] == sorted(d for d, _ in seen)
    fed = result.prompt_ids + result.target_ids[:-1]
    plan = explainer.plan(fed, result.target_ids, result.units, ExplainRequest(prompt=PROMPT, batch_size=5))
    assert plan.passes == result.timings["passes"] == n_units + 1
    assert plan.positions == result.timings["positions_computed"]
    assert len(seen) == len(plan.batches) + (plan.settled > 0)
    # the plan is data: every row in exactly one batch, each batch's scored labels at or after its start
    rows = sorted(r for b in plan.batches for r in b.rows.tolist())
    assert rows == list(range(plan.n_rows)) and plan.settled == 0
    for batch in plan.batches:
        assert np.all(plan.shared.label_positions[batch.scored] >= batch.start)
        assert np.all(batch.factors[:, : batch.start] == 1)
    shared, _ = unperturbed(explainer.graph, fed, result.target_ids)
    assert np.array_equal(shared.logprobs, plan.shared.logprobs)


def test_a_raising_progress_callback_cancels_between_batches(runtime_model):
    from atman_onnx import Explainer

    folder = runtime_model("log_additive")
    counting = ElsewhereExecutor(folder)
    explainer = Explainer(counting.graph, Explainer.load(folder, provider="cpu").codec, executor=counting)

    def stop_after_two(done, total):
        if done >= 2:
            raise Cancelled

    with pytest.raises(Cancelled):
        explainer.explain(PROMPT, TARGET, batch_size=1, on_progress=stop_after_two)
    assert counting.calls == 2  # no batch ran after the one that crossed the limit


@pytest.mark.parametrize(
    "kind, target, at", [("generation", None, 1), ("unperturbed", TARGET, 0), ("batch", TARGET, 1)]
)
def test_a_stop_ends_the_graph_call_in_flight(runtime_model, kind, target, at):
    """The stop is set while a graph call runs (from inside ``Graph.run``, just before ONNX Runtime starts): a
    generation step, the unperturbed pass, or a perturbation batch. ONNX Runtime's terminate flag ends that call,
    the explanation raises ``Stopped`` with the reason, and no other call runs."""
    from atman_onnx import Explainer
    from atman_onnx.runtime.execute import Stop, Stopped

    explainer = Explainer.load(runtime_model("log_additive"), provider="cpu")
    stop, calls, failures = Stop(), [], []
    real_run = explainer.graph.run

    def run_then_stop(*args, **kwargs):
        outputs = kwargs.get("outputs", ())
        calls.append("generation" if "label_logits" in outputs else "unperturbed" if len(outputs) > 1 else "batch")
        assert kwargs["run_options"] is stop.run_options
        if len(calls) == at + 1:
            stop.set("enough")
        try:
            return real_run(*args, **kwargs)
        except Exception as exc:
            failures.append(str(exc))
            raise

    explainer.graph.run = run_then_stop
    with pytest.raises(Stopped, match="enough") as caught:
        explainer.explain(PROMPT, target, batch_size=1, max_new_tokens=4, stop=stop)
    assert caught.value.reason == "enough" and len(calls) == at + 1 and calls[-1] == kind
    assert len(failures) == 1 and "terminate" in failures[0]  # ONNX Runtime itself ended the call
    # the same call without the stop runs to the end: it was the terminate flag that ended it
    explainer.graph.run = real_run
    assert explainer.explain(PROMPT, target, batch_size=1, max_new_tokens=4).timings["passes"] > 2


def test_a_stop_set_between_batches_runs_no_further_batch(runtime_model):
    from atman_onnx import Explainer
    from atman_onnx.runtime.execute import Stop, Stopped

    folder = runtime_model("log_additive")
    counting = ElsewhereExecutor(folder)
    explainer = Explainer(counting.graph, Explainer.load(folder, provider="cpu").codec, executor=counting)
    stop = Stop()
    with pytest.raises(Stopped):
        explainer.explain(
            PROMPT,
            TARGET,
            batch_size=1,
            stop=stop,
            on_progress=lambda done, total: stop.set("enough") if done >= 2 else None,
        )
    assert counting.calls == 2
