"""The task contract shared by data sets, models and learners."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import ClassVar, Literal

from torch import Tensor


class Meter(ABC):
    """Accumulates a task's metrics over a whole split, batch by batch.

    Metrics are computed from sufficient statistics summed over the split (never as a mean of
    per-batch means), so the result does not depend on the batch size.
    """

    @abstractmethod
    def update(self, pred: Tensor, target: Tensor) -> None:
        """Add one batch of raw head outputs and targets."""

    @abstractmethod
    def compute(self) -> dict[str, float]:
        """The metrics over everything added so far."""


class Task(ABC):
    """A prediction task with its loss (training) and metrics (evaluation).

    Attributes:
        name: the task's name, unique within a data set.
        level: ``"pixel"`` for dense per-pixel outputs (upsampled to the input size by the model),
            ``"image"`` for one output vector per image.
        out_channels: channels of the head's raw output.
    """

    #: Metric names mapped to True when higher is better.
    metrics: ClassVar[dict[str, bool]] = {}
    #: The metric reported first and used in summary tables.
    primary_metric: ClassVar[str] = ""

    def __init__(self, name: str, level: Literal["pixel", "image"], out_channels: int) -> None:
        self.name = name
        self.level = level
        self.out_channels = out_channels

    @abstractmethod
    def loss(self, pred: Tensor, target: Tensor) -> Tensor:
        """The training loss (a 0-d tensor) of raw head outputs against targets."""

    @abstractmethod
    def meter(self) -> Meter:
        """A fresh metric accumulator."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


def task_losses(
    outputs: Mapping[str, Tensor], targets: Mapping[str, Tensor], tasks: Sequence[Task]
) -> dict[str, Tensor]:
    """Each task's loss; the network ran once for all tasks."""
    return {t.name: t.loss(outputs[t.name], targets[t.name]) for t in tasks}
