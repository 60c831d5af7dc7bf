"""Experiment results: what a run measured, saved to and reloaded from a run directory."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import yaml
from torch import nn

RESULT_FILE = "result.json"
CHECKPOINT_FILE = "model.pt"
CONFIG_FILE = "config.yaml"


@dataclass
class Result:
    """The outcome of one experiment.

    Attributes:
        config: the resolved experiment config (plain dict).
        tasks: the trained tasks, in order.
        metrics: test-split metrics of the final model, ``{task: {metric: value}}``.
        val_metrics: validation-split metrics of the same final model, the figures to choose
            settings (λ, optimiser, schedule) on; empty for results saved without them.
        metric_directions: ``{task: {metric: higher_is_better}}``.
        sparsity: ``{"group": g, "parameter": p}`` of the backbone, fractions in [0, 1].
        layers: per backbone conv layer: name, input channels, active before and after training.
        profile: sparsity and losses over training (one row per evaluation).
        lam_history: λ after every (meta-)step, for learners that learn it: a float, or one
            value per backbone conv layer with ``lam_per_layer``.
        timings: wall-clock seconds of set-up, training, testing and in total.
        efficiency: compression ratio ``cr``, FLOPs speed-up ``sp`` and measured ``speedup`` of
            the compact model, with the counts and latencies behind them
            (:mod:`sparsekit.engine.efficiency`); empty for results saved without it.
        model: the trained network (None when loaded without weights).
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

    def save(self, directory: str | Path) -> Path:
        """Write config, results, checkpoint and plots into ``directory``."""
        from sparsekit.reporting.plots import (
            plot_lambda_and_sparsity,
            plot_lambda_diagnostics,
            plot_layer_channels,
            plot_meta_losses,
            plot_sparsity_profile,
        )

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / CONFIG_FILE).write_text(yaml.safe_dump(self.config, sort_keys=False))
        (directory / RESULT_FILE).write_text(json.dumps(self.to_dict(), indent=2))
        if self.model is not None:
            state = {"model": self.model.state_dict()}
            if self.combiner is not None:
                state["combiner"] = self.combiner.state_dict()
            torch.save(state, directory / CHECKPOINT_FILE)
        if self.profile:
            plot_sparsity_profile(self.profile, directory / "sparsity_profile.png")
        if self.layers:
            plot_layer_channels(self.layers, directory / "active_channels.png")
        if self.lam_history:
            plot_lambda_and_sparsity(
                self.lam_history, self.profile, directory / "lambda_sparsity.png"
            )
        if self.lam_history and any(g is not None for g in self.extra.get("lam_grad", [])):
            plot_lambda_diagnostics(
                self.lam_history, self.extra, self.profile, directory / "lambda_diagnostics.png"
            )
        if "query_loss" in self.extra and "support_loss" in self.extra:
            plot_meta_losses(
                self.extra["support_loss"], self.extra["query_loss"], directory / "meta_losses.png"
            )
        return directory

    @classmethod
    def load(cls, directory: str | Path, with_model: bool = True) -> Result:
        """Reload a saved result; with ``with_model`` the network is rebuilt and its weights loaded.

        Raises:
            FileNotFoundError: ``directory`` holds no saved result.
        """
        directory = Path(directory)
        path = directory / RESULT_FILE
        if not path.is_file():
            raise FileNotFoundError(
                f"no sparsekit result in {str(directory)!r} (missing {RESULT_FILE})"
            )
        data = json.loads(path.read_text())
        result = cls(**data)
        if with_model and (directory / CHECKPOINT_FILE).is_file():
            result.model, result.combiner = _rebuild(result, directory / CHECKPOINT_FILE)
        return result

    def finetune(
        self,
        tasks: Sequence[str] | None = None,
        add_tasks: Sequence[str] = (),
        mode: Literal["head", "all"] = "all",
        steps: int | None = None,
        optimizer: Any = None,
        run_dir: str | Path | None = None,
        on_step: Callable[[Any], None] | None = None,
        **overrides: Any,
    ) -> Result:
        """Fine-tune this run's model (meta-testing), possibly on added tasks; see finetuning.md.

        Args:
            tasks: the trained tasks to fine-tune (default: all; none in mode ``head`` when
                tasks are added).
            add_tasks: unseen tasks of the data set, each given a new head.
            mode: ``"head"`` trains only the fine-tuned heads (backbone frozen, BatchNorm
                included); ``"all"`` trains the backbone too.
            steps: fine-tuning steps (default that of :class:`sparsekit.config.FinetuneConfig`).
            optimizer: an :class:`sparsekit.config.OptimizerConfig` or its fields as a dict.
            run_dir: where to save the fine-tuned result, or None.
            on_step: called with a :class:`sparsekit.interfaces.StepInfo` after every step.
            **overrides: other :class:`sparsekit.config.FinetuneConfig` fields (``batch_size``,
                ``eval_every``, ``patience``, ``mask``, ``seed``, ``device``).

        Returns:
            A new result; this one is left unchanged. Its backbone's zero weights are exactly
            those of this result's.

        Raises:
            ConfigError: invalid fields, or task lists that do not fit this run.
            ValueError: this result holds no model (loaded with ``with_model=False``).
        """
        from pydantic import ValidationError

        from sparsekit.config import ConfigError, FinetuneConfig, describe_validation_error
        from sparsekit.engine.finetune import finetune

        fields = {
            "tasks": None if tasks is None else list(tasks),
            "add_tasks": list(add_tasks),
            "mode": mode,
            **overrides,
        }
        if steps is not None:
            fields["steps"] = steps
        if optimizer is not None:
            fields["optimizer"] = optimizer
        try:
            stage = FinetuneConfig(**fields)
        except ValidationError as exc:
            raise ConfigError(describe_validation_error(exc, FinetuneConfig)) from None
        return finetune(self, stage, run_dir=run_dir, on_step=on_step)


def _rebuild(result: Result, checkpoint: Path) -> tuple[nn.Module, nn.Module]:
    from sparsekit.engine.components import resolve_component

    config = result.config
    provider = resolve_component("dataset", config["dataset"])
    tasks = provider.select_tasks(result.tasks)
    model = resolve_component("model", config["model"]).build(tasks, provider.in_channels)
    combiner = resolve_component("loss_combiner", config["loss_combiner"]).build(result.tasks)
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    model.load_state_dict(state["model"])
    if "combiner" in state:
        combiner.load_state_dict(state["combiner"])
    return model.eval(), combiner
