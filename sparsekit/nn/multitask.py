"""The multi-task network: one shared backbone, one head per task."""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class MultiTaskNet(nn.Module):
    """A shared backbone followed by one head per task.

    ``forward(x)`` runs the backbone once and every head on its features, returning
    ``{task: output}``. Outputs of pixel-level heads are bilinearly upsampled to the input size.

    Args:
        backbone: maps images ``[B, C, H, W]`` to features ``[B, backbone_channels, h, w]``.
        heads: one module per task, each taking the backbone features.
        pixel_tasks: names of the tasks whose outputs are per pixel.
        backbone_channels: channels of the backbone's output (needed to add heads later).
    """

    def __init__(
        self,
        backbone: nn.Module,
        heads: Mapping[str, nn.Module],
        pixel_tasks: set[str] | frozenset[str],
        backbone_channels: int,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.heads = nn.ModuleDict(dict(heads))
        self.pixel_tasks = set(pixel_tasks)
        self.backbone_channels = backbone_channels

    @property
    def task_names(self) -> list[str]:
        return list(self.heads.keys())

    def add_head(self, name: str, head: nn.Module, pixel: bool) -> None:
        """Attach a head for a new task."""
        if name in self.heads:
            raise ValueError(f"the model already has a head for task {name!r}")
        self.heads[name] = head
        if pixel:
            self.pixel_tasks.add(name)

    def forward(self, x: Tensor, tasks: list[str] | None = None) -> dict[str, Tensor]:
        features = self.backbone(x)
        names = self.task_names if tasks is None else tasks
        out: dict[str, Tensor] = {}
        for name in names:
            y = self.heads[name](features)
            if name in self.pixel_tasks and y.shape[-2:] != x.shape[-2:]:
                y = F.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=False)
            out[name] = y
        return out


def backbone_conv_weights(model: MultiTaskNet) -> dict[str, torch.nn.Parameter]:
    """The weight of every ungrouped conv of the shared backbone, by qualified name, in order.

    These are the weights sparsity penalties act on; BatchNorm, biases and heads are not penalised.
    Grouped and depthwise convs (``groups > 1``) are left out: their channel group ``weight[:, c]``
    reads one input channel of every group at once (of a depthwise conv: the whole layer), so it
    is no channel that compaction could remove. Their channels are still removed with the convs
    that produce and read them.
    """
    return {
        f"backbone.{name}.weight": module.weight
        for name, module in model.backbone.named_modules()
        if isinstance(module, nn.Conv2d) and module.groups == 1
    }
