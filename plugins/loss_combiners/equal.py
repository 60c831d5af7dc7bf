"""Equal weighting: the plain sum of task losses."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from sparsekit.interfaces import ComponentConfig, LossCombiner


class EqualWeighting(nn.Module):
    """Σ_t L_t over the tasks present (no parameters)."""

    def __init__(self, task_names: Sequence[str]) -> None:
        super().__init__()
        self.task_names = list(task_names)

    def add_task(self, name: str, init: float = 0.0) -> None:
        if name not in self.task_names:
            self.task_names.append(name)

    def forward(self, losses: dict[str, Tensor]) -> Tensor:
        return sum(losses.values())  # type: ignore[return-value]


class EqualCombiner(LossCombiner):
    """Every task weighted 1."""

    name = "equal"

    class Config(ComponentConfig):
        pass

    def build(self, task_names: Sequence[str]) -> nn.Module:
        return EqualWeighting(task_names)
