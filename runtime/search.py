"""A coarse-to-fine search over levels of units: score every unit of the first level, then only the sub-units of
the units a refinement rule selects, level after level (docs/method.md, "Levels").

A unit's AtMan score depends on that unit alone, so each score reported here is exactly the score a flat
explanation at its granularity gives it: the search saves passes by leaving units out, never by approximating.
Many first-level units make the first level itself costly, so a level of contiguous groups of them is put above it
whenever that is expected to save passes (``group_size``).

Nothing here runs a graph: ``search`` takes a ``score`` function (the units of one level to their relevance).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from atman_onnx.core.errors import InputError
from atman_onnx.runtime.score import by_columns
from atman_onnx.runtime.units import Unit

GROUP = "group"


@dataclass(frozen=True)
class Rule:
    """Which units of a level are refined: the ``top_k`` most relevant (by relevance summed over the target), fewer
    when the first of them already hold ``mass`` of the level's positive relevance; only units of positive
    relevance. With ``columns`` (groups of target tokens: the answer's sentences) the rule picks each column's own
    units, and refines them all. ``max_passes`` caps the passes of the whole search; ``groups`` ("auto" or "off")
    allows the group level."""

    top_k: int
    mass: float | None = None
    max_passes: int | None = None
    groups: str = "auto"
    columns: tuple[tuple[int, ...], ...] | None = None

    @property
    def most(self) -> int:
        """The most units of a level that this rule refines."""
        return self.top_k * (len(self.columns) if self.columns else 1)


@dataclass(frozen=True)
class Level:
    """One level of a search: its granularity, the units it scored and their relevance [units, target columns]."""

    granularity: str
    units: tuple[Unit, ...]
    relevance: np.ndarray

    def in_columns(self, columns: list[tuple[int, ...]] | None) -> Level:
        """This level with its target tokens summed into ``columns`` (answer sentences, the whole); None: as is."""
        return self if columns is None else Level(self.granularity, self.units, by_columns(self.relevance, columns))


def nest(parents: Sequence[Unit], children: Sequence[Unit], names: tuple[str, str]) -> list[int]:
    """For each child unit, the first parent whose positions hold all of its positions; ``InputError`` naming the
    first child that lies in no parent (levels that do not nest). Children that lie in no parent because they
    cover positions no parent covers at all (a target unit under prompt-only parents) are left out: -1."""
    covered = {p for parent in parents for p in parent.positions}
    owners = []
    for child in children:
        mine = set(child.positions)
        owner = next((i for i, parent in enumerate(parents) if mine <= set(parent.positions)), -1)
        if owner < 0 and mine & covered:
            raise InputError(
                f"granularity levels do not nest: {names[1]} {child.text[:40]!r} crosses a {names[0]} boundary"
            )
        owners.append(owner)
    return owners


def group_size(n_units: int, top_k: int) -> int | None:
    """Units per group of the level put above ``n_units`` first-level units, or None when a group level is not
    expected to save passes: ``ceil(n / s)`` group passes then ``top_k`` groups of ``s`` units cost fewer than
    ``n`` when ``n`` is well above ``4 top_k``; ``s`` near ``sqrt(n / top_k)`` minimises the cost."""
    best, size = n_units, None
    for s in range(2, n_units):
        cost = math.ceil(n_units / s) + min(top_k, math.ceil(n_units / s)) * s
        if cost < best:
            best, size = cost, s
    return size


def make_groups(units: Sequence[Unit], size: int, prompt: str) -> tuple[Unit, ...]:
    """Contiguous runs of ``size`` units (of one segment each), each one unit over their positions; a group's text
    and span run from its first unit's start to its last unit's end."""
    groups = []
    for segment in dict.fromkeys(u.segment for u in units):
        mine = [u for u in units if u.segment == segment]
        for k in range(0, len(mine), size):
            run = mine[k : k + size]
            positions = tuple(sorted({p for u in run for p in u.positions}))
            start, end = run[0].start, run[-1].end
            text = prompt[start:end] if segment == "prompt" else " ".join(u.text for u in run)
            groups.append(Unit(text, start, end, segment, positions))
    return tuple(groups)


def selected(relevance: np.ndarray, rule: Rule) -> list[int]:
    """The units of one level that ``rule`` refines, most relevant first; with ``columns``, each column's picks,
    taken in turns (every column's best, then every column's second, ...), each unit once."""
    if rule.columns is None or len(rule.columns) == 1:
        return _selected(relevance.sum(axis=1), rule)
    summed = by_columns(relevance, list(rule.columns))
    picks = [_selected(summed[:, c], rule) for c in range(summed.shape[1])]
    turns = [pick[r] for r in range(rule.top_k) for pick in picks if r < len(pick)]
    return list(dict.fromkeys(turns))


def _selected(total: np.ndarray, rule: Rule) -> list[int]:
    """The units that ``rule`` refines by one score per unit, most relevant first."""
    order = [int(i) for i in np.argsort(-total, kind="stable") if total[i] > 0][: rule.top_k]
    if rule.mass is None:
        return order
    positive, held, picked = float(total[total > 0].sum()), 0.0, []
    for i in order:
        picked.append(i)
        held += float(total[i])
        if held >= rule.mass * positive:
            break
    return picked


def expected_units(
    chain: Sequence[tuple[str, Sequence[Unit]]], depth: int, n_now: int, rule: Rule, left: int | None
) -> int:
    """The units the levels after ``depth`` are expected to score: ``top_k`` parents of each, with the average
    number of sub-units, within the passes left."""
    expected, parents = 0, n_now
    for (_, coarse), (_, fine) in zip(chain[depth:], chain[depth + 1 :]):
        parents = round(min(rule.most, parents) * len(fine) / max(1, len(coarse)))
        expected += parents
    return expected if left is None else min(expected, max(0, left))


def search(
    prompt: str,
    levels: Sequence[tuple[str, Sequence[Unit]]],
    rule: Rule,
    score: Callable[[Sequence[Unit]], np.ndarray],
    cost: int = 1,
    on_plan: Callable[[int, int], None] | None = None,
    on_level: Callable[[Level], None] | None = None,
) -> list[Level]:
    """The levels scored, coarse to fine, a group level first where it saves passes. ``levels``: each granularity
    with all of its units; ``score(units)`` gives their relevance; ``cost``: the passes one unit costs (one per
    completion explained), the passes counted as ``timings["passes"]`` counts them (one unperturbed pass per
    completion besides). ``on_plan(units, later)`` learns, before each level is scored, its unit count and the units
    its later levels are expected to score (for progress); ``on_level`` gets each level once scored."""
    names = [name for name, _ in levels]
    chain = list(levels)
    size = group_size(len(chain[0][1]), rule.most) if rule.groups == "auto" and len(chain) > 1 else None
    if size is not None:
        chain.insert(0, (GROUP, make_groups(chain[0][1], size, prompt)))
        names.insert(0, GROUP)
    first = cost * (1 + len(chain[0][1]))
    if rule.max_passes is not None and rule.max_passes < first:
        raise InputError(f"max_passes {rule.max_passes} is below the {first} passes the first level ({names[0]}) needs")
    left = None if rule.max_passes is None else rule.max_passes - cost
    out: list[Level] = []
    units = list(chain[0][1])
    for depth, (name, _) in enumerate(chain):
        if left is not None:  # the most relevant parents' sub-units first, as far as the passes left reach
            units = units[: left // cost]
            left -= cost * len(units)
        units = sorted(units, key=lambda u: min(u.positions))
        if not units:  # nothing of positive relevance to refine, or no passes left
            break
        if on_plan is not None:
            on_plan(len(units), expected_units(chain, depth, len(units), rule, None if left is None else left // cost))
        level = Level(name, tuple(units), score(units))
        out.append(level)
        if on_level is not None:
            on_level(level)
        if depth + 1 == len(chain):
            break
        finer = chain[depth + 1][1]
        owners = nest(units, finer, (name, chain[depth + 1][0]))
        rank = {parent: r for r, parent in enumerate(selected(level.relevance, rule))}
        picked = [i for i, owner in enumerate(owners) if owner in rank]
        units = [finer[i] for i in sorted(picked, key=lambda i: (rank[owners[i]], i))]
    return out


def cover_warnings(levels: Sequence[Level], n_prompt: int, mode: str) -> list[str]:
    """One line per unit that covers every position the first target token's position can attend to (the whole
    prompt): under log-additive suppression softmax ignores a shift applied to all of its inputs, so its relevance
    for that token is zero by construction, not by evidence."""
    if mode != "log_additive":
        return []
    whole = set(range(n_prompt))
    return [
        f"{level.granularity} {unit.text[:40]!r} covers the whole prompt, so suppressing it cannot change the first "
        "target token (softmax ignores a shift of all its inputs): its score says nothing about it"
        for level in levels
        for unit in level.units
        if whole <= set(unit.positions)
    ]
