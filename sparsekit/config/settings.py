"""Settings shared by experiments and stages: the optimiser, the fine-tuning stage, targets."""

from __future__ import annotations

import types
import typing
from pathlib import Path
from typing import Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

#: The component name that stands for its kind's default (``registry.default(kind)``).
DEFAULT_COMPONENT = "default"

#: The model name a run records for a backbone given as an ``nn.Module`` instance. It names no
#: plugin: a config alone cannot rebuild such a backbone (see docs/own-model-and-data.md).
GIVEN_MODULE = "module"

#: The largest seed plus one: torch's generators take 64-bit seeds, and a run adds offsets.
SEED_LIMIT = 2**63


def _accepts_bool(annotation: Any) -> bool:
    """Whether a field annotated ``annotation`` means to take ``True``/``False``."""
    if annotation is bool or annotation is Any:
        return True
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return any(isinstance(arg, bool) for arg in typing.get_args(annotation))
    if origin in (Union, types.UnionType, typing.Annotated):
        return any(_accepts_bool(arg) for arg in typing.get_args(annotation))
    return False


class StrictModel(BaseModel):
    """A config that refuses what it would otherwise silently coerce.

    Unknown keys are errors; a number must be finite (no ``inf`` or ``nan``); ``true`` and
    ``false`` are accepted only by fields that take a boolean (pydantic would read them as 1
    and 0 in a number field). An integer field still takes an integral number (``300``,
    ``3e2``), never a fraction.
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_for_other_types(cls, value: Any, info: ValidationInfo) -> Any:
        if isinstance(value, bool) and info.field_name is not None:
            annotation = cls.model_fields[info.field_name].annotation
            if not _accepts_bool(annotation):
                raise ValueError(f"expected {_type_text(annotation)}, not true/false")
        return value


def _type_text(annotation: Any) -> str:
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")


def directory_path(value: Any) -> Any:
    """A run directory's path as given: ``~`` expanded, a number taken as a name.

    A leading ``~`` or ``~user`` is the home directory, as a shell reads it, wherever the path
    comes from (a config, ``--run-dir``, Python), so a run never lands in a directory named
    ``~``; nothing else is interpreted. ``2024`` (an int in YAML) is the directory ``2024``.

    Raises:
        ValueError: the path, or a directory above it, exists and is a file.
    """
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, (str, Path)):
        return value  # pydantic says what a path may be
    path = Path(value)
    try:
        path = path.expanduser()
    except RuntimeError:  # no home directory to expand to: the path stays as written
        pass
    for existing in (path, *path.parents):
        if existing.exists():
            if not existing.is_dir():
                where = "" if existing == path else f" (inside {str(existing)!r})"
                raise ValueError(f"{str(path)!r} is a file, not a directory{where}")
            break
    return path


class OptimizerConfig(StrictModel):
    """The optimiser and its proximal step.

    ``name`` is an optimiser kind of the registry (plugin kind ``optimizer``); left unset (None)
    it takes the learner's ``default_optimizer``, or the registry's default kind. The other
    fields are the settings of the kind's torch optimiser, each used where it applies (``betas``
    and ``eps`` by Adam-based kinds, ``momentum`` by SGD-based ones). ``docs/penalties.md`` lists
    the built-in kinds and how each measures λ.
    """

    name: str | None = Field(
        None, description="optimiser kind (plugin kind optimizer); None: the learner's default"
    )
    lr: float = Field(1e-3, gt=0, description="learning rate (the outer one for meta-learners)")
    weight_decay: float = Field(0.0, ge=0, description="L2 weight decay")
    momentum: float = Field(0.9, ge=0, lt=1, description="momentum of SGD-based kinds")
    betas: tuple[float, float] = Field(
        (0.9, 0.999), description="Adam's moment decay rates, each in [0, 1)"
    )
    eps: float = Field(1e-8, gt=0, description="Adam's denominator epsilon")

    @field_validator("betas")
    @classmethod
    def _betas(cls, value: tuple[float, float]) -> tuple[float, float]:
        if not all(0 <= beta < 1 for beta in value):
            raise ValueError("each of Adam's betas must be in [0, 1)")
        return value


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
    mode: Literal["head", "all"] = Field(
        "all", description="head: train the fine-tuned heads only; all: the backbone too"
    )
    steps: int = Field(200, gt=0, description="fine-tuning optimiser steps")
    optimizer: OptimizerConfig = Field(
        default_factory=OptimizerConfig, description="the fine-tuning optimiser"
    )
    batch_size: int | None = Field(None, gt=0, description="examples per batch (None: the run's)")
    eval_every: int | None = Field(
        None, gt=0, description="steps between validation evaluations (None: the run's)"
    )
    patience: int | None = Field(
        None, gt=0, description="evaluations without improvement before stopping (None: never)"
    )
    granularity: Literal["element", "channel"] = Field(
        "element", description="hold every zero weight, or every all-zero input channel, at 0"
    )
    seed: int | None = Field(
        None, ge=0, lt=SEED_LIMIT, description="random seed in [0, 2**63) (None: the run's)"
    )
    device: str | None = Field(None, description="'auto', 'cpu' or 'cuda[:N]' (None: the run's)")

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


class TargetFromRun(StrictModel):
    """A sparsity target taken from a finished run: the parameter sparsity its result reached.

    This is Table 5's matched budget: every baseline is compared at the % parameter sparsity of
    the meta-sparsity run (``target: {from_run: RUN_DIR}``).
    """

    from_run: Path = Field(description="a run directory holding result.json (~ expanded)")

    @field_validator("from_run", mode="before")
    @classmethod
    def _directory(cls, value: Any) -> Any:
        return directory_path(value)
