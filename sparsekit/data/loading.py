"""Batches from data sets: seeded loaders, endless iteration, moving batches to a device."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

Batch = tuple[Tensor, dict[str, Tensor]]


def make_loader(
    dataset: Dataset,
    batch_size: int,
    *,
    shuffle: bool,
    generator: torch.Generator | None = None,
    pin_memory: bool = False,
    num_workers: int = 0,
    drop_last: bool = False,
) -> DataLoader:
    """A DataLoader whose order is fixed by ``generator``."""
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        generator=generator,
        pin_memory=pin_memory,
        num_workers=num_workers,
        drop_last=drop_last and len(dataset) > batch_size,  # type: ignore[arg-type]
        persistent_workers=num_workers > 0,
    )


def cycle(loader: DataLoader) -> Iterator[Batch]:
    """Batches forever, reshuffling at every pass."""
    while True:
        yield from loader


def to_device(batch: Batch, device: torch.device, non_blocking: bool = False) -> Batch:
    """Move a batch; ``non_blocking`` copies overlap with compute when memory is pinned."""
    images, targets = batch
    return (
        images.to(device, non_blocking=non_blocking),
        {k: v.to(device, non_blocking=non_blocking) for k, v in targets.items()},
    )
