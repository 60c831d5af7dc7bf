"""What one run measured: a plain record, with the values derived from it as properties."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import nn


@dataclass
class RunRecord:
    """The outcome of one experiment.

    Attributes:
        config: the resolved experiment config (plain dict).
        tasks: the trained tasks, in order.
        metrics: test-split metrics of the final model, ``{task: {metric: value}}``.
        metric_directions: ``{task: {metric: higher_is_better}}``.
        sparsity: ``{"group": g, "parameter": p}`` of the backbone, fractions in [0, 1].
        layers: per backbone conv layer: name, input channels, active before and after training.
        profile: sparsity and losses over training (one row per evaluation).
        timings: wall-clock seconds of set-up, training, testing and in total.
        lam_history: λ after every (meta-)step, for learners that learn it: a float, or one
            value per backbone conv layer.
        val_metrics: validation-split metrics of the same final model, the figures to choose
            settings (λ, optimiser, schedule) on; empty for results saved without them.
        best_step: the step whose weights were kept.
        stopped_early: whether patience ran out before the step budget.
        extra: learner- and stage-specific records.
        efficiency: compression ratio ``cr``, FLOPs speed-up ``sp`` and measured ``speedup`` of
            the compact model, with the counts and latencies behind them
            (:mod:`sparsekit.nn.efficiency`); empty for results saved without it.
        model: the trained network (None when loaded without weights).
        combiner: the trained loss combiner (None when loaded without weights).
    """

    config: dict[str, Any]
    tasks: list[str]
    metrics: dict[str, dict[str, float]]
    metric_directions: dict[str, dict[str, bool]]
    sparsity: dict[str, float]
    layers: list[dict[str, Any]]
    profile: list[dict[str, float]]
    timings: dict[str, float]
    lam_history: list[float | list[float]] = field(default_factory=list)
    val_metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    best_step: int = 0
    stopped_early: bool = False
    extra: dict[str, Any] = field(default_factory=dict)
    efficiency: dict[str, Any] = field(default_factory=dict)
    model: nn.Module | None = field(default=None, repr=False)
    combiner: nn.Module | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """Everything but the modules, JSON-ready."""
        return {
            "config": self.config,
            "tasks": self.tasks,
            "metrics": self.metrics,
            "val_metrics": self.val_metrics,
            "metric_directions": self.metric_directions,
            "sparsity": self.sparsity,
            "layers": self.layers,
            "profile": self.profile,
            "timings": self.timings,
            "lam_history": self.lam_history,
            "best_step": self.best_step,
            "stopped_early": self.stopped_early,
            "extra": self.extra,
            "efficiency": self.efficiency,
        }

    @property
    def final_lam(self) -> float | list[float] | None:
        """The λ the backbone was trained with: the learned λ after the last meta-step, the fixed
        λ, or, for a fine-tuned result, that of the run it was fine-tuned from; None if unknown
        or if the run had no penalty."""
        if self.lam_history:
            return self.lam_history[-1]
        parent_lam = self.extra.get("finetune", {}).get("parent_lam")
        if parent_lam is not None:
            return parent_lam
        if "penalty" in self.config and self.config["penalty"] is None:
            return None  # a scheduled or unpenalised run has no λ
        lam = self.config.get("lam")
        return float(lam) if isinstance(lam, int | float) else None
