"""The pruner a learner drives through a scheduled run.

:class:`Pruner` carries a :class:`~sparsekit.interfaces.SparsitySchedule` through training: at
every update step it recomputes the keep masks with the criterion and enforces them with a
:class:`~sparsekit.nn.masking.MaskSet`, so the masked weights, and their optimiser state,
stay exactly zero after every optimiser step. The criterion's keep masks zero the scheduled
fraction exactly (:func:`sparsekit.nn.groups.select_keep`). Entries already masked are zeroed
first at the next update, so a dense-to-sparse schedule's masks are nested. With a regrowth
policy, later update steps are drop-and-grow steps: the policy regrows some zeroed groups, which
are then kept, and the lowest-scored live groups are dropped to return to the level.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from sparsekit.interfaces import MaskCriterion, RegrowthPolicy, SparsitySchedule
from sparsekit.nn.groups import Granularity, check_granularity, zeroed_parameters
from sparsekit.nn.masking import MaskSet
from sparsekit.nn.multitask import MultiTaskNet, backbone_conv_weights


class Pruner:
    """Applies a sparsity schedule to a model's backbone while a learner trains it.

    A learner that supports schedules calls :meth:`start` with its optimiser before the first
    step, :meth:`after_step` after every optimiser step and :meth:`stop` when training ends.

    Args:
        model: the network whose backbone conv weights are masked.
        schedule: the bound schedule.
        criterion: the mask criterion ranking groups or elements.
        granularity: ``"channel"`` or ``"element"``.
        generator: the pruner's own source of randomness (criterion and regrowth).
        regrowth: the drop-and-grow regrowth policy, or None.
    """

    def __init__(
        self,
        model: MultiTaskNet,
        schedule: SparsitySchedule,
        criterion: MaskCriterion,
        granularity: Granularity,
        generator: torch.Generator,
        regrowth: RegrowthPolicy | None = None,
    ) -> None:
        check_granularity(granularity)
        self.model, self.schedule, self.criterion = model, schedule, criterion
        self.granularity, self.generator, self.regrowth = granularity, generator, regrowth
        self.weights = backbone_conv_weights(model)
        self.masks: MaskSet | None = None
        self.updates: list[dict[str, float]] = []
        self._optimizer: Any = None
        self._handles: Any = None
        self._grad_hook: Any = None
        self._grads: dict[str, Tensor] | None = None
        self._step = 0

    def start(self, optimizer: Any) -> None:
        """Hook into ``optimizer`` and apply the step-0 update if the schedule has one."""
        self._optimizer, self._step = optimizer, 0
        if self.regrowth is not None:
            # Registered before any MaskSet hook, so the gradients are seen before masking.
            inner = getattr(optimizer, "inner", optimizer)
            self._grad_hook = inner.register_step_pre_hook(lambda o, a, k: self._capture())
        if self.schedule.is_update_step(0):
            self._update(0)

    def _capture(self) -> None:
        if self.schedule.is_update_step(self._step + 1):
            self._grads = {
                n: w.grad.detach().clone() for n, w in self.weights.items() if w.grad is not None
            }

    def after_step(self, step: int) -> None:
        """Recompute the masks if ``step`` is an update step of the schedule."""
        self._step = step
        if self.schedule.is_update_step(step):
            self._update(step)

    def settled(self, step: int) -> bool:
        """Whether the sparsity is final from ``step`` on (checkpoints fit for early stopping)."""
        return step >= self.schedule.settled_step

    def state_dict(self) -> dict[str, Any]:
        """The masks, the updates so far, the last step and the pruning generator's state."""
        keep = None
        if self.masks is not None:
            keep = {name: self.masks.keep(name).clone() for name in self.masks}
        return {
            "keep": keep,
            "updates": [dict(update) for update in self.updates],
            "step": self._step,
            "generator": self.generator.get_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Take back a state from :meth:`state_dict` (after :meth:`start`)."""
        self.updates = [dict(update) for update in state["updates"]]
        self._step = int(state["step"])
        self.generator.set_state(state["generator"])
        if self._handles is not None:
            self._handles.remove()
            self._handles = None
        self.masks = None
        if state["keep"] is not None:
            self.masks = MaskSet(self.weights, state["keep"])
            self._handles = self.masks.attach(self._optimizer)

    def stop(self) -> None:
        """Detach from the optimiser; the masked weights stay zero."""
        for handle in (self._handles, self._grad_hook):
            if handle is not None:
                handle.remove()
        self._handles = self._grad_hook = None

    @torch.no_grad()
    def _update(self, step: int) -> None:
        level = self.schedule.sparsity_at(step)
        frozen = protected = None
        if self.masks is not None:
            frozen = {n: ~self.masks.keep(n) for n in self.masks}
        regrown = 0
        if self.regrowth is not None and self.schedule.regrow and self.updates:
            protected = self.regrowth.regrow(self.weights, self._grads, self.generator)
            regrown = sum(int(m.sum()) for m in protected.values())
        self._grads = None
        keep = self.criterion.keep_mask(
            self.weights, level, self.granularity, self.generator, frozen, protected
        )
        if self._handles is not None:
            self._handles.remove()
        self.masks = MaskSet(self.weights, keep)
        self._handles = self.masks.attach(self._optimizer)
        self.masks.apply_(self._optimizer)
        total = sum(w.numel() for w in self.weights.values())
        self.updates.append(
            {
                "step": step,
                "level": level,
                "zeroed": zeroed_parameters(self.weights, keep) / total,
                "regrown_groups": regrown,
            }
        )
