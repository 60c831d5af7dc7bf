"""Sparsity schedulers: when, and how far, the backbone is sparsified during training."""

from __future__ import annotations

import bisect
from abc import abstractmethod
from dataclasses import dataclass
from typing import Any

from sparsekit.interfaces.base import Component


@dataclass(frozen=True)
class SparsitySchedule:
    """A scheduler bound to a target and a step budget: a piecewise-constant sparsity.

    The mask is recomputed at every step of ``update_steps`` (step 0 is before the first optimiser
    step; step ``t ≥ 1`` is right after the ``t``-th). After update step ``update_steps[i]`` the
    backbone has sparsity ``levels[i]``; before the first update it is dense.

    Attributes:
        target: the final fraction of backbone parameters that are zero, in ``[0, 1)``.
        total_steps: the optimiser steps of the scheduled training.
        update_steps: strictly increasing steps in ``[0, total_steps]``.
        levels: the sparsity from each update step on, each in ``[0, target]``.
        regrow: whether update steps after the first are drop-and-grow steps (regrow zeroed
            groups with the scheduler's regrowth policy, then prune back to the level).

    Raises:
        ValueError: inconsistent steps or levels.
    """

    target: float
    total_steps: int
    update_steps: tuple[int, ...]
    levels: tuple[float, ...]
    regrow: bool = False

    def __post_init__(self) -> None:
        if not 0.0 <= self.target < 1.0:
            raise ValueError(f"target must be in [0, 1), got {self.target}")
        if self.total_steps < 0:
            raise ValueError(f"total_steps must be ≥ 0, got {self.total_steps}")
        if len(self.update_steps) != len(self.levels) or not self.update_steps:
            raise ValueError("update_steps and levels must be non-empty and of equal length")
        steps = self.update_steps
        increasing = all(b > a for a, b in zip(steps, steps[1:], strict=False))
        if not increasing or steps[0] < 0:
            raise ValueError(f"update steps must increase strictly from 0 on, got {steps}")
        if steps[-1] > self.total_steps:
            raise ValueError(f"update step {steps[-1]} is beyond total_steps {self.total_steps}")
        if any(not 0.0 <= s <= self.target for s in self.levels):
            raise ValueError(f"levels must lie in [0, target={self.target}], got {self.levels}")

    def sparsity_at(self, step: int) -> float:
        """The fraction of backbone parameters zero after step ``step`` (0.0 before any update)."""
        index = bisect.bisect_right(self.update_steps, step) - 1
        return self.levels[index] if index >= 0 else 0.0

    def is_update_step(self, step: int) -> bool:
        """Whether the mask is recomputed right after step ``step``."""
        index = bisect.bisect_left(self.update_steps, step)
        return index < len(self.update_steps) and self.update_steps[index] == step

    @property
    def dense_to_sparse(self) -> bool:
        """Whether the sparsity never decreases (every built-in schedule's case)."""
        return all(b >= a for a, b in zip(self.levels, self.levels[1:], strict=False))

    @property
    def settled_step(self) -> int:
        """The first step from which the sparsity no longer changes.

        Checkpoints from this step on have the final sparsity, so early stopping only considers
        those.
        """
        settled = self.update_steps[-1]
        for index in range(len(self.levels) - 1, 0, -1):
            if self.levels[index - 1] != self.levels[index]:
                break
            settled = self.update_steps[index - 1]
        return settled


class SparsityScheduler(Component):
    """Decides the sparsity of the backbone over training.

    A scheduler is configured by its own fields (rounds, update interval, ...) and learns the
    target and the step budget only when the experiment binds it with :meth:`schedule`; the
    returned :class:`SparsitySchedule` is a frozen value with ``sparsity_at(step)`` in
    ``[0, target]`` (ending at ``target``, never decreasing for a dense-to-sparse schedule) and
    ``is_update_step(step)``. ``regrowth()`` names the regrowth policy of drop-and-grow, or None.

    Kind ``scheduler`` (hook ``sparsekit_register_schedulers``).
    """

    @abstractmethod
    def schedule(self, target: float, total_steps: int) -> SparsitySchedule:
        """The schedule reaching ``target`` sparsity within ``total_steps`` optimiser steps.

        Its last level is ``target``, every level lies in ``[0, target]`` and a dense-to-sparse
        schedule's levels never decrease.
        """

    def regrowth(self) -> Any | None:
        """The regrowth policy spec (name or ``{"name": ...}`` dict) of drop-and-grow, or None."""
        return None
