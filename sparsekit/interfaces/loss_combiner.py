"""Combining per-task losses into one multi-task objective."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence

from torch import nn

from sparsekit.interfaces.base import Component


class LossCombiner(Component):
    """Builds the module that turns ``{task: loss}`` into one scalar."""

    @abstractmethod
    def build(self, task_names: Sequence[str]) -> nn.Module:
        """A module whose ``forward(losses)`` accepts the losses of any subset of ``task_names``.

        The module also implements ``add_task(name)``, which starts combining a task added after
        training (fine-tuning on an unseen task); a module with learned weights gives the new
        task its initial weight.
        """
