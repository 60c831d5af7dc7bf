"""Multi-task data sets."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from typing import TYPE_CHECKING

from torch.utils.data import Dataset

from sparsekit.errors import ConfigError
from sparsekit.interfaces.base import Component

if TYPE_CHECKING:
    from sparsekit.tasks import Task


#: The three disjoint splits of every data set.
SPLITS = ("train", "val", "test")


class DatasetProvider(Component):
    """Provides disjoint train/val/test splits of ``(image, {task: target})`` pairs.

    ``tasks()`` lists the :class:`sparsekit.tasks.Task` objects the data set provides;
    ``load(split, tasks)`` returns a ``torch.utils.data.Dataset`` of ``(image, {task: target})``
    pairs for ``train``, ``val`` or ``test``, with targets for the named tasks only. The three
    splits are disjoint.

    Kind ``dataset`` (hook ``sparsekit_register_datasets``).
    """

    #: Channels of the input images.
    in_channels: int = 3

    @abstractmethod
    def tasks(self) -> list[Task]:
        """Every task this data set provides, in its canonical order."""

    @abstractmethod
    def load(self, split: str, tasks: Sequence[str]) -> Dataset:
        """The ``split`` (one of ``train``, ``val``, ``test``) with targets for ``tasks`` only."""

    def select_tasks(self, names: Sequence[str] | None) -> list[Task]:
        """The tasks named (all when ``names`` is None).

        Raises:
            ConfigError: a name the data set does not provide (a ``ValueError``; the message
                lists the tasks it has).
        """
        available = {t.name: t for t in self.tasks()}
        if names is None:
            return list(available.values())
        unknown = [n for n in names if n not in available]
        if unknown:
            raise ConfigError(
                f"data set {self.name!r} has no task {', '.join(map(repr, unknown))}; "
                f"it has: {', '.join(available)}"
            )
        return [available[n] for n in names]
