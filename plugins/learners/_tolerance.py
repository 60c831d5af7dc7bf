"""The ``tolerance`` λ rule: λ as the multiplier of a metric-constrained meta-objective.

Meta-sparsity asks for the sparsest backbone whose adapted models lose no accuracy. The
gradient rules of :mod:`._lam_update` learn λ from ∂(query loss)/∂λ one adaptation step ahead,
which never sees the zeros λ leaves in Θ_meta (docs/science.md). This rule states the trade-off
explicitly, as a constraint over the episodes:

    make Θ_meta as sparse as possible, subject to: for every task t, s_t ≤ ε,

where s_t is the relative shortfall of m̄_t from m*_t: m̄_t is an exponential moving average
(time constant ``window`` meta-steps) of task t's primary metric on the query batches of the
episodes that contain t, after adaptation, and m*_t the best m̄_t reached so far
(s_t = (m*_t − m̄_t)/|m*_t| where higher is better, (m̄_t − m*_t)/|m*_t| where lower is). λ is
updated every meta-step by multiplicative dual ascent on the constraint:

    log λ ← log λ + η·clip(1 − r/ε, −1, 1),   r = max_t s_t,

so λ grows by up to a factor e^η per meta-step while every task's adapted metric stays within ε
of its best, and shrinks when one task's falls short by more than 2ε. Nothing moves λ during the
first ``window`` meta-steps, while the averages settle. Only the query batches Θ_meta's
meta-gradient is taken from are read: no validation or test example. Metrics, not losses, are
constrained because a loss need not be positive (the depth loss is a sum of logarithms), so a
relative tolerance on it has no meaning.

Both proxes are taken in the outer optimiser's metric D where it has one, as under
``preconditioned``: under Adam λ is on the proxssi scale of the fixed-λ frontier
(docs/penalties.md); under SGD the proxes are the plain ones.

References:
    Platt & Barr 1987, "Constrained Differential Optimization" (the multiplier moves with the
    constraint's violation); Gallego-Posada et al. 2022, "Controlled Sparsity via Constrained
    Optimization" (a constraint instead of a hand-tuned penalty weight; there on the density,
    here on the adapted models' metrics).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from torch import Tensor

from sparsekit.tasks import Task


def record_scores(
    scores: dict[str, list[float]],
    outputs: Mapping[str, Tensor],
    targets: Mapping[str, Tensor],
    tasks: Sequence[Task],
) -> None:
    """Append each task's primary metric of one batch's ``outputs`` to ``scores[task]``."""
    for task in tasks:
        meter = task.meter()
        meter.update(outputs[task.name].detach(), targets[task.name])
        scores.setdefault(task.name, []).append(meter.compute()[task.primary_metric])


class ToleranceControl:
    """Per-task metric averages, their best values, and the factor λ is multiplied by each step.

    Args:
        tolerance: ε > 0, the relative shortfall from the best that each task tolerates.
        rate: η > 0, the largest change of log λ in one meta-step.
        window: the averages' time constant in meta-steps (≥ 1); λ is held for this many steps.
    """

    def __init__(self, tolerance: float, rate: float, window: int) -> None:
        if tolerance <= 0 or rate <= 0 or window < 1:
            raise ValueError(
                f"tolerance and rate must be > 0 and window ≥ 1, got {tolerance}, {rate}, {window}"
            )
        self.tolerance, self.rate, self.window = tolerance, rate, window
        self.average: dict[str, float] = {}
        self.best: dict[str, float] = {}
        self.steps = 0
        #: r of the last meta-step (None while the averages settle).
        self.violation: float | None = None

    def observe(self, scores: Mapping[str, list[float]], higher: Mapping[str, bool]) -> float:
        """Fold one meta-step's per-task query metrics in; the factor to multiply λ by.

        Args:
            scores: each task's primary metric in this meta-step's episodes (tasks in no
                episode are left out).
            higher: whether higher is better, by task.

        Raises:
            ValueError: a metric that is not finite.
        """
        self.steps += 1
        weight = 1.0 / self.window
        for task, values in scores.items():
            if not values:
                continue
            if not all(math.isfinite(v) for v in values):
                raise ValueError(f"tolerance needs finite metrics, got {task}: {values}")
            value = sum(values) / len(values)
            old = self.average.get(task)
            self.average[task] = value if old is None else old + weight * (value - old)
        if self.steps <= self.window:
            self.violation = None
            return 1.0
        shortfalls = []
        for task, average in self.average.items():
            best = self.best.get(task, average)
            best = max(best, average) if higher[task] else min(best, average)
            self.best[task] = best
            gap = best - average if higher[task] else average - best
            shortfalls.append(gap / abs(best) if best else 0.0)
        self.violation = max(shortfalls)
        drive = min(1.0, max(-1.0, 1.0 - self.violation / self.tolerance))
        return math.exp(self.rate * drive)

    def state_dict(self) -> dict[str, Any]:
        return {
            "average": dict(self.average),
            "best": dict(self.best),
            "steps": self.steps,
            "violation": self.violation,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.average = dict(state["average"])
        self.best = dict(state["best"])
        self.steps = int(state["steps"])
        self.violation = state["violation"]
