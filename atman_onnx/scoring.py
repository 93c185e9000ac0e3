"""Score sets of units on one unperturbed pass per completion: the plan of each set's perturbations, run by an
executor and turned into relevance. A search over levels (``atman_onnx.runtime.search``) calls it once per level.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from atman_onnx.request import ExplainRequest
from atman_onnx.runtime.execute import Executor, Progress, Stop, execute
from atman_onnx.runtime.factors import check_units, plan_factors
from atman_onnx.runtime.plan import Plan, Shared, make_plan
from atman_onnx.runtime.score import relevance
from atman_onnx.runtime.sizing import Sizing
from atman_onnx.runtime.units import Unit


@dataclass(frozen=True)
class Base:
    """One completion's unperturbed pass (what its plans share), its input embeddings (for conceptual
    suppression) and the sizing of its calls."""

    shared: Shared
    embeddings: np.ndarray
    sizing: Sizing


def plan_units(base: Base, units: Sequence[Unit], request: ExplainRequest, call_cost: float | None = None) -> Plan:
    """The batches that suppress each of ``units`` in turn on ``base``; ``call_cost`` as in ``make_plan``
    (default: the sizing's, for the graph's device)."""
    shared = base.shared
    groups = check_units([list(u.positions) for u in units], shared.n_fed)
    factors = plan_factors(groups, shared.n_fed, request.factor, request.conceptual, base.embeddings)
    cost = base.sizing.call_cost if call_cost is None else call_cost
    return make_plan(shared, factors, base.sizing.batch_size, request.schedule, cost)


class Scorer:
    """Relevance of any set of units for the request's completions (the target, then the contrast if any): a
    contrast's relevance is one column, the target's total minus the contrast's. ``plans`` keeps every plan run,
    and ``progress`` counts their rows."""

    def __init__(
        self,
        bases: Sequence[Base],
        request: ExplainRequest,
        executor: Executor,
        on_progress: Callable[[int, int], None] | None = None,
        stop: Stop | None = None,
    ):
        self.bases, self.request, self.executor, self.stop = bases, request, executor, stop
        self.progress = Progress(0, on_progress)
        self.plans: list[Plan] = []

    def expect(self, units: int, later: int) -> None:
        """Count, for progress, the units about to be scored and those expected after them."""
        self.progress.total = self.progress.done + (units + later) * len(self.bases)

    def __call__(self, units: Sequence[Unit]) -> np.ndarray:
        plans = [plan_units(base, units, self.request) for base in self.bases]
        self.plans.extend(plans)
        scores = [relevance(p.shared.logprobs, execute(p, self.executor, self.progress, self.stop)) for p in plans]
        if len(scores) > 1:
            return (scores[0].sum(axis=1) - scores[1].sum(axis=1))[:, None]
        return scores[0]
