"""The evaluation: metric functions on hand-made inputs, the committed QA set's shape, and (slow) one run on SmolLM2."""

from __future__ import annotations

import itertools
import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest

EVAL = Path(__file__).resolve().parents[1] / "tools" / "eval"
sys.path.insert(0, str(EVAL))

from metrics import aggregate, average_precision, curve_area, perturbation_rows, random_ap, top_k  # noqa: E402


def test_average_precision_known_values():
    assert average_precision([0.9, 0.8, 0.1], [True, False, False]) == 1.0
    assert average_precision([0.9, 0.8, 0.1], [False, True, False]) == 0.5
    assert average_precision([0.9, 0.8, 0.1], [False, False, True]) == pytest.approx(1 / 3)
    # positives at ranks 1 and 3: (1/1 + 2/3) / 2
    assert average_precision([4, 3, 2, 1], [True, False, True, False]) == pytest.approx((1 + 2 / 3) / 2)
    # the order of the inputs does not matter, only the scores
    assert average_precision([1, 2, 3, 4], [False, True, False, True]) == pytest.approx((1 + 2 / 3) / 2)


def test_average_precision_ties_enter_together():
    # all tied: precision at the single threshold is the share of positives
    assert average_precision([1, 1, 1, 1], [True, False, False, False]) == pytest.approx(0.25)
    # a tie between a positive and a negative at the top: precision 1/2 there, whichever comes first
    assert average_precision([2, 2, 1], [True, False, False]) == pytest.approx(0.5)
    assert average_precision([2, 2, 1], [False, True, False]) == pytest.approx(0.5)


def test_average_precision_rejects_bad_input():
    with pytest.raises(ValueError):
        average_precision([1, 2], [False, False])
    with pytest.raises(ValueError):
        average_precision([1, 2, 3], [True, False])


def test_random_ap_is_the_mean_over_all_orderings():
    for n, n_pos in [(1, 1), (4, 1), (5, 2), (6, 3)]:
        labels = [True] * n_pos + [False] * (n - n_pos)
        every = [average_precision(-np.arange(n), list(p)) for p in set(itertools.permutations(labels))]
        assert random_ap(n, n_pos) == pytest.approx(np.mean(every))
    assert random_ap(5, 1) == pytest.approx((1 + 1 / 2 + 1 / 3 + 1 / 4 + 1 / 5) / 5)


def test_curve_area():
    assert curve_area([0, 0.5], [0, -1]) == pytest.approx(-0.5)  # a straight line: mean height
    assert curve_area([0, 0.1, 0.2, 0.3, 0.4, 0.5], [0, -1, -1, -1, -1, -1]) == pytest.approx(-0.9)
    assert curve_area([0, 1, 3], [1, 1, 1]) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        curve_area([0, 0], [1, 1])


def test_top_k_and_perturbation_rows():
    scores = np.array([0.1, 0.9, 0.5, 0.7, 0.3])
    assert list(top_k(scores, 0.4)) == [1, 3]
    assert list(top_k(scores, 0.0)) == []
    assert list(top_k([1, 1, 0], 0.67)) == [0, 1]  # ties: earlier first
    candidates = np.array([2, 3, 4, 5, 6])  # fed positions of the five scored tokens
    deletion, insertion = perturbation_rows(scores, candidates, 8, [0.0, 0.2, 0.4], factor=0.0)
    assert deletion.shape == insertion.shape == (3, 8)
    assert np.all(deletion[0] == 1)
    assert list(np.flatnonzero(deletion[1] == 0)) == [3]
    assert list(np.flatnonzero(deletion[2] == 0)) == [3, 5]
    assert list(np.flatnonzero(insertion[0] == 0)) == [2, 3, 4, 5, 6]
    assert list(np.flatnonzero(insertion[2] == 0)) == [2, 4, 6]
    assert np.all(insertion[:, [0, 1, 7]] == 1)  # positions outside the candidates are never touched


def test_aggregate():
    assert list(aggregate([1, 2, 3, 4], [[0, 1], [2], [3]])) == [3, 3, 4]


@pytest.fixture(scope="module")
def qa_set():
    return json.loads((EVAL / "qa_set.json").read_text())


def test_qa_set_is_well_formed(qa_set):
    items = qa_set["items"]
    assert 30 <= len(items) <= 60
    assert len({item["id"] for item in items}) == len(items)
    starts = qa_set["format_starts_with_answer"]
    assert starts[qa_set["format"]] == max(starts.values())
    for item in items:
        prompt, context = item["prompt"], item["context"]
        assert 4 <= len(item["sentences"]) <= 6
        assert context == " ".join(item["sentences"])
        lo, hi = item["context_span"]
        assert prompt[lo:hi] == context
        for (start, end), sentence in zip(item["sentence_spans"], item["sentences"]):
            assert lo <= start < end <= hi and prompt[start:end] == sentence
        start, end = item["evidence_span"]
        evidence = item["sentences"][item["evidence"]]
        assert [start, end] == item["sentence_spans"][item["evidence"]] and prompt[start:end] == evidence
        # the answer is in the evidence sentence, once in the context, and not in the question
        assert re.search(rf"\b{re.escape(item['answer'])}\b", evidence)
        assert len(re.findall(rf"\b{re.escape(item['answer'])}\b", context)) == 1
        assert item["answer"] not in item["question"]
        assert item["answer"] in item["generation"]
        assert item["target"].strip() == item["answer"]
        qs, qe = item["question_span"]
        assert prompt[qs:qe] == item["question"] and qs >= hi
        # token positions: disjoint per sentence, in text order, inside the prompt, evidence = its sentence's
        n = len(item["prompt_ids"])
        flat = [p for tokens in item["sentence_tokens"] for p in tokens]
        assert flat == sorted(set(flat)) and all(0 <= p < n for p in flat)
        assert item["evidence_tokens"] == item["sentence_tokens"][item["evidence"]]
        assert all(p > flat[-1] for p in item["question_tokens"]) and item["question_tokens"][-1] < n
        assert item["target_ids"]


def test_qa_set_is_what_make_set_generates(qa_set):
    """The committed candidates come from the seeded generator (the model only filters them)."""
    import random

    import make_set

    rng = random.Random(qa_set["seed"])
    drawn, seen = [], set()
    while len(drawn) < qa_set["candidates"]:
        item = make_set.candidate(rng)
        if item is not None and item["question"] not in seen:
            seen.add(item["question"])
            drawn.append(item)
    by_id = {f"q{i:03d}": item for i, item in enumerate(drawn)}
    for item in qa_set["items"]:
        source = by_id[item["id"]]
        assert (source["sentences"], source["question"], source["answer"], source["evidence"]) == (
            item["sentences"],
            item["question"],
            item["answer"],
            item["evidence"],
        )
        assert (
            item["prompt"]
            == make_set.FORMATS[qa_set["format"]].format(context=item["context"], question=item["question"])
            or qa_set["format"] == "chat"
        )


@pytest.mark.slow
def test_evaluation_runs_end_to_end(smollm2_export, tmp_path):
    """One command on the real model: AtMan finds the evidence sentence of the first item, which random does not."""
    import subprocess

    out = tmp_path / "results.json"
    command = [
        sys.executable,
        str(EVAL / "run.py"),
        str(smollm2_export("log_additive")),
        "--limit",
        "2",
        "--methods",
        "AtMan log_additive s=0",
        "random (mean of 5 seeds)",
        "--json",
        str(out),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr
    report = json.loads(out.read_text())
    assert report["items"] == 2 and report["units"] == "sentence"
    atman, random_baseline = report["results"]
    assert atman["method"] == "AtMan log_additive s=0" and random_baseline["kind"] == "random"
    assert atman["map"] == 1.0 and atman["top1"] == 1.0  # measured: the evidence sentence ranks first in both items
    assert random_baseline["map"] < 0.5
    # removing what AtMan ranks first hurts the answer more than removing random tokens; restoring it helps more
    assert atman["deletion_auc"] < random_baseline["deletion_auc"]
    assert atman["insertion_auc"] > random_baseline["insertion_auc"]
