"""Scheduled runs: the Table 5 baselines, sparsified by a schedule and a mask criterion.

A scheduled run (``scheduler`` set in the experiment) has no penalty. It starts from ``init``
weights — ``random`` (the model builder's initialisation) or ``dense`` (a trained dense
multi-task model: the checkpoint of ``init_from``, or a dense phase of ``dense_steps`` trained
within the run) — and the learner trains it while a :class:`~sparsekit.engine.pruning.Pruner`
applies the scheduler's :class:`~sparsekit.interfaces.SparsitySchedule` with the mask
criterion. The target is a fraction of backbone conv parameters, or the parameter sparsity a
finished run reached (``target: {from_run: RUN_DIR}``, Table 5's matched budget).

See docs/baselines.md.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch

from sparsekit.config import ExperimentConfig, TargetFromRun
from sparsekit.engine.pruning import Pruner
from sparsekit.errors import ConfigError
from sparsekit.interfaces import Learner, StepInfo, TrainingContext, TrainingHistory
from sparsekit.nn import MultiTaskNet
from sparsekit.registry import create
from sparsekit.runs.store import load_dense_weights, read_parameter_sparsity

#: Offset of the pruning generator's seed from the run's seed, so that drawing random masks or
#: regrowth does not shift the data order drawn from the run's own generator.
PRUNING_SEED_OFFSET = 7919


def resolve_target(target: float | TargetFromRun) -> float:
    """The target fraction: the number itself, or the parameter sparsity a run's result reached.

    Raises:
        ConfigError: the run directory holds no readable parameter sparsity in ``[0, 1)``.
    """
    if isinstance(target, TargetFromRun):
        return read_parameter_sparsity(target.from_run)
    return float(target)


@dataclass
class ScheduledRun:
    """What a scheduled experiment resolved: its pruner, target and the split of its steps.

    Attributes:
        pruner: the pruner the learner drives.
        target: the target fraction of backbone conv parameters.
        dense_steps: steps of the dense phase trained before the schedule (0 when none).
        scheduled_steps: steps the schedule spans.
    """

    pruner: Pruner
    target: float
    dense_steps: int
    scheduled_steps: int

    def describe(self) -> dict[str, Any]:
        """The run's schedule and every mask update, for ``Result.extra``."""
        schedule = self.pruner.schedule
        return {
            "target": self.target,
            "dense_steps": self.dense_steps,
            "scheduled_steps": self.scheduled_steps,
            "update_steps": list(schedule.update_steps),
            "levels": list(schedule.levels),
            "updates": self.pruner.updates,
        }


def dense_phase_steps(cfg: ExperimentConfig) -> int:
    """Steps trained dense within the run before the schedule starts."""
    if cfg.init != "dense" or cfg.init_from is not None:
        return 0
    return cfg.dense_steps if cfg.dense_steps is not None else cfg.steps // 2


def prepare_scheduled_run(
    cfg: ExperimentConfig, learner: Learner, model: MultiTaskNet, combiner: torch.nn.Module
) -> ScheduledRun:
    """Resolve scheduler, mask, target and initial weights of a scheduled run.

    With ``init: dense`` and ``init_from`` the dense weights are loaded here; a dense phase
    within the run is left to the caller (it needs the data), which trains ``dense_steps``
    first.

    Raises:
        ConfigError: a learner that cannot drive a schedule, drop-and-grow at element
            granularity, or an unreadable target or dense run.
    """
    if not learner.supports_schedules:
        raise ConfigError(
            f"a scheduled run needs a learner that drives a sparsity schedule (one declaring "
            f"supports_schedules); learner {learner.name!r} does not"
        )
    scheduler = create("scheduler", cfg.scheduler)
    criterion = create("mask", cfg.mask)
    assert cfg.target is not None
    target = resolve_target(cfg.target)
    regrowth_spec = scheduler.regrowth()
    regrowth = None
    if regrowth_spec is not None:
        if cfg.granularity != "channel":
            raise ConfigError(
                f"scheduler {scheduler.name!r} regrows channel groups; it needs granularity: "
                f"channel, got {cfg.granularity!r}"
            )
        regrowth = create("regrowth", regrowth_spec)
    if cfg.init_from is not None:
        load_dense_weights(model, combiner, cfg.init_from)
    dense_steps = dense_phase_steps(cfg)
    scheduled_steps = cfg.steps - dense_steps
    generator = torch.Generator().manual_seed(cfg.seed + PRUNING_SEED_OFFSET)
    pruner = Pruner(
        model,
        scheduler.schedule(target, scheduled_steps),
        criterion,
        cfg.granularity,
        generator,
        regrowth,
    )
    return ScheduledRun(pruner, target, dense_steps, scheduled_steps)


def fit_scheduled(learner: Learner, context: TrainingContext, run: ScheduledRun) -> TrainingHistory:
    """A dense phase (``init: dense`` without ``init_from``), then the scheduled training."""
    settings, dense = context.settings, None
    total = run.dense_steps + run.scheduled_steps

    def phase(steps: int, offset: int, pruner: Pruner | None, checkpoint: Any) -> TrainingContext:
        def report(info: StepInfo) -> None:
            context.on_step(dataclasses.replace(info, step=offset + info.step, total=total))

        return dataclasses.replace(
            context,
            settings=dataclasses.replace(settings, steps=steps),
            pruner=pruner,
            on_step=report,
            checkpoint=checkpoint,
        )

    if run.dense_steps:
        dense_checkpoint = context.checkpoint.phase("dense")
        dense = learner.fit(phase(run.dense_steps, 0, None, dense_checkpoint))
    scheduled_checkpoint = context.checkpoint.phase("train", run.dense_steps)
    scheduled = phase(run.scheduled_steps, run.dense_steps, run.pruner, scheduled_checkpoint)
    history = learner.fit(scheduled)
    history.extra["schedule"] = run.describe()
    if dense is not None:
        history.extra["dense_phase"] = {"profile": dense.profile, "best_step": dense.best_step}
    return history
