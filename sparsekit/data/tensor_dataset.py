"""A multi-task data set held in memory as tensors."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from torch import Tensor
from torch.utils.data import Dataset


class MultiTaskTensorDataset(Dataset):
    """``(image, {task: target})`` pairs indexed out of stacked tensors, without copying them.

    Args:
        images: the inputs, ``[N, C, H, W]``.
        targets: one tensor per task whose first dimension is ``N``.

    Raises:
        ValueError: if ``images`` is not 4-D or a target does not have ``N`` entries.
    """

    def __init__(self, images: Tensor, targets: Mapping[str, Tensor]) -> None:
        if images.dim() != 4:
            raise ValueError(f"images must be [N, C, H, W], got shape {tuple(images.shape)}")
        n = images.shape[0]
        wrong = {name: t.shape[0] if t.dim() else 0 for name, t in targets.items()}
        wrong = {name: m for name, m in wrong.items() if m != n}
        if wrong:
            raise ValueError(f"every target needs {n} entries like the images; got {wrong}")
        self.images = images
        self.targets = dict(targets)

    @property
    def task_names(self) -> list[str]:
        """The tasks this data set yields targets for, in order."""
        return list(self.targets)

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> tuple[Tensor, dict[str, Tensor]]:
        return self.images[index], {name: t[index] for name, t in self.targets.items()}

    def subset_tasks(self, names: Sequence[str]) -> MultiTaskTensorDataset:
        """A view yielding targets for ``names`` only; the tensors are shared, not copied.

        Raises:
            KeyError: if a name is not one of this data set's tasks.
        """
        unknown = [n for n in names if n not in self.targets]
        if unknown:
            raise KeyError(f"no targets for {unknown}; available: {self.task_names}")
        return MultiTaskTensorDataset(self.images, {n: self.targets[n] for n in names})
