"""The experiment: resolve its components, build the run, train, record the final model.

:class:`Experiment` runs in three steps: :func:`~sparsekit.engine.resolve.resolve` makes every
component and names every default before any data is loaded; :func:`build` loads the splits and
builds the model, the loss combiner and, for a scheduled run, the pruner; the learner trains, and
:func:`record` evaluates the one final model on the validation and test splits and makes the
:class:`~sparsekit.runs.store.Result`. A fine-tuning or debiasing stage then follows
(:mod:`sparsekit.engine.finetune`).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sparsekit.config import ExperimentConfig, FinetuneConfig, build_config, load_config
from sparsekit.engine.checkpoints import RunControl, stop_on_signals
from sparsekit.engine.finetune import finetune_stage
from sparsekit.engine.lifecycle import mark_stopped, open_run, publish, save_result
from sparsekit.engine.outcome import final_metrics, layer_rows, timings
from sparsekit.engine.progress import PhaseReport, Progress, no_phase
from sparsekit.engine.resolve import Resolved, resolve, train_settings
from sparsekit.engine.runtime import intra_op_threads, resolve_device, seed_everything
from sparsekit.engine.scheduled import ScheduledRun, fit_scheduled, prepare_scheduled_run
from sparsekit.engine.tracking import RunLoggers, resolve_loggers
from sparsekit.errors import ConfigError, RunInterrupted
from sparsekit.interfaces import StepInfo, TrainingContext, TrainingHistory
from sparsekit.nn.efficiency import efficiency_record
from sparsekit.nn.sparsity import layer_channels, sparsity
from sparsekit.runs.store import PRETRAIN_DIR, Result

#: A run checkpoints every ``steps // CHECKPOINTS_PER_RUN`` steps unless told otherwise, so an
#: interruption loses at most about 5 % of it.
CHECKPOINTS_PER_RUN = 20


@dataclass
class Built:
    """A run ready to train: its context, test split and, when scheduled, its pruner."""

    context: TrainingContext
    test: Any
    scheduled: ScheduledRun | None
    channels_before: list[Any]


def build(
    resolved: Resolved, on_step: Callable[[StepInfo], None], control: RunControl | None = None
) -> Built:
    """Seed, load the splits, build model and loss combiner, and the pruner of a scheduled run.

    With ``control``, the training loop checkpoints into the run directory (phase ``train``).

    Raises:
        ConfigError: mixed precision without CUDA, or an inconsistent scheduled run.
    """
    cfg = resolved.config
    generator = seed_everything(cfg.seed)
    device = resolve_device(cfg.device)
    if cfg.amp and device.type != "cuda":
        raise ConfigError("amp (mixed precision) needs a CUDA device; set amp: false")
    tasks = resolved.provider.select_tasks(cfg.tasks)
    names = [t.name for t in tasks]
    splits = {split: resolved.provider.load(split, names) for split in ("train", "val", "test")}
    model = resolved.builder.build(tasks, resolved.provider.in_channels).to(device)
    combiner = resolved.combiner.build(names).to(device)
    scheduled = (
        prepare_scheduled_run(cfg, resolved.learner, model, combiner)
        if cfg.scheduler is not None
        else None
    )
    pin = device.type == "cuda" if cfg.pin_memory == "auto" else bool(cfg.pin_memory)
    context = TrainingContext(
        model=model,
        tasks=tasks,
        train=splits["train"],
        val=splits["val"],
        penalty=resolved.penalty,
        lam=cfg.lam,
        combiner=combiner,
        settings=train_settings(cfg, pin),
        device=device,
        generator=generator,
        on_step=on_step,
    )
    if control is not None:
        context.checkpoint = control.checkpoint("train", generator)
    return Built(context, splits["test"], scheduled, layer_channels(model))


def record(
    resolved: Resolved,
    built: Built,
    history: TrainingHistory,
    clock: dict[str, float],
    phase: PhaseReport = no_phase,
) -> Result:
    """The result of the final model: validation and test metrics, sparsity, efficiency."""
    context = built.context
    model, combiner = context.model, context.combiner
    phase("testing")
    outcome = final_metrics(model, context.tasks, combiner, context.val, built.test, context.device)
    finished = time.perf_counter()
    phase("measuring efficiency")
    return Result(
        config=resolved.config.to_dict(),
        tasks=[t.name for t in context.tasks],
        metrics=outcome.metrics,
        val_metrics=outcome.val_metrics,
        metric_directions={t.name: dict(t.metrics) for t in context.tasks},
        sparsity=sparsity(model),
        layers=layer_rows(built.channels_before, model),
        profile=history.profile,
        lam_history=history.lam_history,
        best_step=history.best_step,
        stopped_early=history.stopped_early,
        timings=timings(clock["started"], clock["ready"], clock["trained"], finished),
        extra=history.extra,
        efficiency=efficiency_record(model, built.test),
        model=model,
        combiner=combiner,
    )


def whole_run(debiased: Result, pretrained: Result, steps: int) -> None:
    """Make a debiased result describe the whole run: penalised phase, then debiasing.

    The profile is the penalised phase's followed by the debiasing stage's, whose steps are
    counted on from the penalised phase's last step (``steps`` unless it stopped early); the
    layers' ``active_before`` are the counts before any training; the training time and early
    stopping cover both phases; ``extra["debias"]`` says where the penalised phase ended.
    """
    if pretrained.profile:  # the last step taken, fewer than ``steps`` after early stopping
        steps = int(pretrained.profile[-1]["step"])
    debiased.profile = [
        *pretrained.profile,
        *({**row, "step": steps + row["step"]} for row in debiased.profile),
    ]
    before = {row["name"]: row["active_before"] for row in pretrained.layers}
    debiased.layers = [{**row, "active_before": before[row["name"]]} for row in debiased.layers]
    debiased.best_step = steps + debiased.best_step
    debiased.stopped_early = pretrained.stopped_early or debiased.stopped_early
    debias_s = debiased.timings.get("train_s", 0.0)
    debiased.timings = {
        **debiased.timings,
        "train_s": pretrained.timings.get("train_s", 0.0) + debias_s,
        "debias_s": debias_s,
    }
    debiased.extra["debias"] = {"steps_before": steps, "pretrain_best_step": pretrained.best_step}


def debias_stage(resolved: Resolved) -> FinetuneConfig | None:
    """The masked fine-tuning (debiasing) stage of a penalised run, or None.

    It follows a run of a learner that declares ``debiases`` with a penalty and no scheduler:
    the penalty is switched off, every zero weight is held at zero and the whole network is
    trained for ``debias_steps`` (default ``steps // 3``) with the run's optimiser settings, so
    the weights the penalty shrank recover their scale while the sparsity pattern stays exactly
    as found. λ = 0 runs get the same stage, so a dense baseline trains for the same total number
    of steps.
    """
    cfg = resolved.config
    if not resolved.learner.debiases or cfg.penalty is None or cfg.scheduler is not None:
        return None
    steps = cfg.debias_steps if cfg.debias_steps is not None else cfg.steps // 3
    if steps == 0:
        return None
    return FinetuneConfig(steps=steps, mode="all", optimizer=cfg.optimizer)


class Experiment:
    """One multi-task sparsity experiment.

    Example::

        result = Experiment(dataset="shapes", penalty="group_lasso", lam=0.05, steps=300).run()
        print(result.metrics, result.sparsity)

    Args:
        config: a complete :class:`ExperimentConfig`; or leave it out and pass its fields as
            keyword arguments (components as names, ``{"name": ..., **params}`` dicts or instances).
    """

    def __init__(
        self,
        config: ExperimentConfig | None = None,
        *,
        overwrite: bool = False,
        resume: bool = False,
        **fields: Any,
    ) -> None:
        if config is not None and fields:
            config = build_config({**config.model_dump(), **fields})
        elif config is None:
            config = build_config(fields)
        if overwrite and resume:
            raise ConfigError("give overwrite or resume, not both")
        self.config, self.overwrite, self.resume = config, overwrite, resume

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: list[str] | None = None) -> Experiment:
        """An experiment from a YAML file of :class:`ExperimentConfig` fields."""
        return cls(load_config(path, overrides))

    @property
    def total_steps(self) -> int:
        """Optimiser steps the run will take: training plus the fine-tuning or debiasing stage."""
        resolved = resolve(self.config)
        stage = self.config.finetune or debias_stage(resolved)
        return self.config.steps + (stage.steps if stage is not None else 0)

    def run(
        self, on_step: Callable[[StepInfo], None] | None = None, progress: bool | None = None
    ) -> Result:
        """Train, evaluate on the test split, and (with ``run_dir``) write the run directory.

        A ``run_dir`` that holds another run is refused unless the experiment was made with
        ``overwrite=True`` (it is cleared first) or ``resume=True`` (the run continues from its
        last checkpoint, or returns its result if it had finished). The run checkpoints as it
        trains; SIGINT or SIGTERM stop it after the current step with a checkpoint written
        (:class:`~sparsekit.errors.RunInterrupted`). If anything fails, the run directory keeps
        the resolved config, ``state.json`` and an ``error.txt`` (docs/reliability.md).

        Args:
            on_step: called with a :class:`StepInfo` after every training step.
            progress: show a progress bar; None (the default) shows it when standard error is
                a terminal, False never.
        """
        resolved = resolve(self.config)
        resolved.config, loggers = resolve_loggers(resolved.config)
        cfg = resolved.config
        # A device or package that is not there fails before anything is written.
        resolve_device(cfg.device)
        components = (resolved.learner, resolved.provider, resolved.builder, resolved.penalty)
        for component in (*components, resolved.combiner, *loggers):
            if component is not None:
                component.check_available()
        run_dir = Path(cfg.run_dir) if cfg.run_dir is not None else None
        if run_dir is not None:
            finished = open_run(run_dir, cfg.to_dict(), self.overwrite, self.resume)
            if finished is not None:
                return finished
        every = cfg.checkpoint_every or max(1, cfg.steps // CHECKPOINTS_PER_RUN)
        control = RunControl(run_dir, self.resume, every)
        tracking = RunLoggers(loggers, cfg.to_dict(), run_dir)
        bar = Progress(self.total_steps, progress)
        status = "failed"
        try:
            with intra_op_threads(cfg.threads), stop_on_signals(control.flag):
                tracking.start()
                report = tracking.wrap(bar.chain(on_step))
                result = self._train(resolved, control, report, bar.phase)
                if run_dir is not None:
                    bar.phase("saving")
                    publish(result, run_dir)
                tracking.finish(result)
            status = "finished"
        except BaseException as error:
            status = "interrupted" if isinstance(error, RunInterrupted) else "failed"
            if run_dir is not None:
                mark_stopped(run_dir, error)
            raise
        finally:
            bar.close()
            tracking.close(status)
        return result

    @staticmethod
    def _train(
        resolved: Resolved,
        control: RunControl,
        report: Callable[[StepInfo], None],
        phase: PhaseReport,
    ) -> Result:
        """Training, then the fine-tuning or debiasing stage when there is one."""
        cfg = resolved.config
        result = train(resolved, report, phase, control)
        stage = cfg.finetune or debias_stage(resolved)
        if stage is not None:
            pretrained = result
            phase("debiasing" if cfg.finetune is None else "fine-tuning")
            result = second_stage(resolved, result, stage, control, report, phase)
            if cfg.finetune is None:
                whole_run(result, pretrained, cfg.steps)
        return result


def train(
    resolved: Resolved,
    on_step: Callable[[StepInfo], None],
    phase: PhaseReport = no_phase,
    control: RunControl | None = None,
) -> Result:
    """Build the run, let the learner train it, and record the final model."""
    clock = {"started": time.perf_counter()}
    built = build(resolved, on_step, control)
    clock["ready"] = time.perf_counter()
    if built.scheduled is None:
        history = resolved.learner.fit(built.context)
    else:
        history = fit_scheduled(resolved.learner, built.context, built.scheduled)
    clock["trained"] = time.perf_counter()
    return record(resolved, built, history, clock, phase)


def second_stage(
    resolved: Resolved,
    pretrained: Result,
    stage: FinetuneConfig,
    control: RunControl,
    on_step: Callable[[StepInfo], None],
    phase: PhaseReport = no_phase,
) -> Result:
    """The configured fine-tuning or debiasing stage; the pre-trained result goes to
    ``run_dir/pretrain``.

    The returned (fine-tuned) result carries the whole two-stage config; the pre-trained one
    carries the config without its ``finetune`` stage, so each reproduces itself.
    """
    cfg, run_dir = resolved.config, control.run_dir
    pretrain_dir = run_dir / PRETRAIN_DIR if run_dir is not None else None
    pretrained.config = {
        **pretrained.config,
        "finetune": None,
        "run_dir": str(pretrain_dir) if pretrain_dir is not None else None,
    }
    if run_dir is not None and pretrain_dir is not None:
        save_result(pretrained, pretrain_dir, run_dir)
    total = cfg.steps + stage.steps

    def after_pretraining(info: StepInfo) -> None:
        on_step(dataclasses.replace(info, step=cfg.steps + info.step, total=total))

    result = finetune_stage(
        pretrained,
        stage,
        on_step=after_pretraining,
        phase=phase,
        provider=resolved.provider,
        builder=resolved.builder,
        checkpoint=lambda generator: control.checkpoint("second", generator, cfg.steps),
    )
    result.config = cfg.to_dict()
    return result
