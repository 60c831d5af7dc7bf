"""Typed configuration: experiments, component specs and optimisers (pydantic v2).

Component fields take a registry name, a ``{"name": ..., **params}`` dict or an instance; the
name ``"default"`` (:data:`DEFAULT_COMPONENT`) stands for the component of that kind which
declares itself the default, resolved by the registry when the experiment runs.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from sparsekit.errors import ConfigError

__all__ = [
    "DEFAULT_COMPONENT",
    "ConfigError",
    "ExperimentConfig",
    "FinetuneConfig",
    "OptimizerConfig",
    "TargetFromRun",
    "build_config",
    "load_config",
]

#: The component name that stands for its kind's default (``registry.default(kind)``).
DEFAULT_COMPONENT = "default"


class StrictModel(BaseModel):
    """Unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")


class OptimizerConfig(StrictModel):
    """The optimiser and its proximal step.

    ``name`` is an optimiser kind of the registry (plugin kind ``optimizer``); left unset (None)
    it takes the learner's ``default_optimizer``, or the registry's default kind. The other
    fields are the settings of the kind's torch optimiser, each used where it applies (``betas``
    and ``eps`` by Adam-based kinds, ``momentum`` by SGD-based ones). ``docs/penalties.md`` lists
    the built-in kinds and how each measures λ.
    """

    name: str | None = None
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = Field(1e-8, gt=0)


class FinetuneConfig(StrictModel):
    """The fine-tuning (meta-testing) stage: adapt a trained model, possibly to new tasks.

    No penalty acts during fine-tuning and the backbone's zero weights are held exactly at zero
    (``mask``), so the sparsity pattern found in training is kept. ``mode="all"`` trains the
    backbone and the heads of the fine-tuned tasks; ``mode="head"`` freezes the backbone (its
    BatchNorm statistics included) and trains the fine-tuned heads only. ``granularity`` says
    what is held at zero: every zero weight (``element``) or every all-zero input channel
    (``channel``). The fine-tuned tasks are
    ``tasks`` plus ``add_tasks`` (new heads built by the model builder); ``tasks`` defaults to every
    trained task, except in mode ``head`` with added tasks, where it defaults to none. Heads of
    trained tasks that are not fine-tuned stay frozen and are still evaluated. Fields left None
    take the experiment's value. See docs/finetuning.md.
    """

    tasks: list[str] | None = Field(None, description="trained tasks to fine-tune")
    add_tasks: list[str] = Field(default_factory=list, description="unseen tasks to add")
    mode: Literal["head", "all"] = "all"
    steps: int = Field(200, gt=0, description="fine-tuning optimiser steps")
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    batch_size: int | None = Field(None, gt=0)
    eval_every: int | None = Field(None, gt=0)
    patience: int | None = Field(None, gt=0)
    granularity: Literal["element", "channel"] = Field(
        "element", description="hold every zero weight, or every all-zero input channel, at 0"
    )
    seed: int | None = None
    device: str | None = None

    @field_validator("tasks", "add_tasks")
    @classmethod
    def _no_repeats(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and len(set(value)) != len(value):
            raise ValueError(f"task names must not repeat, got {value!r}")
        return value

    @field_validator("device")
    @classmethod
    def _device(cls, value: str | None) -> str | None:
        if (
            value is not None
            and value != "auto"
            and value.split(":")[0] not in {"cpu", "cuda", "mps"}
        ):
            raise ValueError(f"device must be 'auto', 'cpu' or 'cuda[:N]', got {value!r}")
        return value


ComponentSpec = Any
"""A component given as a registry name, a ``{"name": ..., **params}`` dict, or an instance."""


class TargetFromRun(StrictModel):
    """A sparsity target taken from a finished run: the parameter sparsity its result reached.

    This is Table 5's matched budget: every baseline is compared at the % parameter sparsity of
    the meta-sparsity run (``target: {from_run: RUN_DIR}``).
    """

    from_run: Path = Field(description="a run directory holding result.json")


def _normalise_spec(value: Any) -> Any:
    if value is None or hasattr(value, "spec"):
        return value
    if isinstance(value, str):
        return {"name": value}
    if isinstance(value, dict):
        if "name" not in value or not isinstance(value["name"], str):
            raise ValueError(f"a component dict needs a string 'name' key, got {value!r}")
        return dict(value)
    raise ValueError(f"a component is a name, a {{'name': ...}} dict or an instance, got {value!r}")


class ExperimentConfig(StrictModel):
    """One experiment: data, tasks, model, sparsity, learner and training budget.

    Component fields (``dataset``, ``model``, ``penalty``, ``learner``, ``loss_combiner``,
    ``scheduler``, ``mask``) accept a registry name, a ``{"name": ..., **params}`` dict, or a
    component instance.

    A scheduled run (``scheduler`` set; see docs/baselines.md) sparsifies the backbone to
    ``target`` with a ``mask`` criterion at ``granularity`` instead of a penalty, starting from
    ``init`` weights.
    """

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True, validate_default=True)

    dataset: ComponentSpec = DEFAULT_COMPONENT
    tasks: list[str] | None = None
    model: ComponentSpec = DEFAULT_COMPONENT
    penalty: ComponentSpec | None = DEFAULT_COMPONENT
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
    learner: ComponentSpec = DEFAULT_COMPONENT
    loss_combiner: ComponentSpec = DEFAULT_COMPONENT
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    steps: int = Field(600, gt=0, description="optimiser steps (meta-steps for meta-learners)")
    batch_size: int = Field(32, gt=0)
    eval_every: int = Field(50, gt=0, description="steps between validation evaluations")
    patience: int | None = Field(
        None, gt=0, description="evaluations without validation improvement before stopping"
    )
    seed: int = 0
    device: str = "auto"
    amp: bool = Field(False, description="mixed precision (CUDA only)")
    pin_memory: bool | Literal["auto"] = "auto"
    num_workers: int = Field(0, ge=0)
    run_dir: Path | None = None
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
    def _component(cls, value: Any) -> Any:
        return _normalise_spec(value)

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

    @field_validator("lam")
    @classmethod
    def _lam(cls, value: float | str) -> float | str:
        if isinstance(value, float) and not (math.isfinite(value) and value >= 0):
            raise ValueError("lam must be greater than or equal to 0 (and finite), or 'learned'")
        return value

    @field_validator("target")
    @classmethod
    def _target(cls, value: float | TargetFromRun | None) -> float | TargetFromRun | None:
        if isinstance(value, float) and not 0.0 <= value < 1.0:
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
        data = self.model_dump(mode="json", exclude=set(COMPONENT_FIELDS))
        for key in COMPONENT_FIELDS:
            value = getattr(self, key)
            data[key] = value.spec() if hasattr(value, "spec") else value
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


def describe_validation_error(error: ValidationError, model: type[BaseModel]) -> str:
    """One readable line per problem, naming the offending key."""
    lines = []
    for item in error.errors():
        where = ".".join(str(p) for p in item["loc"]) or "<config>"
        if item["type"] == "extra_forbidden":
            valid = ", ".join(model.model_fields) if len(item["loc"]) == 1 else "see the docs"
            lines.append(f"unknown config key {where!r} (valid keys: {valid})")
        else:
            lines.append(f"{where}: {item['msg']} (got {item.get('input')!r})")
    return "; ".join(lines)


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """``["optimizer.lr=0.01", "tasks=[depth, edges]"]`` → a nested dict (values parsed as YAML)."""
    result: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"an override is key=value, got {pair!r}")
        node = result
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = yaml.safe_load(raw)
    return result


def deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``update`` merged in, recursively for nested dicts."""
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def read_yaml(path: str | Path) -> dict[str, Any]:
    """A YAML mapping from ``path``; unreadable or malformed files raise :class:`ConfigError`."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file {str(path)!r}: {exc.strerror or exc}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {str(path)!r} is not valid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"config file {str(path)!r} must hold a mapping, got {type(data).__name__}"
        )
    return data


def build_config(data: dict[str, Any]) -> ExperimentConfig:
    """Validate a dict into an :class:`ExperimentConfig`, with readable errors."""
    try:
        return ExperimentConfig(**data)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc, ExperimentConfig)) from None


def load_config(path: str | Path, overrides: list[str] | None = None) -> ExperimentConfig:
    """An experiment config from a YAML file, with ``key=value`` overrides applied."""
    data = deep_merge(read_yaml(path), parse_overrides(overrides or []))
    return build_config(data)
