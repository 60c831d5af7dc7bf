"""Settings shared by experiments and stages: the optimiser, the fine-tuning stage, targets."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

#: The component name that stands for its kind's default (``registry.default(kind)``).
DEFAULT_COMPONENT = "default"

#: The model name a run records for a backbone given as an ``nn.Module`` instance. It names no
#: plugin: a config alone cannot rebuild such a backbone (see docs/own-model-and-data.md).
GIVEN_MODULE = "module"


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
    seed: int | None = Field(None, description="random seed (None: the run's)")
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

    from_run: Path = Field(description="a run directory holding result.json")
