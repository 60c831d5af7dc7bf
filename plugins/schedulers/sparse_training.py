"""``sparse_training``: sparse from the first step, the sparsity held for the whole run.

The mask is computed at step 0 from the initial weights (random with ``init: random``) at the
target and held. With a ``regrowth`` policy the run becomes drop-and-grow (SET / RigL style):
every ``update_every`` steps up to ``floor(end · T)`` the policy regrows some entirely-zero input
channel groups (how many, and how they are initialised, is the policy's choice: ``random`` with
probability r_p, ``gradient`` the largest-gradient ones), those groups are kept, and the
lowest-ranked live groups by the mask criterion are dropped until the sparsity is the target
again (to one group). Regrowth works on channel groups, so drop-and-grow needs the ``channel``
granularity.

References:
    Mocanu et al., "Scalable training of artificial neural networks with adaptive sparse
    connectivity inspired by network science", Nature Communications 2018 (SET); Evci et al.,
    "Rigging the Lottery: Making All Tickets Winners", ICML 2020 (RigL).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

from pydantic import Field, field_validator

from sparsekit.interfaces import ComponentConfig, SparsitySchedule, SparsityScheduler


class SparseTrainingScheduler(SparsityScheduler):
    """The target from step 0 on; optional drop-and-grow every ``update_every`` steps.

    References:
        Mocanu et al. 2018 (SET); Evci et al., ICML 2020 (RigL).
    """

    name: ClassVar[str] = "sparse_training"

    class Config(ComponentConfig):
        """Configuration of :class:`SparseTrainingScheduler`.

        Attributes:
            regrowth: a regrowth policy (name or ``{"name": ..., **params}`` dict of kind
                ``regrowth``) for drop-and-grow, or None to hold the initial mask.
            update_every: steps between drop-and-grow updates.
            end: the fraction of the steps after which the mask is no longer changed.
        """

        regrowth: Any = None
        update_every: int = Field(50, ge=1)
        end: float = Field(0.75, ge=0.0, le=1.0)

        @field_validator("regrowth", mode="before")
        @classmethod
        def _regrowth_spec(cls, value: Any) -> Any:
            if value is None or isinstance(value, dict) and isinstance(value.get("name"), str):
                return value
            if isinstance(value, str):
                return {"name": value}
            raise ValueError(f"regrowth is None, a name or a {{'name': ...}} dict, got {value!r}")

    config: Config

    def regrowth(self) -> Any | None:
        """The drop-and-grow regrowth policy spec, or None."""
        return self.config.regrowth

    def schedule(self, target: float, total_steps: int) -> SparsitySchedule:
        """Step 0 at the target; with regrowth also every ``update_every`` steps to ``end · T``."""
        steps = [0]
        if self.config.regrowth is not None:
            last = math.floor(self.config.end * total_steps)
            steps += list(range(self.config.update_every, last + 1, self.config.update_every))
        return SparsitySchedule(
            target,
            total_steps,
            tuple(steps),
            (target,) * len(steps),
            regrow=self.config.regrowth is not None,
        )
