"""Tiny stand-ins of every component kind the contract suite needs to run a plugin.

A third-party plugin is checked against these, not against sparsekit's built-ins, so its
contract tests pass without the built-ins installed: a two-task in-memory data set, a two-conv
model, an equal-weight combiner, a channel-group penalty and a plain SGD optimiser.
:func:`contract_components` registers them for the duration of a check.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from sparsekit.config import OptimizerConfig
from sparsekit.data.tensor_dataset import MultiTaskTensorDataset
from sparsekit.interfaces import (
    CombinerModule,
    Component,
    ComponentConfig,
    DatasetProvider,
    LossCombiner,
    ModelBuilder,
    OptimizerKind,
    Penalty,
)
from sparsekit.nn import MultiTaskNet
from sparsekit.nn.groups import group_rows, zero_channel_groups
from sparsekit.nn.heads import DenseHead, ImageHead, assemble_multitask_net
from sparsekit.registry import get_registry
from sparsekit.tasks import DepthTask, SegmentationTask, Task

#: Images per split of the contract data set, and their side.
SPLIT_SIZES = {"train": 24, "val": 8, "test": 8}
IMAGE_SIZE = 16


class ContractDataset(DatasetProvider):
    """Two pixel-level tasks (3-class ``segmentation``, ``depth``) on random 16×16 images."""

    name: ClassVar[str] = "contract_dataset"

    class Config(ComponentConfig):
        """No parameters."""

    def tasks(self) -> list[Task]:
        return [SegmentationTask("segmentation", 3), DepthTask("depth")]

    def load(self, split: str, tasks: Sequence[str]) -> MultiTaskTensorDataset:
        names = [t.name for t in self.select_tasks(tasks)]
        gen = torch.Generator().manual_seed(list(SPLIT_SIZES).index(split))
        n, size = SPLIT_SIZES[split], IMAGE_SIZE
        images = torch.rand(n, 3, size, size, generator=gen)
        # Targets that depend on the image, so there is something to learn.
        targets = {
            "segmentation": (images.mean(dim=1) * 3).long().clamp(max=2),
            "depth": 1.0 + images[:, :1],
        }
        return MultiTaskTensorDataset(images, {k: targets[k] for k in names})


class ContractModel(ModelBuilder):
    """Two 3×3 convs with BatchNorm and ReLU as the backbone; the shared heads."""

    name: ClassVar[str] = "contract_model"

    class Config(ComponentConfig):
        """No parameters."""

    def build(self, tasks: Sequence[Task], in_channels: int) -> MultiTaskNet:
        backbone = nn.Sequential(
            nn.Conv2d(in_channels, 6, 3, padding=1, bias=False),
            nn.BatchNorm2d(6),
            nn.ReLU(),
            nn.Conv2d(6, 8, 3, padding=1, bias=False),
            nn.BatchNorm2d(8),
            nn.ReLU(),
        )
        return assemble_multitask_net(backbone, 8, tasks, self.build_head)

    def build_head(self, task: Task, backbone_channels: int) -> nn.Module:
        head = DenseHead if task.level == "pixel" else ImageHead
        return head(backbone_channels, task.out_channels, 8)


class EqualSum(CombinerModule):
    """The plain sum of the losses given."""

    def __init__(self, task_names: Sequence[str]) -> None:
        super().__init__()
        self.task_names = list(task_names)

    def forward(self, losses: Mapping[str, Tensor]) -> Tensor:
        return torch.stack(list(losses.values())).sum()

    def add_task(self, name: str) -> None:
        if name not in self.task_names:
            self.task_names.append(name)


class ContractCombiner(LossCombiner):
    """Every task weighted 1."""

    name: ClassVar[str] = "contract_combiner"

    class Config(ComponentConfig):
        """No parameters."""

    def build(self, task_names: Sequence[str]) -> CombinerModule:
        return EqualSum(task_names)


class ContractPenalty(Penalty):
    """Channel-group lasso with its plain prox (group soft-thresholding)."""

    name: ClassVar[str] = "contract_penalty"
    granularity = "channel"

    class Config(ComponentConfig):
        """No parameters."""

    def value(self, weight: Tensor) -> Tensor:
        rows = group_rows(weight)
        return rows.shape[1] ** 0.5 * rows.norm(dim=1).sum()

    def prox(self, weight: Tensor, step: Any, lam: Any, precond: Tensor | None = None) -> Tensor:
        rows = group_rows(weight)
        tau = step * lam * rows.shape[1] ** 0.5
        norms = rows.norm(dim=1).clamp_min(1e-12)
        scale = (1 - tau / norms).clamp_min(0)
        return weight * scale.reshape(1, -1, *([1] * (weight.dim() - 2)))

    def active_mask(self, weight: Tensor) -> Tensor:
        return ~zero_channel_groups(weight)


class ContractSGD(OptimizerKind):
    """Plain SGD with the config's lr, momentum and weight decay; the prox is the plain one."""

    name: ClassVar[str] = "contract_sgd"

    class Config(ComponentConfig):
        """No parameters."""

    def torch_optimizer(
        self, params: Iterable[Any], config: OptimizerConfig
    ) -> torch.optim.Optimizer:
        return torch.optim.SGD(
            params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
        )


DOUBLES: dict[str, type] = {
    "dataset": ContractDataset,
    "model": ContractModel,
    "loss_combiner": ContractCombiner,
    "penalty": ContractPenalty,
    "optimizer": ContractSGD,
}


@contextlib.contextmanager
def contract_components() -> Iterator[None]:
    """The doubles registered in the process's registry for the duration (then removed)."""
    registry = get_registry()
    added = [kind for kind, cls in DOUBLES.items() if cls.name not in registry.names(kind)]
    for kind in added:
        registry.add(kind, DOUBLES[kind], "sparsekit.testing", "sparsekit.testing")
    try:
        yield
    finally:
        for kind in added:
            registry.remove(kind, DOUBLES[kind].name)


def make_instance(cls: type[Component], workdir: Path) -> Any:
    """A working instance built from the class's ``example_params``."""
    return cls(cls.Config(**cls.example_params(workdir)))
