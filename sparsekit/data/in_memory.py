"""A data set held in memory (made by :mod:`sparsekit.data.adapters`), and what a run records
of it.

A run records an :class:`InMemoryData` as ``{"name": "in_memory", ...}`` with its tasks and
input channels: enough to rebuild and reload its model (``Result.load``), not its data, so
training again or fine-tuning needs the data passed again. ``dataset: {name: import, target:
...}`` makes a run rebuild its data itself.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import torch
from pydantic import Field
from torch import Tensor
from torch.utils.data import Dataset

from sparsekit.data.common import check_split
from sparsekit.data.tensor_dataset import MultiTaskTensorDataset
from sparsekit.errors import ConfigError
from sparsekit.interfaces import ComponentConfig, DatasetProvider
from sparsekit.tasks import AttributeTask, ClassificationTask, SegmentationTask, Task

#: The data-set name a run records for data given in memory. It names no plugin.
IN_MEMORY = "in_memory"


class InMemoryData(DatasetProvider):
    """A data set given in memory: three splits of ``(image, {task: target})`` and their tasks.

    Made by :func:`~sparsekit.data.from_tensors` or :func:`~sparsekit.data.from_dataset`. Not
    a registered plugin: a run records its tasks and input channels (:meth:`spec`), not its data.

    Args:
        splits: the ``train``, ``val`` and ``test`` data sets, each a
            :class:`~sparsekit.data.MultiTaskTensorDataset` or a :class:`TaskSubset`.
        tasks: the tasks every sample has targets for.
        in_channels: channels of the images.
        config: how the splits were made (a :class:`InMemoryData.Config`).
    """

    name: ClassVar[str] = IN_MEMORY

    class Config(ComponentConfig):
        """How an in-memory data set was made (recorded, not used to rebuild it).

        Attributes:
            source: ``tensors`` (``from_tensors``) or ``dataset`` (``from_dataset``).
            val_fraction: the validation share of a seeded split (None: splits were given).
            test_fraction: the test share of a seeded split (None: splits were given).
            split_seed: the seed of a seeded split (None: splits were given).
        """

        source: str = "tensors"
        val_fraction: float | None = Field(None, gt=0, lt=1)
        test_fraction: float | None = Field(None, gt=0, lt=1)
        split_seed: int | None = None

    config: Config

    def __init__(
        self,
        splits: Mapping[str, Dataset],
        tasks: Sequence[Task],
        in_channels: int,
        config: ComponentConfig | None = None,
        **params: Any,
    ) -> None:
        super().__init__(config, **params)
        self._splits: dict[str, Any] = dict(splits)
        self._tasks = list(tasks)
        self.in_channels = in_channels

    def tasks(self) -> list[Task]:
        return list(self._tasks)

    def load(self, split: str, tasks: Sequence[str]) -> Dataset:
        check_split(split)
        selected = self.select_tasks(tasks)
        data = self._splits[split]
        if isinstance(data, MultiTaskTensorDataset):
            return data.subset_tasks([t.name for t in selected])
        return TaskSubset(data.dataset, data.indices, selected)

    def spec(self) -> dict[str, Any]:
        """The config, the input channels and each task's name, class, level and outputs."""
        return {
            **super().spec(),
            "in_channels": self.in_channels,
            "tasks": [describe_task(task) for task in self._tasks],
        }


class TaskSubset(Dataset):
    """The samples ``indices`` of a data set, with targets for ``tasks`` only.

    A sample's targets are a dict by task name; a data set of one task may also yield the bare
    target, which becomes ``{name: target}``. Each target is given the form its task trains on
    (:func:`conform_target`).

    Args:
        dataset: yields ``(image, {task: target})`` pairs.
        indices: the samples kept, in order (None: every sample).
        tasks: the tasks whose targets are yielded.
    """

    def __init__(self, dataset: Dataset, indices: Sequence[int] | None, tasks: Sequence[Task]):
        self.dataset = dataset
        self.indices = None if indices is None else [int(i) for i in indices]
        self.tasks = list(tasks)

    def __len__(self) -> int:
        return len(self.dataset) if self.indices is None else len(self.indices)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> tuple[Tensor, dict[str, Tensor]]:
        source = index if self.indices is None else self.indices[index]
        image, targets = self.dataset[source]
        if not isinstance(targets, Mapping):
            targets = {self.tasks[0].name: targets}
        return image, {
            t.name: conform_target(t, targets[t.name], batched=False) for t in self.tasks
        }


def as_tensor(value: Any) -> Tensor:
    """``value`` as a tensor (a tensor is returned as it is)."""
    return value if isinstance(value, Tensor) else torch.as_tensor(value)


def conform_target(task: Task, target: Any, batched: bool) -> Tensor:
    """A target in the form ``task`` trains on: integer labels as int64, maps and attributes as
    float32, and a one-channel pixel map ``[H, W]`` as ``[1, H, W]`` (with a leading batch
    dimension when ``batched``)."""
    target = as_tensor(target)
    if isinstance(task, (SegmentationTask, ClassificationTask)):
        return target.long()
    if isinstance(task, AttributeTask):
        return target.float()
    if task.level == "pixel":
        lead = 1 if batched else 0
        if target.dim() == lead + 2 and task.out_channels == 1:
            target = target.unsqueeze(lead)
        return target.float()
    return target


def describe_task(task: Task) -> dict[str, Any]:
    """What a run records of a task: enough to rebuild its head."""
    cls = type(task)
    return {
        "name": task.name,
        "class": f"{cls.__module__}.{cls.__qualname__}",
        "level": task.level,
        "out_channels": task.out_channels,
    }


class RecordedTask(Task):
    """A task as a run recorded it (:func:`describe_task`): it fits heads, it cannot score.

    Raises:
        ConfigError: from :meth:`loss` and :meth:`meter`: the run's data was given in memory.
    """

    def __init__(self, name: str, level: Any, out_channels: int, class_path: str = "") -> None:
        super().__init__(name, level, out_channels)
        self.class_path = class_path

    def loss(self, pred: Tensor, target: Tensor) -> Tensor:
        raise ConfigError(in_memory_message())

    def meter(self) -> Any:
        raise ConfigError(in_memory_message())


def recorded_tasks(spec: Mapping[str, Any]) -> tuple[list[Task], int]:
    """The tasks and input channels an in-memory data set's record holds.

    Raises:
        ConfigError: the record lacks them.
    """
    try:
        tasks: list[Task] = [
            RecordedTask(t["name"], t["level"], int(t["out_channels"]), t.get("class", ""))
            for t in spec["tasks"]
        ]
        return tasks, int(spec["in_channels"])
    except (KeyError, TypeError) as exc:
        raise ConfigError(f"an {IN_MEMORY!r} data set record lacks {exc}: {dict(spec)}") from None


def in_memory_message() -> str:
    """Why an in-memory data set cannot be rebuilt from a run's config, and what to do."""
    return (
        "this run's data was given in memory (sparsekit.data.from_tensors or from_dataset), "
        "which sparsekit cannot load again from a config; pass the data set again where the "
        "call takes one (finetune(result, dataset=...)), or configure it as an import path, "
        "dataset: {name: import, target: 'package.module:make_dataset'}"
    )
