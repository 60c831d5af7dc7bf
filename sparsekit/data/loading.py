"""Batches from data sets: seeded loaders, endless iteration, moving batches to a device."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

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


class ResumableBatches:
    """Batches forever from a loader, reshuffling at every pass, that can be checkpointed.

    It yields exactly what :func:`cycle` yields. Its state is the loader generator's state when
    the current pass began and the batches taken from the pass since; :meth:`load_state_dict`
    starts that pass again from that state and skips as many batches (it reads them, so a
    resumed pass costs at most one pass of data loading). The generator's own state is left as
    it was before the call; the caller restores it (a checkpoint saves it separately).

    Args:
        loader: a loader whose shuffling draws from ``generator``.
        generator: the loader's generator (None for a loader that does not shuffle).
    """

    def __init__(self, loader: DataLoader, generator: torch.Generator | None) -> None:
        self.loader, self.generator = loader, generator
        self._iterator: Iterator[Batch] | None = None
        self._pass_start: Tensor | None = None
        self._position = 0

    def __iter__(self) -> ResumableBatches:
        return self

    def __next__(self) -> Batch:
        while True:
            if self._iterator is None:
                self._start_pass()
            try:
                batch = next(self._iterator)  # type: ignore[arg-type]
            except StopIteration:
                self._iterator = None
                continue
            self._position += 1
            return batch

    def _start_pass(self) -> None:
        self._pass_start = self.generator.get_state() if self.generator is not None else None
        self._iterator, self._position = iter(self.loader), 0

    def state_dict(self) -> dict[str, Any]:
        """Where the batches are: the pass's starting generator state and the batches taken."""
        return {
            "started": self._iterator is not None,
            "pass_start": self._pass_start,
            "position": self._position,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Go back to where :meth:`state_dict` was taken."""
        self._iterator, self._position = None, 0
        if not state["started"]:
            return
        current = self.generator.get_state() if self.generator is not None else None
        if self.generator is not None:
            self.generator.set_state(state["pass_start"])
        self._start_pass()
        for _ in range(int(state["position"])):
            next(self._iterator)  # type: ignore[arg-type]
            self._position += 1
        if self.generator is not None and current is not None:
            self.generator.set_state(current)


def to_device(batch: Batch, device: torch.device, non_blocking: bool = False) -> Batch:
    """Move a batch; ``non_blocking`` copies overlap with compute when memory is pinned."""
    images, targets = batch
    return (
        images.to(device, non_blocking=non_blocking),
        {k: v.to(device, non_blocking=non_blocking) for k, v in targets.items()},
    )
