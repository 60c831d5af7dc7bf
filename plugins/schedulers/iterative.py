"""``iterative``: prune to the target in ``rounds`` steps, fine-tuning between them.

The training after ``s₀ = floor(start · T)`` dense steps is split into ``k = rounds`` equal
fine-tuning periods; round ``i = 0 … k−1`` prunes at step ``tᵢ = s₀ + floor(i · (T − s₀) / k)``
to the level

- ``geometric`` (default): ``sᵢ = 1 − (1 − s_f)^((i+1)/k)``, the same fraction of the remaining
  weights in every round, as in iterative magnitude pruning;
- ``linear``: ``sᵢ = s_f · (i+1)/k``.

The last round reaches the target ``s_f`` exactly and is followed by ``(T − s₀)/k`` steps of
fine-tuning. Rounds that would fall on the same step (``T − s₀ < k``) merge, keeping the higher
level.

References:
    Han et al., "Learning both Weights and Connections for Efficient Neural Networks", NeurIPS
    2015 (iterative pruning and retraining; Table 5's Mask-2).
"""

from __future__ import annotations

import math
from typing import ClassVar, Literal

from pydantic import Field

from sparsekit.interfaces import ComponentConfig, SparsitySchedule, SparsityScheduler


class IterativeScheduler(SparsityScheduler):
    """``rounds`` prune steps, evenly spaced, each followed by fine-tuning.

    References:
        Han et al., "Learning both Weights and Connections for Efficient Neural Networks",
        NeurIPS 2015.
    """

    name: ClassVar[str] = "iterative"

    class Config(ComponentConfig):
        """Configuration of :class:`IterativeScheduler`.

        Attributes:
            rounds: k, the number of prune steps.
            start: the fraction of the steps trained dense before the first prune.
            rule: ``"geometric"`` (the same share of the remaining weights per round) or
                ``"linear"`` (the same share of all weights per round).
        """

        rounds: int = Field(3, ge=1)
        start: float = Field(0.0, ge=0.0, lt=1.0)
        rule: Literal["geometric", "linear"] = "geometric"

    config: Config

    def level(self, round_index: int, target: float) -> float:
        """The sparsity after round ``round_index`` (0-based)."""
        k = self.config.rounds
        if round_index == k - 1:
            return target
        if self.config.rule == "linear":
            return target * (round_index + 1) / k
        return min(target, 1.0 - (1.0 - target) ** ((round_index + 1) / k))

    def schedule(self, target: float, total_steps: int) -> SparsitySchedule:
        """``rounds`` updates from ``floor(start · T)`` on, evenly spaced; see the module doc."""
        first = math.floor(self.config.start * total_steps)
        span, k = total_steps - first, self.config.rounds
        by_step: dict[int, float] = {}
        for i in range(k):
            step = first + (i * span) // k
            by_step[step] = max(by_step.get(step, 0.0), self.level(i, target))
        steps = tuple(sorted(by_step))
        return SparsitySchedule(target, total_steps, steps, tuple(by_step[s] for s in steps))
