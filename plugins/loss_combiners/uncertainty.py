"""Homoscedastic-uncertainty loss weighting."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from sparsekit.interfaces import ComponentConfig, LossCombiner


class UncertaintyWeighting(nn.Module):
    """Σ_t exp(−s_t)·L_t + s_t over the tasks present, s_t a learnable log-variance.

    With s_t = log σ_t² this is twice Kendall et al.'s Σ L_t/(2σ_t²) + log σ_t, so it has the same
    minimisers; it is the form the papers' code uses. Tasks absent from ``losses`` (e.g. in a
    meta-learning episode) contribute nothing, and their s_t receive no gradient.
    """

    def __init__(self, task_names: Sequence[str], init: float) -> None:
        super().__init__()
        self.task_names = list(task_names)
        self.log_vars = nn.Parameter(torch.full((len(self.task_names),), float(init)))

    def add_task(self, name: str, init: float = 0.0) -> None:
        """Start weighting a new task (used when a task is added for fine-tuning)."""
        if name in self.task_names:
            return
        self.task_names.append(name)
        self.log_vars = nn.Parameter(
            torch.cat([self.log_vars.detach(), self.log_vars.new_tensor([init])])
        )

    def forward(self, losses: dict[str, Tensor]) -> Tensor:
        total = self.log_vars.new_zeros(())
        for name, loss in losses.items():
            s = self.log_vars[self.task_names.index(name)]
            total = total + torch.exp(-s) * loss + s
        return total


class UncertaintyCombiner(LossCombiner):
    """Kendall et al.'s uncertainty weighting with learned per-task log-variances.

    References:
        Kendall, Gal & Cipolla, "Multi-task learning using uncertainty to weigh losses for scene
        geometry and semantics", CVPR 2018.
    """

    name = "uncertainty"
    is_default = True

    class Config(ComponentConfig):
        init_log_var: float = 0.0

    def build(self, task_names: Sequence[str]) -> nn.Module:
        return UncertaintyWeighting(task_names, self.config.init_log_var)
