"""Learners: the training procedures that fit a multi-task network."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol

import torch
from torch import nn
from torch.utils.data import Dataset

from sparsekit.config import OptimizerConfig
from sparsekit.interfaces.base import Component

if TYPE_CHECKING:
    from sparsekit.interfaces.penalty import Penalty
    from sparsekit.nn import MultiTaskNet
    from sparsekit.tasks import Task


@dataclass
class StepInfo:
    """What a learner reports after a training step (for progress bars, profiles and loggers).

    Attributes:
        step: the step just taken (1-based).
        total: the steps of the loop.
        loss: the step's combined training loss (the query loss of a meta-step).
        lam: the step's λ (the mean over layers when λ is per layer).
        task_losses: each task's training loss at this step, when the learner reports them.
        lr: the (outer) learning rate of the step, when the learner reports it.
        lam_layers: λ of every backbone conv, in module order, when λ is learned per layer.
        group_sparsity: backbone group sparsity, filled in at evaluation (and logging) steps.
        parameter_sparsity: backbone parameter sparsity, filled in with ``group_sparsity``.
        val_loss: the combined validation loss, filled in at evaluation steps.
        val_metrics: every task's validation metrics, filled in at evaluation steps.
    """

    step: int
    total: int
    loss: float
    lam: float
    group_sparsity: float | None = None
    parameter_sparsity: float | None = None
    val_loss: float | None = None
    task_losses: dict[str, float] | None = None
    lr: float | None = None
    lam_layers: list[float] | None = None
    val_metrics: dict[str, dict[str, float]] | None = None


@dataclass(frozen=True)
class TrainSettings:
    """How long and how a learner trains: the run settings it reads, and nothing else.

    Attributes:
        steps: optimiser steps (meta-steps for meta-learners).
        batch_size: examples per batch.
        eval_every: steps between validation evaluations (the last step is always evaluated).
        patience: evaluations without validation improvement before stopping; None never stops.
        optimizer: the optimiser kind (already resolved, never None) and its settings.
        amp: float16 autocast on CUDA.
        pin_memory: pinned host memory and asynchronous copies to the device.
        num_workers: data-loading worker processes.
        lam_warmup: steps over which a fixed λ ramps linearly from 0 (0: none).
        checkpoint_every: steps between checkpoints of a run with a run directory.
    """

    steps: int
    batch_size: int
    eval_every: int
    patience: int | None
    optimizer: OptimizerConfig
    amp: bool = False
    pin_memory: bool = False
    num_workers: int = 0
    lam_warmup: int = 0
    checkpoint_every: int | None = None


class Stateful(Protocol):
    """Anything whose state a checkpoint can hold: modules, optimisers, batch streams."""

    def state_dict(self) -> Any:
        """The state as tensors and plain data."""

    def load_state_dict(self, state: Any) -> None:
        """Take back a state from :meth:`state_dict`."""


class Checkpoint:
    """A training loop's checkpoint: what it tracks is saved as the loop goes and restored on
    resume (the engine's :class:`sparsekit.engine.checkpoints.PhaseCheckpoint` does it).

    A learner tracks every object its loop changes (``track("optimizer", optimizer)``), calls
    :meth:`restore` once everything is built and starts its loop after the step it returns; the
    :class:`~sparsekit.engine.loop.Monitor` calls :meth:`after_step` after every step. This base
    class is what a loop gets outside a run directory: it keeps nothing and restores nothing.
    """

    def track(self, name: str, obj: Stateful) -> None:
        """Save and restore ``obj`` under ``name`` (unique within the loop)."""

    def restore(self) -> int:
        """Load the saved state, if any, into every tracked object; the last step taken (0 for a
        fresh loop, a step past the loop's end for one that had stopped)."""
        return 0

    def phase(self, name: str, offset: int = 0) -> Checkpoint:
        """The checkpoint of another phase of the same run, which begins after ``offset`` of
        the run's steps (a scheduled run's dense and scheduled phases)."""
        return Checkpoint()

    def after_step(self, step: int, evaluated: bool, done: bool) -> None:
        """Save when due (every evaluation, every ``checkpoint_every`` steps, when ``done``);
        raises :class:`sparsekit.errors.RunInterrupted` after saving if the run was asked to
        stop."""


class Pruner(Protocol):
    """What a learner drives in a scheduled run (:class:`sparsekit.engine.pruning.Pruner`)."""

    def start(self, optimizer: Any) -> None:
        """Hook into the optimiser before the first step."""

    def after_step(self, step: int) -> None:
        """Update the masks if ``step`` is an update step; called after every optimiser step."""

    def settled(self, step: int) -> bool:
        """Whether the sparsity is final from ``step`` on (checkpoints fit for early stopping)."""

    def stop(self) -> None:
        """Detach from the optimiser; the masked weights stay zero."""


@dataclass
class TrainingContext:
    """Everything a learner needs; built by :class:`sparsekit.Experiment`.

    Attributes:
        model: the network to train in place.
        tasks: the tasks trained, in order.
        train: the training split (the only data a learner may fit on).
        val: the validation split (early stopping and model selection only).
        penalty: the sparsity penalty on the backbone conv weights, or None.
        lam: the penalty strength λ, or ``"learned"`` for a learner that learns it.
        combiner: the loss-combiner module (its parameters are trained with the model).
        settings: the run settings.
        device: the resolved device.
        generator: the seeded random generator for data order (and a learned λ's λ₀).
        on_step: called with a :class:`StepInfo` after every step.
        pruner: for a scheduled run, the pruner the learner drives; only learners whose class
            sets ``supports_schedules = True`` are given one.
        checkpoint: where the loop's state is saved and restored from.
    """

    model: MultiTaskNet
    tasks: list[Task]
    train: Dataset
    val: Dataset
    penalty: Penalty | None
    lam: float | Literal["learned"]
    combiner: nn.Module
    settings: TrainSettings
    device: torch.device
    generator: torch.Generator
    on_step: Callable[[StepInfo], None] = lambda info: None
    pruner: Pruner | None = None
    checkpoint: Checkpoint = field(default_factory=Checkpoint)


@dataclass
class TrainingHistory:
    """What happened during training.

    Attributes:
        profile: one row per evaluation: step, train loss, validation loss, λ, group and
            parameter sparsity of the backbone (fractions).
        best_step: the step whose weights were kept (lowest validation loss).
        stopped_early: whether patience ran out before the step budget.
        lam_history: λ after every (meta-)step, for learners that learn it: a float, or one
            value per backbone conv layer.
        extra: learner-specific records (e.g. meta-train and query losses).
    """

    profile: list[dict[str, float]] = field(default_factory=list)
    best_step: int = 0
    stopped_early: bool = False
    lam_history: list[float | list[float]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


class Learner(Component):
    """Trains ``context.model`` in place and returns its history.

    ``fit(context)`` fits on ``context.train`` only, may use ``context.val`` for early stopping,
    and leaves in ``context.model`` the one final model that is evaluated on the test split.

    Capabilities, declared on the class:

    - ``learns_lambda``: the learner can meta-learn λ (``lam="learned"``; it then receives
      ``context.lam == "learned"``).
    - ``supports_schedules``: the learner drives a scheduled run's pruner.
    - ``debiases``: a run of this learner with a penalty is followed by the masked fine-tuning
      (debiasing) stage of ``ExperimentConfig.debias_steps``.
    - ``default_optimizer``: the optimiser kind used when ``optimizer.name`` is left unset; None
      takes the registry's default optimiser.

    Kind ``learner`` (hook ``sparsekit_register_learners``).
    """

    learns_lambda: ClassVar[bool] = False
    supports_schedules: ClassVar[bool] = False
    debiases: ClassVar[bool] = False
    default_optimizer: ClassVar[str | None] = None

    @abstractmethod
    def fit(self, context: TrainingContext) -> TrainingHistory:
        """Train and return the history."""
