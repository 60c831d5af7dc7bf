"""The experiment config: data, tasks, model, sparsity, learner and training budget."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

from pydantic import ConfigDict, Field, ValidationInfo, field_validator, model_validator
from torch import nn

from sparsekit.config.settings import (
    DEFAULT_COMPONENT,
    SEED_LIMIT,
    FinetuneConfig,
    OptimizerConfig,
    StrictModel,
    TargetFromRun,
    directory_path,
)
from sparsekit.errors import ConfigError

ComponentSpec = Any
"""A component given as a registry name, a ``{"name": ..., **params}`` dict, or an instance."""


def _normalise_spec(value: Any, backbone: bool = False) -> Any:
    """A component spec in canonical form; with ``backbone``, an ``nn.Module`` stays as it is."""
    if value is None or hasattr(value, "spec"):
        return value
    if isinstance(value, nn.Module):
        if backbone:
            return value
        raise ValueError(
            f"an nn.Module ({type(value).__name__}) is accepted as the model's backbone only"
        )
    if isinstance(value, str):
        return {"name": value}
    if isinstance(value, dict):
        if "name" not in value or not isinstance(value["name"], str):
            raise ValueError(f"a component dict needs a string 'name' key, got {value!r}")
        return dict(value)
    raise ValueError(f"a component is a name, a {{'name': ...}} dict or an instance, got {value!r}")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class ExperimentConfig(StrictModel):
    """One experiment: data, tasks, model, sparsity, learner and training budget.

    Component fields (``dataset``, ``model``, ``penalty``, ``learner``, ``loss_combiner``,
    ``scheduler``, ``mask``) accept a registry name, a ``{"name": ..., **params}`` dict, or a
    component instance; ``model`` also an ``nn.Module``, the backbone (docs/own-model-and-data.md).

    A scheduled run (``scheduler`` set; see docs/baselines.md) sparsifies the backbone to
    ``target`` with a ``mask`` criterion at ``granularity`` instead of a penalty, starting from
    ``init`` weights.
    """

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True, validate_default=True)

    dataset: ComponentSpec = Field(
        DEFAULT_COMPONENT, description="the data set (plugin kind dataset)"
    )
    tasks: list[str] | None = Field(
        None, description="the data set's tasks to train (None: every task it has)"
    )
    model: ComponentSpec = Field(
        DEFAULT_COMPONENT,
        description="the multi-task network (plugin kind model), or a backbone nn.Module",
    )
    penalty: ComponentSpec | None = Field(
        DEFAULT_COMPONENT, description="the sparsity penalty (plugin kind penalty); None: none"
    )
    lam: float | Literal["learned"] = Field(
        0.007,
        description=(
            "penalty strength λ (≥ 0), or 'learned' to meta-learn it (a learner that declares "
            "learns_lambda); the default is chosen on validation metrics for the default recipe "
            "(docs/penalties.md)"
        ),
    )
    lam_warmup: int = Field(
        0, ge=0, description="steps over which a fixed λ ramps linearly from 0 to lam"
    )
    learner: ComponentSpec = Field(
        DEFAULT_COMPONENT, description="the training procedure (plugin kind learner)"
    )
    loss_combiner: ComponentSpec = Field(
        DEFAULT_COMPONENT, description="how task losses are combined (plugin kind loss_combiner)"
    )
    optimizer: OptimizerConfig = Field(
        default_factory=OptimizerConfig, description="the optimiser and its proximal step"
    )
    steps: int = Field(600, gt=0, description="optimiser steps (meta-steps for meta-learners)")
    batch_size: int = Field(32, gt=0, description="examples per batch")
    eval_every: int = Field(50, gt=0, description="steps between validation evaluations")
    patience: int | None = Field(
        None, gt=0, description="evaluations without validation improvement before stopping"
    )
    seed: int = Field(
        0, ge=0, lt=SEED_LIMIT, description="seed of weights, data order and episodes, < 2**63"
    )
    device: str = Field(
        "auto", description="'auto' (CUDA when present, else CPU), 'cpu', 'cuda[:N]' or 'mps'"
    )
    amp: bool = Field(False, description="mixed precision (CUDA only)")
    pin_memory: bool | Literal["auto"] = Field(
        "auto", description="pinned host memory for batches ('auto': on CUDA)"
    )
    num_workers: int = Field(0, ge=0, description="data-loading worker processes")
    run_dir: Path | None = Field(
        None, description="where the run is written, ~ expanded (None: nothing is saved)"
    )
    threads: int | None = Field(
        None,
        gt=0,
        description=(
            "torch intra-op threads for the run (None leaves torch's setting; on a machine "
            "shared with other jobs, 1 avoids threads fighting over cores)"
        ),
    )
    checkpoint_every: int | None = Field(
        None,
        gt=0,
        description=(
            "steps between checkpoints of a run with a run_dir (also at every evaluation); "
            "None is steps // 20, so an interruption loses at most ~5 % of the run"
        ),
    )
    loggers: list[ComponentSpec] = Field(
        default_factory=lambda: [DEFAULT_COMPONENT],
        description=(
            "where the run logs as it trains (plugin kind logger): csv (default), tensorboard, "
            "mlflow; [] logs nothing (docs/logging.md)"
        ),
    )
    tags: dict[str, str] = Field(
        default_factory=dict,
        description="string tags handed to the loggers (a sweep adds sweep, stage, seed, run_id)",
    )
    debias_steps: int | None = Field(
        None,
        ge=0,
        description=(
            "masked fine-tuning after a penalised run of a learner that declares debiases: "
            "penalty off, zeros held, every weight trained; None is steps // 3, 0 skips it "
            "(see docs/penalties.md)"
        ),
    )
    finetune: FinetuneConfig | None = Field(
        None, description="a fine-tuning stage run after training (see docs/finetuning.md)"
    )
    scheduler: ComponentSpec | None = Field(
        None, description="a sparsity scheduler (plugin kind scheduler)"
    )
    mask: ComponentSpec | None = Field(
        None, description="the mask criterion of a scheduled run (plugin kind mask)"
    )
    granularity: Literal["channel", "element"] = Field(
        "channel", description="a scheduled run zeroes input-channel groups or single elements"
    )
    target: float | TargetFromRun | None = Field(
        None,
        description="fraction of backbone conv parameters to zero, in [0, 1), or {from_run: DIR}",
    )
    init: Literal["random", "dense"] = Field(
        "random", description="a scheduled run starts from random weights or a trained dense model"
    )
    init_from: Path | None = Field(
        None, description="init=dense: the run directory of a trained dense model (model.pt)"
    )
    dense_steps: int | None = Field(
        None,
        gt=0,
        description="init=dense without init_from: steps of the dense phase (default steps // 2)",
    )

    @field_validator(
        "dataset",
        "model",
        "penalty",
        "learner",
        "loss_combiner",
        "scheduler",
        "mask",
        mode="before",
    )
    @classmethod
    def _component(cls, value: Any, info: ValidationInfo) -> Any:
        return _normalise_spec(value, backbone=info.field_name == "model")

    @field_validator("loggers", mode="before")
    @classmethod
    def _loggers(cls, value: Any) -> Any:
        if isinstance(value, (str, dict)) or hasattr(value, "spec"):
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"loggers is a list of logger components, got {value!r}")
        return [_normalise_spec(item) for item in value]

    @field_validator("run_dir", "init_from", mode="before")
    @classmethod
    def _directory(cls, value: Any) -> Any:
        return directory_path(value)

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        if value != "auto" and value.split(":")[0] not in {"cpu", "cuda", "mps"}:
            raise ValueError(f"device must be 'auto', 'cpu' or 'cuda[:N]', got {value!r}")
        return value

    @field_validator("tasks")
    @classmethod
    def _tasks(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and (not value or len(set(value)) != len(value)):
            raise ValueError(f"tasks must be a non-empty list without repeats, got {value!r}")
        return value

    # Numbers are checked before validation, so that a bad one is one error, not one per
    # member of the field's union type.
    @field_validator("lam", mode="before")
    @classmethod
    def _lam(cls, value: Any) -> Any:
        number = value
        if isinstance(value, str) and value != "learned":
            try:
                number = float(value)
            except ValueError:
                raise ValueError("lam is a number >= 0 or 'learned'") from None
        if _is_number(number) and not (math.isfinite(number) and number >= 0):
            raise ValueError("lam must be greater than or equal to 0 (and finite), or 'learned'")
        return value

    @field_validator("target", mode="before")
    @classmethod
    def _target(cls, value: Any) -> Any:
        if _is_number(value) and not 0.0 <= value < 1.0:
            raise ValueError(f"target must be a fraction in [0, 1), got {value}")
        return value

    @model_validator(mode="after")
    def _scheduled_run(self) -> ExperimentConfig:
        problems = scheduled_run_problems(self)
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def to_dict(self) -> dict[str, Any]:
        """A plain, YAML-safe dict (component instances become their ``spec()``)."""
        data = self.model_dump(mode="json", exclude={*COMPONENT_FIELDS, "loggers"})
        for key in COMPONENT_FIELDS:
            value = getattr(self, key)
            if isinstance(value, nn.Module):
                raise ConfigError(
                    f"model: a backbone given as an nn.Module instance ({type(value).__name__}) "
                    "cannot be written into a config (a sweep, a YAML file); give it as an import "
                    "path instead, model: {name: import, target: 'package.module:factory'}"
                )
            data[key] = value.spec() if hasattr(value, "spec") else value
        data["loggers"] = [lg.spec() if hasattr(lg, "spec") else lg for lg in self.loggers]
        return data


COMPONENT_FIELDS = ("dataset", "model", "penalty", "learner", "loss_combiner", "scheduler", "mask")


def scheduled_run_problems(cfg: ExperimentConfig) -> list[str]:
    """What is inconsistent among the fields of a scheduled run (empty when nothing is)."""
    problems = []
    if cfg.scheduler is None:
        given = [
            name
            for name, unset in (
                ("mask", cfg.mask is None),
                ("target", cfg.target is None),
                ("init: dense", cfg.init == "random"),
                ("init_from", cfg.init_from is None),
                ("dense_steps", cfg.dense_steps is None),
            )
            if not unset
        ]
        if given:
            problems.append(f"{', '.join(given)} only apply to a scheduled run; set a scheduler")
        return problems
    if cfg.mask is None:
        problems.append("a scheduler needs a mask (plugin kind mask)")
    if cfg.target is None:
        problems.append("a scheduler needs a target: a fraction in [0, 1) or {from_run: RUN_DIR}")
    if cfg.penalty is not None:
        problems.append(
            "a scheduled run sets the sparsity itself; set penalty to None (null in YAML)"
        )
    if cfg.init_from is not None and cfg.init != "dense":
        problems.append("init_from gives a dense model to start from; it needs init: dense")
    if cfg.dense_steps is not None:
        if cfg.init != "dense" or cfg.init_from is not None:
            problems.append("dense_steps is the dense phase of init: dense without init_from")
        elif cfg.dense_steps >= cfg.steps:
            problems.append(
                f"dense_steps ({cfg.dense_steps}) must be fewer than steps ({cfg.steps})"
            )
    if cfg.init == "dense" and cfg.init_from is None and cfg.dense_steps is None and cfg.steps < 2:
        problems.append("init: dense without init_from splits steps in two; it needs steps ≥ 2")
    return problems
