"""Learners: the training procedures that fit a multi-task network."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn
from torch.utils.data import Dataset

from sparsekit.interfaces.base import Component

if TYPE_CHECKING:
    from sparsekit.config import ExperimentConfig
    from sparsekit.interfaces.penalty import Penalty
    from sparsekit.models import MultiTaskNet
    from sparsekit.tasks import Task


@dataclass
class StepInfo:
    """What a learner reports after a training step (for progress bars and profiles)."""

    step: int
    total: int
    loss: float
    lam: float
    group_sparsity: float | None = None
    parameter_sparsity: float | None = None
    val_loss: float | None = None


@dataclass
class TrainingContext:
    """Everything a learner needs; built by :class:`sparsekit.Experiment`.

    Attributes:
        model: the network to train in place.
        tasks: the tasks trained, in order.
        train: the training split (the only data a learner may fit on).
        val: the validation split (early stopping and model selection only).
        penalty: the sparsity penalty on the backbone conv weights, or None.
        lam: the penalty strength λ.
        combiner: the loss-combiner module (its parameters are trained with the model).
        config: the experiment configuration (steps, batch size, optimiser, device, ...).
        device: the resolved device.
        generator: the seeded random generator for data order.
        on_step: called with a :class:`StepInfo` after every step.
        pruner: for a scheduled run, the :class:`sparsekit.engine.pruning.Pruner` the learner
            drives (``start(optimizer)`` before the first step, ``after_step(step)`` after every
            optimiser step, ``stop()`` at the end); only learners whose class sets
            ``supports_schedules = True`` are given one.
    """

    model: MultiTaskNet
    tasks: list[Task]
    train: Dataset
    val: Dataset
    penalty: Penalty | None
    lam: float
    combiner: nn.Module
    config: ExperimentConfig
    device: torch.device
    generator: torch.Generator
    on_step: Callable[[StepInfo], None] = lambda info: None
    pruner: Any = None


@dataclass
class TrainingHistory:
    """What happened during training.

    Attributes:
        profile: one row per evaluation: step, train loss, validation loss, λ, group and
            parameter sparsity of the backbone (fractions).
        best_step: the step whose weights were kept (lowest validation loss).
        stopped_early: whether patience ran out before the step budget.
        lam_history: λ after every (meta-)step, for learners that learn it: a float, or one
            value per backbone conv layer with ``lam_per_layer``.
        extra: learner-specific records (e.g. meta-train and query losses).
    """

    profile: list[dict[str, float]] = field(default_factory=list)
    best_step: int = 0
    stopped_early: bool = False
    lam_history: list[float | list[float]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


class Learner(Component):
    """Trains ``context.model`` in place and returns its history.

    A learner fits on ``context.train`` only, may use ``context.val`` for early stopping, and leaves
    in ``context.model`` the one final model that is evaluated on the test split.

    Capabilities, declared on the class:

    - ``learns_lambda``: the learner can meta-learn λ (``lam="learned"``).
    - ``supports_schedules``: the learner drives a scheduled run's pruner.
    - ``debiases``: a run of this learner with a penalty is followed by the masked fine-tuning
      (debiasing) stage of ``ExperimentConfig.debias_steps``.
    - ``default_optimizer``: the optimiser kind used when ``optimizer.name`` is left unset.
    """

    learns_lambda: ClassVar[bool] = False
    supports_schedules: ClassVar[bool] = False
    debiases: ClassVar[bool] = False
    default_optimizer: ClassVar[str] = "adam_prox"

    @abstractmethod
    def fit(self, context: TrainingContext) -> TrainingHistory:
        """Train and return the history."""
