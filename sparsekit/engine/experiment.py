"""The experiment: resolve components, train, evaluate the final model on the test split."""

from __future__ import annotations

import dataclasses
import functools
import logging
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import yaml

from sparsekit.config import (
    ConfigError,
    ExperimentConfig,
    FinetuneConfig,
    build_config,
    load_config,
)
from sparsekit.engine.components import resolve_component
from sparsekit.engine.efficiency import run_efficiency
from sparsekit.engine.finetune import finetune
from sparsekit.engine.learned_lambda import draw_initial_lambda
from sparsekit.engine.scheduled import ScheduledRun, prepare_scheduled_run
from sparsekit.engine.sparsity import layer_channels, sparsity
from sparsekit.engine.training import evaluate, resolve_device, seed_everything
from sparsekit.interfaces import StepInfo, TrainingContext
from sparsekit.reporting.result import Result

logger = logging.getLogger(__name__)


def initial_lambda(cfg: ExperimentConfig, learner: Any, generator: torch.Generator) -> float:
    """The λ handed to the learner: the configured number, or λ₀ ~ U(lam_init) when learned.

    Raises:
        ConfigError: ``lam="learned"`` with a learner that cannot learn λ (its class does not set
            ``learns_lambda = True``, e.g. ``mtl``) or without a penalty.
    """
    if cfg.lam != "learned":
        return float(cfg.lam)
    if not getattr(learner, "learns_lambda", False):
        raise ConfigError(
            f"lam='learned' needs a learner that meta-learns λ (maml, fomaml or anil); learner "
            f"{learner.name!r} trains with a fixed λ, so give lam a number"
        )
    if cfg.penalty is None:
        raise ConfigError("lam='learned' needs a penalty whose λ can be learned")
    return draw_initial_lambda(cfg.lam_init, generator)


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


#: Sub-directory of a run directory holding the pre-trained result of a two-stage experiment.
PRETRAIN_DIR = "pretrain"


class Experiment:
    """One multi-task sparsity experiment.

    Example::

        result = Experiment(dataset="shapes", penalty="group_lasso", lam=0.05, steps=300).run()
        print(result.metrics, result.sparsity)

    Args:
        config: a complete :class:`ExperimentConfig`; or leave it out and pass its fields as
            keyword arguments (components as names, ``{"name": ..., **params}`` dicts or instances).
    """

    def __init__(self, config: ExperimentConfig | None = None, **fields: Any) -> None:
        if config is not None and fields:
            config = build_config({**config.model_dump(), **fields})
        elif config is None:
            config = build_config(fields)
        self.config = config

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: list[str] | None = None) -> Experiment:
        """An experiment from a YAML file of :class:`ExperimentConfig` fields."""
        return cls(load_config(path, overrides))

    def run(self, on_step: Callable[[StepInfo], None] | None = None) -> Result:
        """Train, evaluate on the test split, and (with ``run_dir``) write the run directory.

        If anything fails, the run directory keeps the resolved config and an ``error.txt``.
        """
        cfg = self.config
        run_dir = Path(cfg.run_dir) if cfg.run_dir is not None else None
        if run_dir is not None:
            run_dir.mkdir(parents=True, exist_ok=True)
            (run_dir / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
        try:
            result = self._run(on_step or (lambda info: None))
            if cfg.finetune is not None:
                result = self._finetune(
                    result, cfg.finetune, run_dir, on_step or (lambda info: None)
                )
            elif (debias := self._debias_stage()) is not None:
                pretrained = result
                result = self._finetune(result, debias, run_dir, on_step or (lambda info: None))
                whole_run(result, pretrained, cfg.steps)
        except BaseException:
            if run_dir is not None:
                (run_dir / "error.txt").write_text(traceback.format_exc())
            raise
        if run_dir is not None:
            result.save(run_dir)
        return result

    @property
    def total_steps(self) -> int:
        """Optimiser steps the run will take: training plus the fine-tuning or debiasing stage."""
        cfg = self.config
        stage = cfg.finetune if cfg.finetune is not None else self._debias_stage()
        return cfg.steps + (stage.steps if stage is not None else 0)

    def _debias_stage(self) -> FinetuneConfig | None:
        """The masked fine-tuning (debiasing) stage of a penalised run, or None.

        It follows a run of a learner that declares ``debiases`` (``mtl``) with a penalty and no
        scheduler: the penalty is switched off, every zero weight is held at zero and the whole
        network is trained for ``debias_steps`` (default ``steps // 3``) with the run's
        optimiser settings, so the weights the penalty shrank recover their scale while the
        sparsity pattern stays exactly as found. λ = 0 runs get the same stage, so a dense
        baseline trains for the same total number of steps.
        """
        cfg = self.config
        if not self._learner.debiases or cfg.penalty is None or cfg.scheduler is not None:
            return None
        steps = cfg.debias_steps if cfg.debias_steps is not None else cfg.steps // 3
        if steps == 0:
            return None
        return FinetuneConfig(steps=steps, mode="all", optimizer=self._resolved_optimizer())

    def _resolved_optimizer(self) -> Any:
        """``config.optimizer`` with an unset kind replaced by the learner's default."""
        cfg = self.config
        if cfg.optimizer.name is not None:
            return cfg.optimizer
        return cfg.optimizer.model_copy(update={"name": self._learner.default_optimizer})

    @functools.cached_property
    def _learner(self) -> Any:
        """The configured learner, resolved once for its declared capabilities."""
        return resolve_component("learner", self.config.learner)

    def _finetune(
        self,
        pretrained: Result,
        stage: FinetuneConfig,
        run_dir: Path | None,
        on_step: Callable[[StepInfo], None],
    ) -> Result:
        """The configured fine-tuning stage; the pre-trained result goes to ``run_dir/pretrain``.

        The returned (fine-tuned) result carries the whole two-stage config; the pre-trained
        one carries the config without its ``finetune`` stage, so each reproduces itself.
        """
        cfg = self.config
        pretrain_dir = run_dir / PRETRAIN_DIR if run_dir is not None else None
        pretrained.config = {
            **pretrained.config,
            "finetune": None,
            "run_dir": str(pretrain_dir) if pretrain_dir is not None else None,
        }
        if pretrain_dir is not None:
            pretrained.save(pretrain_dir)
        total = cfg.steps + stage.steps

        def after_pretraining(info: StepInfo) -> None:
            on_step(dataclasses.replace(info, step=cfg.steps + info.step, total=total))

        result = finetune(pretrained, stage, on_step=after_pretraining)
        result.config = cfg.model_copy(update={"optimizer": self._resolved_optimizer()}).to_dict()
        return result

    @staticmethod
    def _fit_scheduled(learner: Any, context: TrainingContext, run: ScheduledRun) -> Any:
        """A dense phase (``init: dense`` without ``init_from``), then the scheduled training."""
        cfg, dense = context.config, None

        def phase(steps: int, offset: int, pruner: Any) -> TrainingContext:
            def report(info: StepInfo) -> None:
                context.on_step(dataclasses.replace(info, step=offset + info.step, total=cfg.steps))

            return dataclasses.replace(
                context,
                config=cfg.model_copy(update={"steps": steps}),
                pruner=pruner,
                on_step=report,
            )

        if run.dense_steps:
            dense = learner.fit(phase(run.dense_steps, 0, None))
        history = learner.fit(phase(run.scheduled_steps, run.dense_steps, run.pruner))
        history.extra["schedule"] = run.describe()
        if dense is not None:
            history.extra["dense_phase"] = {
                "profile": dense.profile,
                "best_step": dense.best_step,
            }
        return history

    def _run(self, on_step: Callable[[StepInfo], None]) -> Result:
        cfg = self.config
        started = time.perf_counter()
        generator = seed_everything(cfg.seed)
        device = resolve_device(cfg.device)
        if cfg.amp and device.type != "cuda":
            raise ConfigError("amp (mixed precision) needs a CUDA device; set amp: false")
        # Every component is resolved before any data is loaded, so a bad name fails at once.
        learner = self._learner
        cfg = cfg.model_copy(update={"optimizer": self._resolved_optimizer()})
        lam = initial_lambda(cfg, learner, generator)
        provider = resolve_component("dataset", cfg.dataset)
        builder = resolve_component("model", cfg.model)
        combiner_factory = resolve_component("loss_combiner", cfg.loss_combiner)
        penalty = resolve_component("penalty", cfg.penalty) if cfg.penalty is not None else None
        tasks = provider.select_tasks(cfg.tasks)
        names = [t.name for t in tasks]
        splits = {split: provider.load(split, names) for split in ("train", "val", "test")}
        model = builder.build(tasks, provider.in_channels).to(device)
        combiner = combiner_factory.build(names).to(device)
        scheduled = (
            prepare_scheduled_run(cfg, learner, model, combiner)
            if cfg.scheduler is not None
            else None
        )
        channels_before = layer_channels(model)
        context = TrainingContext(
            model=model,
            tasks=tasks,
            train=splits["train"],
            val=splits["val"],
            penalty=penalty,
            lam=lam,
            combiner=combiner,
            config=cfg,
            device=device,
            generator=generator,
            on_step=on_step,
        )
        data_ready = time.perf_counter()
        if scheduled is None:
            history = learner.fit(context)
        else:
            history = self._fit_scheduled(learner, context, scheduled)
        trained = time.perf_counter()
        _, val_metrics = evaluate(model, splits["val"], tasks, combiner, device)
        _, metrics = evaluate(model, splits["test"], tasks, combiner, device)
        finished = time.perf_counter()
        efficiency = run_efficiency(model, splits["test"])
        after = {row.name: row for row in layer_channels(model)}
        return Result(
            config=cfg.to_dict(),
            tasks=names,
            metrics=metrics,
            val_metrics=val_metrics,
            metric_directions={t.name: dict(t.metrics) for t in tasks},
            sparsity=sparsity(model),
            layers=[
                {
                    "name": row.name,
                    "total": row.total,
                    "active_before": row.active,
                    "active_after": after[row.name].active,
                }
                for row in channels_before
            ],
            profile=history.profile,
            lam_history=history.lam_history,
            best_step=history.best_step,
            stopped_early=history.stopped_early,
            timings={
                "setup_s": data_ready - started,
                "train_s": trained - data_ready,
                "test_s": finished - trained,
                "total_s": finished - started,
            },
            extra=history.extra,
            efficiency=efficiency,
            model=model,
            combiner=combiner,
        )
