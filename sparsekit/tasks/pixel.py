"""Pixel-level tasks: semantic segmentation, depth, surface normals and edges.

Every meter accumulates sums over the whole split in float64 on the device of the predictions, so
its metrics do not depend on how the split is cut into batches. The exact definitions are in
``docs/metrics.md``.
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from sparsekit.tasks.base import Meter, Task

#: The offset α inside the logarithms of the depth loss (Hu et al. 2019 use 0.5).
DEPTH_LOG_OFFSET = 0.5


def _check_same_shape(pred: Tensor, target: Tensor, task: str) -> None:
    if pred.shape != target.shape:
        raise ValueError(
            f"{task}: prediction shape {tuple(pred.shape)} differs from target shape "
            f"{tuple(target.shape)}"
        )


def _masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``values`` where ``mask`` holds; 0 (still differentiable) when nothing is valid."""
    total = torch.where(mask, values, torch.zeros_like(values)).sum()
    return total / mask.sum().clamp_min(1)


class _SumMeter(Meter):
    """Accumulates named float64 sums; subclasses turn them into metrics."""

    def __init__(self) -> None:
        self._sums: dict[str, Tensor] = {}

    def _add(self, **values: Tensor) -> None:
        for key, value in values.items():
            value = value.detach().to(torch.float64)
            self._sums[key] = self._sums[key] + value if key in self._sums else value

    def _get(self, key: str) -> float:
        return float(self._sums[key]) if key in self._sums else 0.0


class SegmentationMeter(Meter):
    """Confusion matrix over a split; mIoU and pixel accuracy from it.

    Args:
        num_classes: number of classes K.
        ignore_index: target label of pixels that are excluded.
    """

    def __init__(self, num_classes: int, ignore_index: int) -> None:
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.confusion: Tensor | None = None

    def update(self, pred: Tensor, target: Tensor) -> None:
        """Adds ``pred`` logits ``[B, K, H, W]`` against labels ``[B, H, W]``."""
        if pred.dim() != 4 or pred.shape[1] != self.num_classes:
            raise ValueError(
                f"segmentation: expected logits [B, {self.num_classes}, H, W], "
                f"got {tuple(pred.shape)}"
            )
        _check_same_shape(pred[:, 0], target, "segmentation")
        k = self.num_classes
        valid = target != self.ignore_index
        labels = target[valid].long()
        if labels.numel() and (labels.min() < 0 or labels.max() >= k):
            raise ValueError(
                f"segmentation: target labels must be in [0, {k}) or {self.ignore_index}"
            )
        predicted = pred.detach().argmax(dim=1)[valid]
        # Row = true class, column = predicted class.
        counts = torch.bincount(labels * k + predicted, minlength=k * k).reshape(k, k)
        self.confusion = counts if self.confusion is None else self.confusion + counts

    def compute(self) -> dict[str, float]:
        """mIoU over the classes present in target or prediction, and pixel accuracy.

        Both are NaN when no valid pixel has been added.
        """
        if self.confusion is None or int(self.confusion.sum()) == 0:
            return {"miou": math.nan, "pixel_acc": math.nan}
        confusion = self.confusion.to(torch.float64)
        tp = confusion.diagonal()
        union = confusion.sum(dim=0) + confusion.sum(dim=1) - tp
        present = union > 0
        iou = tp[present] / union[present]
        return {
            "miou": float(iou.mean()),
            "pixel_acc": float(tp.sum() / confusion.sum()),
        }


class SegmentationTask(Task):
    """Per-pixel classification into ``num_classes`` classes.

    The loss is the mean over non-ignored pixels of the cross-entropy against the smoothed target
    distribution ``(1 − ε)·onehot + ε/K``.

    Args:
        name: the task's name.
        num_classes: number of classes K (the head's output channels).
        ignore_index: target label of pixels excluded from loss and metrics.
        label_smoothing: ε in the smoothed target distribution.
    """

    metrics: ClassVar[dict[str, bool]] = {"miou": True, "pixel_acc": True}
    primary_metric: ClassVar[str] = "miou"

    def __init__(
        self, name: str, num_classes: int, ignore_index: int = 255, label_smoothing: float = 0.1
    ) -> None:
        super().__init__(name, "pixel", num_classes)
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.label_smoothing = label_smoothing

    def loss(self, pred: Tensor, target: Tensor) -> Tensor:
        """Smoothed cross-entropy of logits ``[B, K, H, W]`` against labels ``[B, H, W]``."""
        per_pixel = F.cross_entropy(
            pred,
            target.long(),
            ignore_index=self.ignore_index,
            label_smoothing=self.label_smoothing,
            reduction="none",
        )
        # A batch whose pixels are all ignored contributes 0 instead of NaN.
        return _masked_mean(per_pixel, target != self.ignore_index)

    def meter(self) -> SegmentationMeter:
        return SegmentationMeter(self.num_classes, self.ignore_index)


def _forward_differences(x: Tensor) -> tuple[Tensor, Tensor]:
    """∂x and ∂y of ``x [..., H, W]`` by forward differences on the (H−1)×(W−1) grid."""
    corner = x[..., :-1, :-1]
    return x[..., :-1, 1:] - corner, x[..., 1:, :-1] - corner


def hu_depth_loss(pred: Tensor, target: Tensor, alpha: float = DEPTH_LOG_OFFSET) -> Tensor:
    """Combined depth, gradient and surface-normal loss over valid pixels (``target > 0``).

    ``l_depth + l_grad + l_normal`` with ``l_depth`` the mean of ``ln(|d − g| + α)`` over valid
    pixels, and ``l_grad`` (mean of ``ln(|∂x d − ∂x g| + α) + ln(|∂y d − ∂y g| + α)``) and
    ``l_normal`` (mean of ``1 − cos(n_d, n_g)``, ``n = (−∂x, −∂y, 1)``) over the pixels whose
    right and lower neighbours are also valid. Derivatives are forward differences.

    Args:
        pred: predicted depth ``[B, 1, H, W]``.
        target: ground-truth depth of the same shape; values ≤ 0 are invalid.
        alpha: the offset α inside the logarithms.

    Returns:
        The loss as a 0-d tensor (0 when no pixel is valid).

    References:
        Hu, Ozay, Zhang, Okatani. Revisiting single image depth estimation: toward higher
        resolution maps with accurate object boundaries. WACV 2019.
    """
    valid = target > 0
    l_depth = _masked_mean(torch.log((pred - target).abs() + alpha), valid)

    grad_valid = valid[..., :-1, :-1] & valid[..., :-1, 1:] & valid[..., 1:, :-1]
    dx_pred, dy_pred = _forward_differences(pred)
    dx_true, dy_true = _forward_differences(target)
    grad_terms = torch.log((dx_pred - dx_true).abs() + alpha) + torch.log(
        (dy_pred - dy_true).abs() + alpha
    )
    l_grad = _masked_mean(grad_terms, grad_valid)

    # n·n' = ∂x·∂x' + ∂y·∂y' + 1 and |n| ≥ 1, so the cosine needs no epsilon.
    dot = dx_pred * dx_true + dy_pred * dy_true + 1
    norm_pred = torch.sqrt(dx_pred**2 + dy_pred**2 + 1)
    norm_true = torch.sqrt(dx_true**2 + dy_true**2 + 1)
    l_normal = _masked_mean(1 - dot / (norm_pred * norm_true), grad_valid)
    return l_depth + l_grad + l_normal


class DepthMeter(_SumMeter):
    """MAE and RMSE over the valid pixels (``target > 0``) of a split."""

    def update(self, pred: Tensor, target: Tensor) -> None:
        _check_same_shape(pred, target, "depth")
        valid = target > 0
        error = (pred.detach() - target)[valid].to(torch.float64)
        self._add(abs=error.abs().sum(), sq=(error**2).sum(), count=valid.sum())

    def compute(self) -> dict[str, float]:
        """NaN for both metrics when no valid pixel has been added."""
        count = self._get("count")
        if count == 0:
            return {"mae": math.nan, "rmse": math.nan}
        return {"mae": self._get("abs") / count, "rmse": math.sqrt(self._get("sq") / count)}


class DepthTask(Task):
    """Per-pixel depth regression; the head's raw output is the depth.

    Args:
        name: the task's name (``"depth"`` by default).
    """

    metrics: ClassVar[dict[str, bool]] = {"mae": False, "rmse": False}
    primary_metric: ClassVar[str] = "mae"

    def __init__(self, name: str = "depth") -> None:
        super().__init__(name, "pixel", 1)

    def loss(self, pred: Tensor, target: Tensor) -> Tensor:
        """:func:`hu_depth_loss` of ``pred`` against ``target``, both ``[B, 1, H, W]``."""
        _check_same_shape(pred, target, "depth")
        return hu_depth_loss(pred, target)

    def meter(self) -> DepthMeter:
        return DepthMeter()


def _normal_cosines(pred: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """Per-pixel cosine between predicted and true normals ``[B, 3, H, W]``, and the valid mask."""
    _check_same_shape(pred, target, "normals")
    valid = target.norm(dim=1) > 0
    cosine = (F.normalize(pred, dim=1) * F.normalize(target, dim=1)).sum(dim=1)
    return cosine, valid


class NormalsMeter(_SumMeter):
    """Mean cosine similarity and mean angle (degrees) over the valid pixels of a split."""

    def update(self, pred: Tensor, target: Tensor) -> None:
        cosine, valid = _normal_cosines(pred.detach(), target)
        # Rounding can push |cos| just above 1, where arccos is undefined.
        cosine = cosine[valid].to(torch.float64).clamp(-1.0, 1.0)
        angle = torch.rad2deg(torch.arccos(cosine))
        self._add(cos=cosine.sum(), angle=angle.sum(), count=valid.sum())

    def compute(self) -> dict[str, float]:
        """NaN for both metrics when no valid pixel has been added."""
        count = self._get("count")
        if count == 0:
            return {"cosine": math.nan, "mean_angle": math.nan}
        return {"cosine": self._get("cos") / count, "mean_angle": self._get("angle") / count}


class NormalsTask(Task):
    """Per-pixel surface normal estimation; the prediction is normalised to unit length.

    Args:
        name: the task's name (``"normals"`` by default).
    """

    metrics: ClassVar[dict[str, bool]] = {"cosine": True, "mean_angle": False}
    primary_metric: ClassVar[str] = "cosine"

    def __init__(self, name: str = "normals") -> None:
        super().__init__(name, "pixel", 3)

    def loss(self, pred: Tensor, target: Tensor) -> Tensor:
        """Mean of ``1 − cos(pred, target)`` over pixels with a non-zero target vector."""
        cosine, valid = _normal_cosines(pred, target)
        return _masked_mean(1 - cosine, valid)

    def meter(self) -> NormalsMeter:
        return NormalsMeter()


class EdgeMeter(_SumMeter):
    """MAE of the raw prediction over every pixel of a split."""

    def update(self, pred: Tensor, target: Tensor) -> None:
        _check_same_shape(pred, target, "edges")
        error = (pred.detach() - target).to(torch.float64)
        self._add(abs=error.abs().sum(), count=error.new_tensor(error.numel()))

    def compute(self) -> dict[str, float]:
        """NaN when nothing has been added."""
        count = self._get("count")
        return {"mae": self._get("abs") / count if count else math.nan}


class EdgeTask(Task):
    """Per-pixel edge strength in [0, 1], regressed from the head's raw output (no sigmoid).

    Args:
        name: the task's name (``"edges"`` by default).
        delta: the Huber loss's threshold between its quadratic and linear parts.
    """

    metrics: ClassVar[dict[str, bool]] = {"mae": False}
    primary_metric: ClassVar[str] = "mae"

    def __init__(self, name: str = "edges", delta: float = 0.3) -> None:
        super().__init__(name, "pixel", 1)
        self.delta = delta

    def loss(self, pred: Tensor, target: Tensor) -> Tensor:
        """Mean Huber loss over all pixels of ``[B, 1, H, W]`` maps."""
        _check_same_shape(pred, target, "edges")
        return F.huber_loss(pred, target, delta=self.delta)

    def meter(self) -> EdgeMeter:
        return EdgeMeter()
