"""``one_shot``: prune to the target once, then fine-tune at that sparsity.

With ``at = 0`` (default) the mask is computed at step 0, before the first optimiser step, from
the initial weights: with ``init: dense`` those of a trained dense multi-task model, so the run is
"train dense → prune once → fine-tune" with all ``steps`` spent fine-tuning. With ``at > 0`` the
first ``floor(at · steps)`` steps train dense within the run.

References:
    Janowsky, "Pruning versus clipping in neural networks", Phys. Rev. A 39, 1989 (one-shot
    magnitude pruning; Table 5's Mask-1).
"""

from __future__ import annotations

import math
from typing import ClassVar

from pydantic import Field

from sparsekit.interfaces import ComponentConfig, SparsitySchedule, SparsityScheduler


class OneShotScheduler(SparsityScheduler):
    """A single update to the target at step ``floor(at · total_steps)``.

    References:
        Janowsky, "Pruning versus clipping in neural networks", Phys. Rev. A 39, 1989.
    """

    name: ClassVar[str] = "one_shot"

    class Config(ComponentConfig):
        """Configuration of :class:`OneShotScheduler`.

        Attributes:
            at: the fraction of the steps trained dense before the single prune.
        """

        at: float = Field(0.0, ge=0.0, lt=1.0)

    config: Config

    def schedule(self, target: float, total_steps: int) -> SparsitySchedule:
        """One update at ``floor(at · total_steps)`` to ``target``."""
        step = math.floor(self.config.at * total_steps)
        return SparsitySchedule(target, total_steps, (step,), (target,))
