"""Levels: a coarse-to-fine search reports exact scores (each equals a flat run's at its granularity), spends only
the passes its rule allows, and refuses what cannot nest."""

from __future__ import annotations

import json

import numpy as np
import pytest

from atman_onnx import Explainer, Explanation
from atman_onnx.cli import main
from atman_onnx.core.errors import InputError
from atman_onnx.runtime.search import GROUP, Rule, group_size, nest, search, selected
from atman_onnx.runtime.units import Unit

PROMPT = (
    "The dog met the fox. The fox is in the garden.\n\n"
    "The capital of France is Paris. The dog is in France.\n\n"
    "The fox met the dog in the garden.\n\n"
    "The capital of France is"
)
TARGET = " Paris is the capital"


def _units(spans: list[tuple[int, int]], text: str = "x" * 100) -> list[Unit]:
    return [Unit(text[a:b], a, b, "prompt", tuple(range(a, b))) for a, b in spans]


def _scorer(values: dict[tuple[int, int], float], calls: list[int]):
    def score(units):
        calls.append(len(units))
        return np.array([[values.get((u.start, u.end), 0.0)] for u in units], dtype=np.float32)

    return score


def _summing(values: dict[tuple[int, int], float], calls: list[int]):
    """A unit's score: the sum of the values of the spans it holds (as a group's would be, roughly)."""

    def score(units):
        calls.append(len(units))
        held = [sum(v for (a, b), v in values.items() if u.start <= a and b <= u.end) for u in units]
        return np.array(held, dtype=np.float32)[:, None]

    return score


def test_search_refines_only_the_selected_units_and_counts_passes():
    parents = _units([(0, 10), (10, 20), (20, 30)])
    children = _units([(0, 5), (5, 10), (10, 15), (15, 20), (20, 25), (25, 30)])
    values = {(10, 20): 2.0, (0, 10): 1.0, (20, 30): -1.0, (10, 15): 0.5, (0, 5): 3.0}
    calls: list[int] = []
    levels = search("x" * 30, [("paragraph", parents), ("sentence", children)], Rule(top_k=2), _scorer(values, calls))
    assert [lv.granularity for lv in levels] == ["paragraph", "sentence"] and calls == [3, 4]
    assert [(u.start, u.end) for u in levels[1].units] == [(0, 5), (5, 10), (10, 15), (15, 20)]
    assert levels[1].relevance[:, 0].tolist() == [3.0, 0.0, 0.5, 0.0]
    one = search("x" * 30, [("paragraph", parents), ("sentence", children)], Rule(1, mass=0.6), _scorer(values, []))
    assert [(u.start, u.end) for u in one[1].units] == [(10, 15), (15, 20)]  # 2.0 of 3.0 positive is enough
    capped = search(
        "x" * 30, [("paragraph", parents), ("sentence", children)], Rule(2, max_passes=6), _scorer(values, [])
    )
    assert [(u.start, u.end) for u in capped[1].units] == [(10, 15), (15, 20)]  # 1 + 3 + 2: the best parent's first
    with pytest.raises(InputError, match=r"max_passes 3 is below the 4 passes the first level \(paragraph\) needs"):
        search("x" * 30, [("paragraph", parents), ("sentence", children)], Rule(2, max_passes=3), _scorer(values, []))


def test_answer_sentence_columns_each_refine_their_own_sources():
    parents = _units([(0, 10), (10, 20), (20, 30)])
    children = _units([(0, 5), (5, 10), (10, 15), (15, 20), (20, 25), (25, 30)])
    by_token = {(0, 10): [3.0, 0.0, 0.0], (10, 20): [0.0, 1.0, 1.0], (20, 30): [0.0, 0.0, 0.5]}

    def score(units):
        return np.array([by_token.get((u.start, u.end), [0.0, 0.0, 0.0]) for u in units], dtype=np.float32)

    chain = [("paragraph", parents), ("sentence", children)]
    by_total = search("x" * 30, chain, Rule(1), score)  # the largest total only: (0, 10)
    assert [(u.start, u.end) for u in by_total[1].units] == [(0, 5), (5, 10)]
    columns = ((0,), (1, 2))  # two answer sentences: token 0, then tokens 1 and 2
    followed = search("x" * 30, chain, Rule(1, columns=columns), score)  # each sentence's best paragraph
    assert [(u.start, u.end) for u in followed[1].units] == [(0, 5), (5, 10), (10, 15), (15, 20)]
    assert selected(score(parents), Rule(2, columns=columns)) == [0, 1, 2]  # in turns, each unit once


def test_a_group_level_goes_first_when_it_saves_passes():
    assert group_size(12, 3) is None and group_size(33, 3) == 3 and group_size(64, 2) in (5, 6)
    paragraphs = _units([(k, k + 1) for k in range(40)])
    sentences = paragraphs  # one sentence each
    calls: list[int] = []
    levels = search(
        "y" * 40, [("paragraph", paragraphs), ("sentence", sentences)], Rule(2), _summing({(7, 8): 1.0}, calls)
    )
    assert levels[0].granularity == GROUP and len(levels[0].units) < 40 and sum(calls) < 40
    assert [(u.start, u.end) for u in levels[-1].units] == [(7, 8)] and sum(calls) == 10 + 4 + 1
    off = search("y" * 40, [("paragraph", paragraphs), ("sentence", sentences)], Rule(2, groups="off"), _scorer({}, []))
    assert off[0].granularity == "paragraph"


def test_levels_that_do_not_nest_are_named():
    with pytest.raises(InputError, match="levels do not nest: sentence 'xxxxxxxxxx' crosses a spans boundary"):
        nest(_units([(0, 10), (10, 20)]), _units([(5, 15)]), ("spans", "sentence"))


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
@pytest.mark.parametrize("mode", ["log_additive", "multiplicative"])
def test_refined_scores_equal_flat_scores(tiny_export, arch, mode):
    explainer = Explainer.load(tiny_export(arch, mode), provider="cpu")
    chain = ("paragraph", "sentence", "token")
    searched = explainer.explain(PROMPT, TARGET, granularity=",".join(chain), refine_top_k=2, group_level="off")
    assert [lv.granularity for lv in searched.levels] == list(chain)
    assert searched.units == list(searched.levels[-1].units) and searched.granularity == "token"
    flat_passes = 0
    for level in searched.levels:
        flat = explainer.explain(PROMPT, TARGET, granularity=level.granularity)
        flat_passes = flat.timings["passes"]
        by_span = {(u.segment, u.start, u.end): row for u, row in zip(flat.units, flat.relevance)}
        for unit, row in zip(level.units, level.relevance):
            np.testing.assert_allclose(row, by_span[unit.segment, unit.start, unit.end], atol=1e-5, rtol=0)
    assert searched.timings["passes"] < flat_passes


def test_command_line_writes_levels_and_streams_progress_over_the_search(runtime_model, tmp_path, capsys):
    out = tmp_path / "levels.json"
    folder = str(runtime_model("log_additive"))
    main(
        [
            "explain",
            folder,
            "--prompt",
            PROMPT,
            "--target",
            TARGET,
            "--granularity",
            "paragraph,sentence",
            "--json",
            str(out),
            "--quiet",
        ]
    )
    printed = capsys.readouterr().out
    assert "levels: paragraph (5 scored) > sentence" in printed
    data = json.loads(out.read_text())
    assert data["format_version"] == 4 and [lv["granularity"] for lv in data["levels"]] == ["paragraph", "sentence"]
    assert (
        data["units"] == data["levels"][-1]["units"]
        and Explanation.from_json(out.read_text()).granularity == "sentence"
    )
    seen: list[tuple[int, int]] = []
    explainer = Explainer.load(folder, provider="cpu")
    done = explainer.explain(PROMPT, TARGET, granularity="paragraph,sentence", on_progress=lambda *a: seen.append(a))
    assert seen[-1][0] == seen[-1][1] == done.timings["passes"] - 1
    assert [a[0] for a in seen] == sorted(a[0] for a in seen)


def test_a_unit_covering_the_whole_prompt_is_warned_of(runtime_model):
    explainer = Explainer.load(runtime_model("log_additive"), provider="cpu")
    explanation = explainer.explain("The dog", " The fox", granularity="paragraph")
    assert explanation.warnings and "covers the whole prompt" in explanation.warnings[0]
    assert "warning: paragraph 'The dog' covers the whole prompt" in explanation.to_text()
    assert not explainer.explain("The dog met the fox.", " The fox", granularity="word").warnings


def test_each_answer_sentence_gets_its_own_sources(runtime_model):
    explainer = Explainer.load(runtime_model("log_additive"), provider="cpu")
    target = " Paris is the capital. The dog met the fox."
    tokens = explainer.explain(PROMPT, target, granularity="sentence")
    cited = explainer.explain(PROMPT, target, granularity="sentence", target_granularity="sentence")
    assert cited.target_tokens == [" Paris is the capital.", " The dog met the fox."]
    assert cited.target_granularity == "sentence" and cited.relevance.shape == (len(tokens.units), 2)
    np.testing.assert_allclose(cited.relevance.sum(axis=1), tokens.total, atol=1e-5)
    assert "sources of 'Paris is the capital.':" in cited.to_text()
    assert "Explain which answer sentences?" in cited.to_html()
    assert Explanation.from_json(cited.to_json()).target_granularity == "sentence"
    whole = explainer.explain(PROMPT, target, granularity="sentence", target_granularity="complete")
    assert whole.target_tokens == [target] and np.allclose(whole.relevance[:, 0], tokens.total, atol=1e-5)
    with pytest.raises(InputError, match="a contrast has one column of relevance already"):
        explainer.explain(PROMPT, target, contrast=" Rome", target_granularity="sentence")
    chain = explainer.explain(
        PROMPT, target, granularity="paragraph,sentence", refine_top_k=1, target_granularity="sentence"
    )
    best = {int(np.argmax(chain.levels[0].relevance[:, c])) for c in range(2)}  # each answer sentence's paragraph
    parents = [p for p in chain.levels[0].units if any(set(u.positions) <= set(p.positions) for u in chain.units)]
    assert {chain.levels[0].units.index(p) for p in parents} == best and len(best) == 2
    flat = {(u.start, u.end): row for u, row in zip(cited.units, cited.relevance)}
    for unit, row in zip(chain.units, chain.relevance):  # exact: as the flat sentence level scores them
        np.testing.assert_allclose(row, flat[unit.start, unit.end], atol=1e-5)


def test_a_stop_ends_a_search_between_batches_of_a_later_level(runtime_model):
    """Stop works across the whole search: set after the first batch of the second level, nothing more runs."""
    from atman_onnx import ExplainRequest
    from atman_onnx.runtime.execute import Stop, Stopped

    explainer = Explainer.load(runtime_model("log_additive"), provider="cpu")
    options = {"granularity": "paragraph,sentence", "group_level": "off", "batch_size": 1}
    request = ExplainRequest(prompt=PROMPT, target=TARGET, **options)
    stop, levels, progress = Stop(), [], []

    def on_progress(done: int, total: int) -> None:
        progress.append((done, total))
        if levels and done > len(levels[0].units):  # the second level's first batch is in
            stop.set("enough")

    with pytest.raises(Stopped, match="enough"):
        explainer.run(request, on_progress=on_progress, stop=stop, on_level=levels.append)
    assert len(levels) == 1 and progress[-1][0] == len(levels[0].units) + 1  # one row of the second level, no more
    assert progress[-1][1] > progress[-1][0]  # counted against the whole search
