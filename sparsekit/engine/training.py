"""Building blocks shared by learners: devices, loaders, losses, evaluation, early stopping."""

from __future__ import annotations

import copy
import random
from collections.abc import Iterator, Sequence
from contextlib import nullcontext
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from sparsekit.tasks import Task

Batch = tuple[Tensor, dict[str, Tensor]]


def resolve_device(device: str) -> torch.device:
    """``"auto"`` picks CUDA when present, else the CPU; anything else is used as given."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {device!r} was requested but no CUDA device is available")
    return resolved


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch; returns a generator for data order."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


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


def task_losses(
    outputs: dict[str, Tensor], targets: dict[str, Tensor], tasks: Sequence[Task]
) -> dict[str, Tensor]:
    """Each task's loss; the network ran once for all tasks."""
    return {t.name: t.loss(outputs[t.name], targets[t.name]) for t in tasks}


def autocast(device: torch.device, enabled: bool) -> Any:
    """float16 autocast on CUDA when ``enabled``; a no-op context otherwise."""
    if enabled and device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.float16)
    return nullcontext()


@torch.no_grad()
def evaluate(
    model: nn.Module,
    dataset: Dataset,
    tasks: Sequence[Task],
    combiner: nn.Module,
    device: torch.device,
    batch_size: int = 64,
    non_blocking: bool = False,
) -> tuple[float, dict[str, dict[str, float]]]:
    """Combined loss (mean over the split) and every task's metrics, in eval mode.

    BatchNorm uses its running statistics, so nothing of the evaluated split enters the model.
    """
    was_training = model.training
    model.eval()
    meters = {t.name: t.meter() for t in tasks}
    total_loss, count = 0.0, 0
    for batch in make_loader(dataset, batch_size, shuffle=False):
        images, targets = to_device(batch, device, non_blocking)
        outputs = model(images, [t.name for t in tasks])
        loss = combiner(task_losses(outputs, targets, tasks))
        total_loss += float(loss) * images.shape[0]
        count += images.shape[0]
        for t in tasks:
            meters[t.name].update(outputs[t.name].float(), targets[t.name])
    model.train(was_training)
    metrics = {name: meter.compute() for name, meter in meters.items()}
    return total_loss / max(count, 1), metrics


class EarlyStopping:
    """Keeps the weights with the lowest validation loss and counts evaluations without progress.

    Args:
        patience: evaluations without improvement before ``should_stop``; None never stops.
        modules: the modules whose state is checkpointed together (model and loss combiner).
    """

    def __init__(self, patience: int | None, modules: Sequence[nn.Module]) -> None:
        self.patience = patience
        self.modules = list(modules)
        self.best_loss = float("inf")
        self.best_step = 0
        self.bad_evals = 0
        self._best_state: list[dict[str, Tensor]] | None = None

    def update(self, step: int, val_loss: float) -> bool:
        """Record an evaluation; returns True if it is the best so far."""
        if val_loss < self.best_loss:
            self.best_loss, self.best_step, self.bad_evals = val_loss, step, 0
            self._best_state = [copy.deepcopy(m.state_dict()) for m in self.modules]
            return True
        self.bad_evals += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.patience is not None and self.bad_evals >= self.patience

    def restore_best(self) -> None:
        """Load the best weights back into the modules (one model for every task)."""
        if self._best_state is not None:
            for module, state in zip(self.modules, self._best_state, strict=True):
                module.load_state_dict(state)
