"""``progressive``: gradual pruning during training on the cubic schedule of Zhu & Gupta.

From step ``t₀ = floor(start · T)`` the mask is updated every ``Δt = update_every`` steps,
``n = floor((floor(end · T) − t₀) / Δt)`` times after the first, to

    s_t = s_f + (s_i − s_f) · (1 − (t − t₀) / (n·Δt))³,   t = t₀, t₀ + Δt, …, t₀ + n·Δt,

with ``s_i = min(initial, s_f)``. The sparsity is ``s_i`` at ``t₀``, rises fast at first and
flattens as it reaches the target ``s_f`` at ``t₀ + n·Δt ≤ end · T``; the remaining steps train
at the target. With ``n = 0`` (too few steps for one interval) the single update at ``t₀`` goes
to the target.

References:
    Zhu & Gupta, "To prune, or not to prune: exploring the efficacy of pruning for model
    compression", ICLR Workshop 2018 (arXiv 2017), Eq. 1.
"""

from __future__ import annotations

import math
from typing import ClassVar

from pydantic import Field, model_validator

from sparsekit.interfaces import ComponentConfig, SparsitySchedule, SparsityScheduler


class ProgressiveScheduler(SparsityScheduler):
    """The cubic sparsity schedule of Zhu & Gupta, updated every ``update_every`` steps.

    References:
        Zhu & Gupta, "To prune, or not to prune: exploring the efficacy of pruning for model
        compression", 2017.
    """

    name: ClassVar[str] = "progressive"

    class Config(ComponentConfig):
        """Configuration of :class:`ProgressiveScheduler`.

        Attributes:
            start: t₀ as a fraction of the steps.
            end: the fraction of the steps by which the target is reached.
            update_every: Δt, the steps between mask updates.
            initial: s_i, the sparsity of the first update (capped at the target).
        """

        start: float = Field(0.0, ge=0.0, lt=1.0)
        end: float = Field(0.75, gt=0.0, le=1.0)
        update_every: int = Field(10, ge=1)
        initial: float = Field(0.0, ge=0.0, lt=1.0)

        @model_validator(mode="after")
        def _ordered(self) -> ProgressiveScheduler.Config:
            if self.end <= self.start:
                raise ValueError(f"end ({self.end}) must be after start ({self.start})")
            return self

    config: Config

    def schedule(self, target: float, total_steps: int) -> SparsitySchedule:
        """Updates at t₀ + jΔt, j = 0 … n, on the cubic curve; see the module doc."""
        cfg = self.config
        first = math.floor(cfg.start * total_steps)
        last = max(first, math.floor(cfg.end * total_steps))
        n = (last - first) // cfg.update_every
        initial = min(cfg.initial, target)
        if n == 0:
            return SparsitySchedule(target, total_steps, (first,), (target,))
        steps, levels = [], []
        for j in range(n + 1):
            level = target + (initial - target) * (1.0 - j / n) ** 3
            steps.append(first + j * cfg.update_every)
            levels.append(target if j == n else min(target, max(0.0, level)))
        return SparsitySchedule(target, total_steps, tuple(steps), tuple(levels))
