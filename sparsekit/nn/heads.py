"""Task heads shared by the model builders, and the probe that fits them to any backbone.

A head maps the shared backbone's features ``[B, C, h, w]`` to one task's raw outputs: a
:class:`DenseHead` to ``[B, out_channels, h, w]`` (the multi-task net upsamples it to the input
size), an :class:`ImageHead` to ``[B, out_channels]``. :func:`probe_backbone` finds ``C`` by
running a backbone once on a dummy image, and wraps a backbone that returns several feature maps
(a list, tuple or dict) in :class:`LastFeatureMap`, which keeps one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from sparsekit.errors import ConfigError
from sparsekit.nn.multitask import MultiTaskNet

if TYPE_CHECKING:
    from sparsekit.tasks import Task


class DenseHead(nn.Sequential):
    """A small per-pixel head: 3×3 conv, BatchNorm, ReLU, then a 1×1 conv to the outputs.

    Args:
        in_channels: channels of the backbone features.
        out_channels: channels of the task's raw output.
        hidden_channels: channels of the 3×3 conv.

    Raises:
        ValueError: a channel count below 1.
    """

    def __init__(self, in_channels: int, out_channels: int, hidden_channels: int = 32) -> None:
        _check_positive(
            in_channels=in_channels, out_channels=out_channels, hidden_channels=hidden_channels
        )
        super().__init__(
            # No bias before BatchNorm: its shift makes one redundant.
            nn.Conv2d(in_channels, hidden_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(hidden_channels),
            nn.ReLU(),
            nn.Conv2d(hidden_channels, out_channels, 1),
        )


class ImageHead(nn.Module):
    """An image-level head: a small conv, global average pooling and two fully connected layers.

    ``conv 3×3 → BatchNorm → ReLU → global average pool → Linear → ReLU → Linear``. The
    BatchNorm acts on the feature map before pooling, so it has ``B·h·w`` values per channel and
    works in training mode even for a batch of one image.

    References:
        Upadhyay et al., "Less is More – Towards parsimonious multi-task models using structured
        sparsity" (image-level head: one conv layer and two fully connected layers).

    Args:
        in_channels: channels of the backbone features.
        out_channels: size of the output vector.
        hidden_channels: channels of the conv layer (the first fully connected layer's input).
        fc_channels: width of the hidden fully connected layer; ``hidden_channels // 2`` (at
            least 1) when omitted.
        dropout: dropout probability before each fully connected layer (0 disables it).

    Raises:
        ValueError: a channel count below 1 or a dropout probability outside [0, 1).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        hidden_channels: int = 32,
        fc_channels: int | None = None,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        fc_channels = max(1, hidden_channels // 2) if fc_channels is None else fc_channels
        _check_positive(
            in_channels=in_channels,
            out_channels=out_channels,
            hidden_channels=hidden_channels,
            fc_channels=fc_channels,
        )
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, hidden_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(hidden_channels),
            nn.ReLU(),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(
            nn.Flatten(1),
            nn.Dropout(dropout),
            nn.Linear(hidden_channels, fc_channels),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(fc_channels, out_channels),
        )

    def forward(self, x: Tensor) -> Tensor:
        """Raw outputs ``[B, out_channels]`` for features ``x`` of shape ``[B, C, h, w]``."""
        return self.classifier(self.pool(self.features(x)))


def assemble_multitask_net(
    backbone: nn.Module,
    backbone_channels: int,
    tasks: Sequence[Task],
    build_head: Callable[[Task, int], nn.Module],
) -> MultiTaskNet:
    """A :class:`MultiTaskNet` of ``backbone`` and one ``build_head(task, channels)`` per task.

    Args:
        backbone: the shared backbone.
        backbone_channels: channels of the backbone's output.
        tasks: the tasks, in the order their heads are created.
        build_head: makes the head of one task.

    Returns:
        The network, with the pixel-level tasks marked for upsampling.

    Raises:
        ValueError: no tasks, duplicate task names or a level other than ``"pixel"``/``"image"``.
    """
    check_tasks(tasks)
    heads = {task.name: build_head(task, backbone_channels) for task in tasks}
    pixel_tasks = {task.name for task in tasks if task.level == "pixel"}
    return MultiTaskNet(backbone, heads, pixel_tasks, backbone_channels)


def check_tasks(tasks: Sequence[Task]) -> None:
    """Checks that ``tasks`` can share one network.

    Raises:
        ValueError: no tasks, duplicate task names or a level other than ``"pixel"``/``"image"``.
    """
    names = [task.name for task in tasks]
    if not names or len(set(names)) != len(names):
        raise ValueError(f"tasks must be non-empty with unique names, got {names}")
    for task in tasks:
        if task.level not in ("pixel", "image"):
            raise ValueError(f"task {task.name!r} has unknown level {task.level!r}")


def _check_positive(**counts: int) -> None:
    bad = {k: v for k, v in counts.items() if v < 1}
    if bad:
        details = ", ".join(f"{k}={v}" for k, v in bad.items())
        raise ValueError(f"channel counts must be at least 1, got {details}")


class LastFeatureMap(nn.Module):
    """A backbone that returns several feature maps, reduced to the one the heads read.

    Args:
        body: the backbone; it returns a list, tuple or dict of feature maps.
        key: the entry kept: an index (``-1``, the deepest map of a list) or a dict key
            (``"out"`` for torchvision's segmentation backbones).
    """

    def __init__(self, body: nn.Module, key: int | str) -> None:
        super().__init__()
        self.body = body
        self.key = key

    def forward(self, x: Tensor) -> Tensor:
        """The kept feature map of ``body(x)``."""
        return self.body(x)[self.key]


def _feature_key(output: Any) -> int | str | None:
    """Which entry of a backbone's output the heads read (None: the output is one tensor)."""
    if isinstance(output, Mapping):
        return "out" if "out" in output else list(output)[-1]
    if isinstance(output, (list, tuple)):
        return -1
    return None


def probe_backbone(backbone: nn.Module, in_channels: int, size: int) -> tuple[nn.Module, int]:
    """The backbone's output channels, found by running it on one dummy image.

    The backbone runs once in eval mode without gradients on zeros ``[1, in_channels, size,
    size]`` (on its own device); every module's training flag is restored afterwards. A backbone
    that returns a list or tuple of feature maps (timm's ``features_only`` models) is wrapped to
    return the last one; one that returns a dict (torchvision's segmentation backbones) to return
    ``"out"``, or its last entry when it has no ``"out"``.

    Args:
        backbone: maps images ``[B, in_channels, H, W]`` to features ``[B, C, h, w]``.
        in_channels: channels of the input images.
        size: side of the dummy image.

    Returns:
        The backbone (wrapped in :class:`LastFeatureMap` when needed) and ``C``.

    Raises:
        ConfigError: the backbone fails on the dummy image, or its output is not a 4-D feature
            map ``[B, C, h, w]``.
    """
    name = type(backbone).__name__
    reference = next(iter(backbone.parameters()), None)
    if reference is None:
        reference = next(iter(backbone.buffers()), torch.zeros(()))
    x = torch.zeros(1, in_channels, size, size, device=reference.device)
    if reference.is_floating_point():
        x = x.to(reference.dtype)
    modes = {module: module.training for module in backbone.modules()}
    backbone.eval()
    try:
        with torch.no_grad():
            output = backbone(x)
    except Exception as exc:  # noqa: BLE001 - any failure here is a backbone that does not fit
        raise ConfigError(
            f"the backbone {name} fails on a dummy batch of shape "
            f"{list(x.shape)} ({in_channels} input channels, as the data set has): "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    finally:
        for module, mode in modes.items():
            module.training = mode
    key = _feature_key(output)
    if key is not None:
        backbone, output = LastFeatureMap(backbone, key), output[key]
    if not isinstance(output, Tensor) or output.dim() != 4:
        shape = list(output.shape) if isinstance(output, Tensor) else type(output).__name__
        raise ConfigError(
            f"a backbone must map images [B, C, H, W] to a feature map [B, C', h, w]; "
            f"{name} returned {shape} for an input of shape {list(x.shape)}"
        )
    return backbone, int(output.shape[1])
