"""Loss combiners: how the per-task losses become one multi-task objective."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Mapping, Sequence

from torch import Tensor, nn

from sparsekit.interfaces.base import Component


class CombinerModule(nn.Module):
    """The module a :class:`LossCombiner` builds; its parameters are trained with the model."""

    @abstractmethod
    def forward(self, losses: Mapping[str, Tensor]) -> Tensor:
        """One scalar from the losses of any subset of the tasks it was built for."""

    @abstractmethod
    def add_task(self, name: str) -> None:
        """Start combining a task added after training (fine-tuning on an unseen task).

        A module with learned weights gives the new task its initial weight; one without
        weights only extends its task list.
        """


class LossCombiner(Component):
    """Builds the :class:`CombinerModule` that turns ``{task: loss}`` into one scalar.

    ``build(task_names)`` returns a module whose ``forward(losses)`` combines the losses of any
    subset of the tasks (a meta-learning episode's, say) into one scalar, and whose
    ``add_task(name)`` extends it to a task added for fine-tuning. Its parameters, if any, are
    optimised with the model.

    Kind ``loss_combiner`` (hook ``sparsekit_register_loss_combiners``).
    """

    @abstractmethod
    def build(self, task_names: Sequence[str]) -> CombinerModule:
        """A module whose ``forward(losses)`` accepts the losses of any subset of
        ``task_names``."""
