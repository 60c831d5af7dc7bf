"""Any data as a sparsekit data set: tensors in memory (:func:`from_tensors`) or a torch
``Dataset`` (:func:`from_dataset`), described by task declarations.

Both return an :class:`~sparsekit.data.in_memory.InMemoryData`, a
:class:`~sparsekit.interfaces.DatasetProvider` that ``Experiment(dataset=...)`` takes as it is.
Its splits are given explicitly (indices, or one data set per split) or drawn once from a seed:
``test_fraction`` and ``val_fraction`` of the samples (each rounded, at least one sample) go to
the test and validation splits, the rest to training. Targets are checked when the data set is
made: all of them for tensors, the first sample of each split for a ``Dataset``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset

from sparsekit.data.in_memory import InMemoryData, TaskSubset, as_tensor, conform_target
from sparsekit.data.tensor_dataset import MultiTaskTensorDataset
from sparsekit.errors import ConfigError
from sparsekit.interfaces.data import SPLITS
from sparsekit.tasks import ClassificationTask, SegmentationTask, Task

#: Where a split comes from: indices into one data set.
SplitSpec = Sequence[int] | Tensor


def from_tensors(
    images: Tensor,
    targets: Mapping[str, Tensor],
    tasks: Sequence[Task],
    splits: Mapping[str, SplitSpec] | None = None,
    val_fraction: float = 0.2,
    test_fraction: float = 0.2,
    seed: int = 0,
) -> InMemoryData:
    """A data set of images and per-task targets held as tensors.

    Example::

        data = from_tensors(images, {"segmentation": labels, "depth": depth},
                            tasks=[SegmentationTask("segmentation", 5), DepthTask()])

    Args:
        images: ``[N, C, H, W]`` float images (normalise them as the backbone expects).
        targets: one tensor per task, ``N`` entries each: segmentation labels ``[N, H, W]``
            (integers in ``[0, K)`` or the task's ignore index), other pixel-level targets
            ``[N, out_channels, H, W]`` (``[N, H, W]`` for one channel), class indices ``[N]``,
            binary attributes ``[N]`` in {0, 1}.
        tasks: one declaration per target, named as its key.
        splits: ``{"train": indices, "val": indices, "test": indices}``, disjoint; None draws
            them from ``seed`` (see the module docstring).
        val_fraction: the validation share of a drawn split.
        test_fraction: the test share of a drawn split.
        seed: the seed of a drawn split.

    Raises:
        ConfigError: images that are not 4-D, tasks and targets that do not match, a target of
            the wrong length, shape or range, or splits that overlap, are out of range or empty.
    """
    if not isinstance(images, Tensor) or images.dim() != 4 or not images.is_floating_point():
        got = list(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise ConfigError(f"images must be a float tensor [N, C, H, W], got {got}")
    _check_task_names(tasks, list(targets))
    n = images.shape[0]
    checked = {t.name: _checked_target(t, targets[t.name], n, images.shape[-2:]) for t in tasks}
    indices = _split_indices(n, splits, val_fraction, test_fraction, seed)
    data = {
        split: MultiTaskTensorDataset(images[idx], {k: v[idx] for k, v in checked.items()})
        for split, idx in indices.items()
    }
    return InMemoryData(data, tasks, images.shape[1], _split_config("tensors", splits, locals()))


def from_dataset(
    dataset: Dataset | Mapping[str, Dataset],
    tasks: Sequence[Task],
    splits: Mapping[str, SplitSpec] | None = None,
    val_fraction: float = 0.2,
    test_fraction: float = 0.2,
    seed: int = 0,
) -> InMemoryData:
    """A data set from a torch ``Dataset`` of ``(image, {task: target})`` pairs.

    Images are ``[C, H, W]`` tensors; targets are as in :func:`from_tensors`, one sample each
    (a data set of one task may yield the bare target). The first sample of every split is
    checked; the rest are read as training reads them.

    Args:
        dataset: one data set (split by ``splits`` or a seed), or ``{"train": ..., "val": ...,
            "test": ...}``, one data set per split.
        tasks: the tasks, named as the targets' keys.
        splits: indices per split into ``dataset``; None draws them from ``seed``.
        val_fraction: the validation share of a drawn split.
        test_fraction: the test share of a drawn split.
        seed: the seed of a drawn split.

    Raises:
        ConfigError: a split missing or empty, a first sample that is not ``(image, targets)``
            with a target per task of the right shape, or splits given twice.
    """
    _check_task_names(tasks, None)
    if isinstance(dataset, Mapping):
        if splits is not None or set(dataset) != set(SPLITS):
            raise ConfigError(
                f"give either one data set per split (keys {', '.join(SPLITS)}) or one data set "
                f"and its splits; got keys {sorted(dataset)} and splits={splits is not None}"
            )
        data = {split: TaskSubset(dataset[split], None, tasks) for split in SPLITS}
    else:
        n = len(dataset)  # type: ignore[arg-type]
        indices = _split_indices(n, splits, val_fraction, test_fraction, seed)
        data = {split: TaskSubset(dataset, idx.tolist(), tasks) for split, idx in indices.items()}
    channels = {split: _check_first_sample(split, subset, tasks) for split, subset in data.items()}
    if len(set(channels.values())) != 1:
        raise ConfigError(f"the splits' images have different channel counts: {channels}")
    given = splits is not None or isinstance(dataset, Mapping)
    config = _split_config("dataset", {} if given else None, locals())
    return InMemoryData(data, tasks, channels["train"], config)


def _split_config(source: str, splits: Any, args: Mapping[str, Any]) -> InMemoryData.Config:
    if splits is not None:
        return InMemoryData.Config(source=source)
    return InMemoryData.Config(
        source=source,
        val_fraction=args["val_fraction"],
        test_fraction=args["test_fraction"],
        split_seed=args["seed"],
    )


def _check_task_names(tasks: Sequence[Task], keys: list[str] | None) -> None:
    names = [t.name for t in tasks]
    if not names or len(set(names)) != len(names) or not all(isinstance(t, Task) for t in tasks):
        raise ConfigError(f"tasks must be task declarations with unique names, got {tasks!r}")
    if keys is not None and set(keys) != set(names):
        missing, extra = sorted(set(names) - set(keys)), sorted(set(keys) - set(names))
        raise ConfigError(
            f"every task needs a target of its name and every target a task: no target for "
            f"{missing or 'none'}, no task for {extra or 'none'}"
        )


def _checked_target(task: Task, target: Any, n: int, size: Sequence[int]) -> Tensor:
    """``target`` of ``n`` samples in the form ``task`` trains on (raises ConfigError)."""
    target = as_tensor(target)
    if target.dim() == 0 or target.shape[0] != n:
        got = target.shape[0] if target.dim() else "a scalar"
        raise ConfigError(f"task {task.name!r}: {got} targets for {n} images")
    return _checked_sample_target(task, target, tuple(size), batched=True)


def _checked_sample_target(
    task: Task, target: Tensor, size: tuple[int, ...], batched: bool
) -> Tensor:
    """``target`` conformed to ``task`` (:func:`conform_target`) once its shape and range are
    checked (raises ConfigError)."""
    lead = (target.shape[0],) if batched else ()
    where = f"task {task.name!r}"
    labels = isinstance(task, (SegmentationTask, ClassificationTask))
    if labels and target.is_floating_point() and not torch.equal(target, target.round()):
        raise ConfigError(f"{where}: class labels must be integers, got {target.dtype} values")
    target = conform_target(task, target, batched)
    if isinstance(task, SegmentationTask):
        _expect(target, (*lead, *size), where, "labels")
        _expect_integer_range(target, task.num_classes, task.ignore_index, where)
    elif isinstance(task, ClassificationTask):
        _expect(target, lead, where, "class indices")
        _expect_integer_range(target, task.num_classes, None, where)
    elif task.level == "pixel":
        _expect(target, (*lead, task.out_channels, *size), where, "maps")
    elif task.level == "image" and task.out_channels == 1:
        _expect(target, lead, where, "values")
    return target


def _expect(target: Tensor, shape: tuple[int, ...], where: str, what: str) -> None:
    if tuple(target.shape) != shape:
        raise ConfigError(
            f"{where}: expected {what} of shape {list(shape)}, got {list(target.shape)}"
        )


def _expect_integer_range(target: Tensor, classes: int, ignore: int | None, where: str) -> None:
    valid = target if ignore is None else target[target != ignore]
    if valid.numel() and (valid.min() < 0 or valid.max() >= classes):
        allowed = f"[0, {classes})" + ("" if ignore is None else f" or {ignore} (ignored)")
        raise ConfigError(
            f"{where}: labels must be in {allowed}; found {int(valid.min())}..{int(valid.max())}"
        )


def _split_indices(
    n: int, splits: Mapping[str, SplitSpec] | None, val: float, test: float, seed: int
) -> dict[str, Tensor]:
    """Sorted sample indices per split: the given ones, checked, or drawn from ``seed``."""
    if splits is None:
        if not (0 < val < 1 and 0 < test < 1):
            raise ConfigError(
                f"val_fraction and test_fraction must be in (0, 1), got {val}, {test}"
            )
        n_val, n_test = max(1, round(n * val)), max(1, round(n * test))
        if n - n_val - n_test < 1:
            raise ConfigError(f"{n} samples are too few for a train, a val and a test split")
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
        parts = {"test": order[:n_test], "val": order[n_test : n_test + n_val]}
        parts["train"] = order[n_test + n_val :]
        return {split: parts[split].sort().values for split in SPLITS}
    if set(splits) != set(SPLITS):
        raise ConfigError(
            f"splits needs exactly the keys {', '.join(SPLITS)}, got {sorted(splits)}"
        )
    result = {split: torch.as_tensor(splits[split], dtype=torch.long).flatten() for split in SPLITS}
    every = torch.cat(list(result.values()))
    empty = [split for split, idx in result.items() if idx.numel() == 0]
    if empty or every.min() < 0 or every.max() >= n or every.unique().numel() != every.numel():
        raise ConfigError(
            f"splits must be non-empty, disjoint indices in [0, {n}); "
            f"empty: {empty or 'none'}, sizes: {[int(v.numel()) for v in result.values()]}"
        )
    return result


def _check_first_sample(split: str, data: TaskSubset, tasks: Sequence[Task]) -> int:
    """Checks the first sample of a split; returns its image's channels."""
    if len(data) == 0:
        raise ConfigError(f"the {split} split is empty")
    first = 0 if data.indices is None else data.indices[0]
    try:
        image, targets = data.dataset[first]
        if not isinstance(targets, Mapping):
            targets = {tasks[0].name: targets}
        targets = {task.name: as_tensor(targets[task.name]) for task in tasks}
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise ConfigError(
            f"the {split} split's first sample is not (image, {{task: target}}) with a target "
            f"for every task ({[t.name for t in tasks]}): {type(exc).__name__}: {exc}"
        ) from None
    if not isinstance(image, Tensor) or image.dim() != 3:
        got = list(image.shape) if isinstance(image, Tensor) else type(image).__name__
        raise ConfigError(f"the {split} split's images must be tensors [C, H, W], got {got}")
    for task in tasks:
        _checked_sample_target(task, targets[task.name], tuple(image.shape[-2:]), batched=False)
    return int(image.shape[0])
