"""Multi-task architectures."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from typing import TYPE_CHECKING

from torch import nn

from sparsekit.interfaces.base import Component

if TYPE_CHECKING:
    from sparsekit.nn import MultiTaskNet
    from sparsekit.tasks import Task


class ModelBuilder(Component):
    """Builds a hard-parameter-sharing multi-task network for a list of tasks.

    ``build(tasks, in_channels)`` returns a :class:`sparsekit.nn.MultiTaskNet`: one shared
    ``backbone`` and one head per task, randomly initialised. Sparsity acts on the backbone's
    conv weights only.

    Kind ``model`` (hook ``sparsekit_register_models``).
    """

    @abstractmethod
    def build(self, tasks: Sequence[Task], in_channels: int) -> MultiTaskNet:
        """One shared backbone and one head per task, randomly initialised."""

    @abstractmethod
    def build_head(self, task: Task, backbone_channels: int) -> nn.Module:
        """A fresh head for ``task`` on top of a backbone with ``backbone_channels`` outputs."""
