"""A user's own code, imported by path in tests/integration/test_own_model.py: a backbone class,
a factory of it, and a data-set factory. pytest puts this folder on ``sys.path`` (and a sweep's
worker processes inherit it)."""

import torch
from torch import nn

from sparsekit.data import from_tensors
from sparsekit.tasks import DepthTask, SegmentationTask


class TinyNet(nn.Module):
    """Three convs with BatchNorm and ReLU; output stride 4."""

    def __init__(self, in_channels: int = 3, width: int = 8):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(2 * width),
            nn.ReLU(),
            nn.Conv2d(2 * width, 2 * width, 3, padding=1, bias=False),
            nn.BatchNorm2d(2 * width),
            nn.ReLU(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


def make_backbone(in_channels: int = 3, width: int = 8) -> nn.Module:
    return TinyNet(in_channels, width)


def make_dataset(n: int = 24, size: int = 16, seed: int = 0):
    """Noisy images whose segmentation is where channel 0 is bright, depth channel 1's size."""
    gen = torch.Generator().manual_seed(seed)
    images = torch.randn(n, 3, size, size, generator=gen)
    targets = {"segmentation": (images[:, 0] > 0).long(), "depth": images[:, 1:2].abs()}
    return from_tensors(images, targets, tasks=[SegmentationTask("segmentation", 2), DepthTask()])
