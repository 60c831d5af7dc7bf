"""Image-level tasks: binary attributes and multi-class classification.

The exact definitions are in ``docs/metrics.md``.
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from sparsekit.tasks.base import Meter, Task


class AccuracyMeter(Meter):
    """Fraction of correctly predicted images over a split.

    Args:
        task: the task whose ``correct(pred, target)`` marks each image right or wrong.
    """

    def __init__(self, task: AttributeTask | ClassificationTask) -> None:
        self._task = task
        self._correct: Tensor | None = None
        self._count = 0

    def update(self, pred: Tensor, target: Tensor) -> None:
        correct = self._task.correct(pred.detach(), target).sum()
        self._correct = correct if self._correct is None else self._correct + correct
        self._count += int(target.shape[0])

    def compute(self) -> dict[str, float]:
        """NaN when nothing has been added."""
        if self._correct is None or self._count == 0:
            return {"accuracy": math.nan}
        return {"accuracy": float(self._correct) / self._count}


class AttributeTask(Task):
    """A binary image attribute predicted from one logit.

    The head outputs logits ``[B, 1]`` (``[B]`` is accepted too); targets are floats ``[B]`` in
    {0, 1}. The sigmoid is applied exactly once, inside the loss; nothing else applies it.

    Args:
        name: the task's name.
    """

    metrics: ClassVar[dict[str, bool]] = {"accuracy": True}
    primary_metric: ClassVar[str] = "accuracy"

    def __init__(self, name: str) -> None:
        super().__init__(name, "image", 1)

    def _logits(self, pred: Tensor, target: Tensor) -> Tensor:
        if pred.numel() != target.numel() or pred.dim() > 2 or pred.shape[0] != target.shape[0]:
            raise ValueError(
                f"{self.name}: expected logits [B, 1] or [B] for targets [B], got "
                f"{tuple(pred.shape)} against {tuple(target.shape)}"
            )
        return pred.reshape(target.shape)

    def loss(self, pred: Tensor, target: Tensor) -> Tensor:
        """Mean binary cross-entropy of the logits (sigmoid applied here) against the targets."""
        return F.binary_cross_entropy_with_logits(self._logits(pred, target), target.to(pred.dtype))

    def correct(self, pred: Tensor, target: Tensor) -> Tensor:
        """Per image: whether ``logit > 0`` agrees with ``target > 0.5``."""
        return (self._logits(pred, target) > 0) == (target > 0.5)

    def meter(self) -> AccuracyMeter:
        return AccuracyMeter(self)


class ClassificationTask(Task):
    """Single-label classification into ``num_classes`` classes from logits ``[B, K]``.

    Args:
        name: the task's name.
        num_classes: number of classes K (the head's output channels).
    """

    metrics: ClassVar[dict[str, bool]] = {"accuracy": True}
    primary_metric: ClassVar[str] = "accuracy"

    def __init__(self, name: str, num_classes: int) -> None:
        super().__init__(name, "image", num_classes)
        self.num_classes = num_classes

    def _check(self, pred: Tensor, target: Tensor) -> None:
        if pred.dim() != 2 or pred.shape != (target.shape[0], self.num_classes):
            raise ValueError(
                f"{self.name}: expected logits [B, {self.num_classes}] for targets [B], got "
                f"{tuple(pred.shape)} against {tuple(target.shape)}"
            )

    def loss(self, pred: Tensor, target: Tensor) -> Tensor:
        """Mean cross-entropy of the logits against the class indices."""
        self._check(pred, target)
        return F.cross_entropy(pred, target.long())

    def correct(self, pred: Tensor, target: Tensor) -> Tensor:
        """Per image: whether the arg-max class equals the target."""
        self._check(pred, target)
        return torch.argmax(pred, dim=1) == target

    def meter(self) -> AccuracyMeter:
        return AccuracyMeter(self)
