"""Ray: one explanation's batches split over actors equal the local explanation, with progress after every batch,
shares balanced by work, a worker that dies rerun, and a bad address or folder failing fast as one line."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import numpy as np
import pytest

ray = pytest.importorskip("ray")

from atman_onnx import Explainer, ExplainRequest  # noqa: E402
from atman_onnx.cli import main  # noqa: E402
from atman_onnx.cluster.executor import GraphActor, RayExecutor, _endpoint, assign, connect  # noqa: E402
from atman_onnx.core.contract import load_manifest  # noqa: E402
from atman_onnx.core.errors import ClusterError, ContractError, InputError  # noqa: E402
from atman_onnx.runtime.execute import Stop, Stopped  # noqa: E402
from atman_onnx.runtime.plan import Batch, Shared, make_plan  # noqa: E402

PROMPT, TARGET = "The dog met the dog and the fox in the garden. The capital of France is", " Paris is the capital"


@pytest.fixture(scope="module")
def folder(tiny_export):
    return tiny_export("llama", "log_additive")


@pytest.fixture(scope="module")
def local(folder):
    return Explainer.load(folder, provider="cpu", threads=1)


@pytest.fixture
def executors(cluster):
    """Factory of 2-actor executors, closed after the test so the next one gets the cluster's 2 CPUs."""
    made: list[RayExecutor] = []

    def make(folder, actor: type[GraphActor] = GraphActor) -> RayExecutor:
        made.append(RayExecutor(folder, 2, threads=1, provider="cpu", actor=actor))
        return made[-1]

    yield make
    for executor in made:
        executor.close()


def dies_once(marker: Path) -> type[GraphActor]:
    """An actor class whose first batch call (of all its actors, restarts included) creates ``marker`` and ends its
    worker process. Made in a function, so that Ray pickles the class by value: the workers cannot import tests."""

    class DiesOnce(GraphActor):
        def run(self, shared: Shared, batch: Batch) -> np.ndarray:
            try:
                os.close(os.open(marker, os.O_CREAT | os.O_EXCL))  # atomic: one call only finds it absent
            except FileExistsError:
                return super().run(shared, batch)
            os._exit(1)

    return DiesOnce


def _cpus_come_back() -> bool:
    """Whether the cluster's 2 CPUs are free again within 10 s (Ray frees a killed actor's a moment later)."""
    deadline = time.perf_counter() + 10
    while ray.available_resources().get("CPU", 0) < 2 and time.perf_counter() < deadline:
        time.sleep(0.1)
    return ray.available_resources().get("CPU", 0) == 2


def _batch(index: int, rows: int, start: int, n_fed: int = 30) -> Batch:
    return Batch(index, np.arange(rows), np.ones((rows, n_fed), np.float32), start, np.arange(1))


def test_shares_are_balanced_by_positions_not_counts():
    big = _batch(0, 2, 20)  # 2 rows x 10 positions = 20
    small = [_batch(k, 1, 28) for k in range(1, 11)]  # 1 row x 2 positions = 2 each
    shares = assign([*small, big], 2)
    assert sorted(len(s) for s in shares) == [1, 10]  # by count 1 vs 10, by work 20 vs 20
    assert sorted(sum(b.positions for b in s) for s in shares) == [20, 20]

    # a token-level plan: rows suppress one position each, so batches starting early cost the most
    n_fed, n_labels = 40, 4
    shared = Shared(
        np.zeros(n_fed, np.int64),
        np.arange(n_fed - n_labels, n_fed),
        np.zeros(n_labels, np.int64),
        np.zeros(n_labels, np.float32),
        (),
    )
    factors = np.ones((n_fed, n_fed), np.float32)
    factors[np.arange(n_fed), np.arange(n_fed)] = 0.0
    plan = make_plan(shared, factors, batch_size=3)
    shares = assign(plan.batches, 3)
    loads = [sum(b.positions for b in s) for s in shares]
    assert sorted(b.index for s in shares for b in s) == list(range(len(plan.batches)))
    assert sum(loads) == plan.positions - n_fed
    assert max(loads) - min(loads) <= max(b.positions for b in plan.batches)
    by_count = [sum(b.positions for b in plan.batches[k::3]) for k in range(3)]  # every third batch
    assert max(loads) - min(loads) < (max(by_count) - min(by_count)) / 4


def test_split_explanation_equals_local_with_progress_after_every_batch(cluster, folder, local):
    executor = RayExecutor(folder, 2, threads=1, provider="cpu")
    with Explainer.load(folder, provider="cpu", threads=1, executor=executor) as split:
        assert len(split.executor.actors) == 2
        for options in ({"conceptual": 0.2, "batch_size": 3}, {"granularity": "word", "batch_size": 2}):
            seen: dict[str, list[tuple[int, int]]] = {"local": [], "split": []}
            want = local.explain(PROMPT, TARGET, on_progress=lambda *a, seen=seen: seen["local"].append(a), **options)
            got = split.explain(PROMPT, TARGET, on_progress=lambda *a, seen=seen: seen["split"].append(a), **options)
            assert np.abs(want.relevance).max() > 1e-3
            np.testing.assert_allclose(got.relevance, want.relevance, rtol=0, atol=1e-6)
            assert got.timings["positions_computed"] == want.timings["positions_computed"]
            n_units = len(want.units)
            fed = want.prompt_ids + want.target_ids[:-1]
            plan = local.plan(fed, want.target_ids, want.units, ExplainRequest(prompt=PROMPT, **options))
            assert len(plan.batches) > 4 and all(assign(plan.batches, 2))  # both actors get batches
            assert len(seen["split"]) == len(seen["local"]) == len(plan.batches) + (plan.settled > 0)
            assert seen["split"][-1] == seen["local"][-1] == (n_units, n_units)
            assert [d for d, _ in seen["split"]] == sorted(d for d, _ in seen["split"])
        cited = {  # documents, then their sentences, with each answer sentence's sources
            "documents": ["The dog met the fox. The fox sleeps.", {"title": "France", "text": "Paris is in France."}],
            "granularity": "document,sentence",
            "target_granularity": "sentence",
        }
        for chain in ({"granularity": "sentence,word", "refine_top_k": 1}, cited):  # every level's batches on Ray
            want, got = local.explain(PROMPT, TARGET, **chain), split.explain(PROMPT, TARGET, **chain)
            assert [len(lv.units) for lv in got.levels] == [len(lv.units) for lv in want.levels]
            for a, b in zip(got.levels, want.levels):
                np.testing.assert_allclose(a.relevance, b.relevance, rtol=0, atol=1e-6)
    assert split.executor.actors == [] and _cpus_come_back()  # given back on leaving
    with pytest.raises(ClusterError, match="this Ray executor is closed"):
        split.explain(PROMPT, TARGET)


def test_a_worker_that_dies_has_its_batches_run_again(executors, folder, local, tmp_path):
    marker = tmp_path / "died"
    executor = executors(folder, dies_once(marker))
    pids = ray.get([a.__ray_call__.remote(lambda self: __import__("os").getpid()) for a in executor.actors])
    split = Explainer(local.graph, local.codec, executor=executor)
    want = local.explain(PROMPT, TARGET, batch_size=2)
    got = split.explain(PROMPT, TARGET, batch_size=2)
    assert marker.exists()  # a worker created it, then ended its process
    after = ray.get([a.__ray_call__.remote(lambda self: __import__("os").getpid()) for a in executor.actors])
    assert len(set(pids) - set(after)) == 1  # exactly one actor runs in a new process
    np.testing.assert_allclose(got.relevance, want.relevance, rtol=0, atol=1e-6)


def test_stop_cancels_the_batches_left(executors, folder, local):
    executor = executors(folder)
    want = local.explain(PROMPT, TARGET, batch_size=1)
    fed = want.prompt_ids + want.target_ids[:-1]
    plan = local.plan(fed, want.target_ids, want.units, ExplainRequest(prompt=PROMPT, batch_size=1))
    stop = Stop()
    results = executor.run(plan.shared, plan.batches, stop)
    next(results)
    stop.set("client went away")
    started = time.perf_counter()
    with pytest.raises(Stopped, match="client went away"):
        list(results)
    assert time.perf_counter() - started < 2


@pytest.mark.parametrize("scheme", ["", "ray://"])
def test_an_address_nothing_answers_fails_fast_in_one_line(cluster, scheme):
    with socket.socket() as probe:  # a port that was free a moment ago
        probe.bind(("127.0.0.1", 0))
        address = f"{scheme}127.0.0.1:{probe.getsockname()[1]}"
    started = time.perf_counter()
    with pytest.raises(ClusterError) as error:
        connect(address)
    assert time.perf_counter() - started < 5
    message = str(error.value)
    assert "\n" not in message and message.startswith(f"cannot reach a Ray cluster at {address!r}")


def test_addresses_are_checked_before_connecting(cluster):
    assert _endpoint("ray://head") == ("head", 10001) and _endpoint("head") == ("head", 6379)
    assert _endpoint("[::1]:6380") == ("::1", 6380) and _endpoint("ray://[::1]") == ("::1", 10001)
    with pytest.raises(ClusterError, match="is not 'local', 'auto', ray://HOST:PORT or HOST:PORT"):
        connect("ray://head:port")
    connect(ray.get_runtime_context().gcs_address)  # a live cluster's port passes the check (already connected)


def test_the_command_line_reports_a_bad_address_in_one_line(folder, capsys):
    started = time.perf_counter()
    code = main(
        [
            "explain",
            str(folder),
            "--prompt",
            PROMPT,
            "--target",
            TARGET,
            "--ray",
            "127.0.0.1:1",
            "--shards",
            "2",
            "--quiet",
        ]
    )
    assert code == 2 and time.perf_counter() - started < 10
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("atman-onnx: error: cannot reach a Ray cluster at '127.0.0.1:1'")


def test_a_folder_the_workers_cannot_read_fails_in_one_line(cluster, tmp_path):
    missing = tmp_path / "not-exported"
    missing.mkdir()
    with pytest.raises(ContractError) as on_driver:
        load_manifest(missing)
    started = time.perf_counter()
    with pytest.raises(ContractError) as on_workers:
        RayExecutor(missing, 2, threads=1, provider="cpu")
    assert time.perf_counter() - started < 20
    assert str(on_workers.value) == str(on_driver.value) and "\n" not in str(on_workers.value)
    assert _cpus_come_back()  # its actors were ended


def test_actors_that_cannot_start_fail_in_one_line_not_a_hang(executors, folder, monkeypatch):
    held = executors(folder)  # 2 actors of 1 CPU: the whole cluster
    monkeypatch.setattr("atman_onnx.cluster.executor.START_TIMEOUT_S", 2.0)
    with pytest.raises(
        ClusterError,
        match=r"^1 Ray actors of 1 CPUs did not start within 2 s: the cluster has 0 of "
        r"its 2 CPUs free \(other actors or an explainer not closed hold the rest\)$",
    ):
        RayExecutor(folder, 1, threads=1, provider="cpu")
    held.close()
    assert _cpus_come_back()


def test_shards_need_cpus_and_an_address(cluster, folder, capsys):
    with pytest.raises(ClusterError, match="3 shards of 1 threads need 3 CPUs; the Ray cluster has 2"):
        RayExecutor(folder, 3)
    with pytest.raises(InputError, match="shards and threads must be at least 1, got 0 and 1"):
        RayExecutor(folder, 0)
    assert main(["explain", str(folder), "--prompt", PROMPT, "--shards", "2"]) == 2
    assert capsys.readouterr().err == "atman-onnx: error: --shards needs --ray\n"


@pytest.mark.slow
def test_split_explanation_equals_local_on_smollm2(smollm2_export, executors):
    folder = smollm2_export("log_additive")
    local = Explainer.load(folder, provider="cpu", threads=1)
    split = Explainer(local.graph, local.codec, executor=executors(folder))
    prompt = "Alice lives in Paris and Bob lives in Rome. Bob lives in the city of"
    for options in ({"conceptual": 0.7, "batch_size": 4}, {"granularity": "word", "batch_size": 2}):
        want = local.explain(prompt, " Rome", **options)
        got = split.explain(prompt, " Rome", **options)
        assert np.abs(want.relevance).max() > 1e-2 and len(want.units) > 8
        np.testing.assert_allclose(got.relevance, want.relevance, rtol=0, atol=1e-6)
