"""Scheduled sparsification: exact-budget mask selection and the pruner a learner drives.

:func:`select_keep` turns a criterion's scores into keep masks that zero a given fraction of the
backbone's conv parameters: exactly ``round(target · N)`` at element granularity, and at channel
granularity the prefix of lowest-scored groups whose total size is nearest to it (so within half
of one group). Groups are ordered by score, ties by position (weights in module order, then
channel or flat index).

:class:`Pruner` carries a :class:`~sparsekit.interfaces.SparsitySchedule` through training: at
every update step it recomputes the keep masks with the criterion and enforces them with a
:class:`~sparsekit.engine.masking.MaskSet`, so the masked weights, and their optimiser state,
stay exactly zero after every optimiser step. Entries already masked are zeroed first at the next
update, so a dense-to-sparse schedule's masks are nested. With a regrowth policy, later update
steps are drop-and-grow steps: the policy regrows some zeroed groups, which are then kept, and the
lowest-scored live groups are dropped to return to the level.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from sparsekit.engine.masking import MaskSet, channel_view
from sparsekit.interfaces import MaskCriterion, RegrowthPolicy, SparsitySchedule
from sparsekit.interfaces.mask import Granularity
from sparsekit.models import MultiTaskNet, backbone_conv_weights


def _check_granularity(granularity: str) -> None:
    if granularity not in ("channel", "element"):
        raise ValueError(f"granularity must be 'channel' or 'element', got {granularity!r}")


def group_sizes(weights: Mapping[str, Tensor], granularity: Granularity) -> dict[str, Tensor]:
    """Parameters per group (``C_out·k_h·k_w``, ``[C_in]``) or per element (all ones)."""
    _check_granularity(granularity)
    if granularity == "element":
        return {n: torch.ones(w.numel(), dtype=torch.int64) for n, w in weights.items()}
    return {
        n: torch.full((w.shape[1],), w.numel() // w.shape[1], dtype=torch.int64)
        for n, w in weights.items()
    }


def _flat(
    masks: Mapping[str, Tensor] | None, weights: Mapping[str, Tensor], granularity: str
) -> Tensor | None:
    """Per-group or per-element flags of ``masks`` (element or ``[C_in]`` shaped), concatenated.

    At channel granularity an element-shaped mask flags a group when it flags all its entries.
    """
    if masks is None:
        return None
    parts = []
    for name, weight in weights.items():
        mask = masks.get(name)
        if mask is None:
            count = weight.numel() if granularity == "element" else weight.shape[1]
            parts.append(torch.zeros(count, dtype=torch.bool))
            continue
        mask = mask.detach().bool().cpu()
        if granularity == "element":
            if mask.shape == (weight.shape[1],):
                mask = channel_view(mask, weight).expand(weight.shape)
            parts.append(mask.reshape(-1))
        else:
            parts.append(mask if mask.dim() == 1 else mask.transpose(0, 1).flatten(1).all(dim=1))
    return torch.cat(parts)


def select_keep(
    weights: Mapping[str, Tensor],
    scores: Mapping[str, Tensor],
    target: float,
    granularity: Granularity,
    frozen: Mapping[str, Tensor] | None = None,
    protected: Mapping[str, Tensor] | None = None,
) -> dict[str, Tensor]:
    """Keep masks zeroing the lowest-scored groups or elements to ``round(target · N)`` params.

    Args:
        weights: conv weights by name (their sizes define the budget).
        scores: per weight, ``[C_in]`` (channel) or weight-shaped (element) scores; lower is
            zeroed first.
        target: the fraction of all parameters of ``weights`` to zero, in ``[0, 1]``.
        granularity: ``"channel"`` or ``"element"``.
        frozen: entries (True) ranked before every other, whatever their score.
        protected: entries (True) ranked after every other, whatever their score.

    Returns:
        A bool keep mask per weight, ``[C_in]`` or weight-shaped, on the weight's device.

    Raises:
        ValueError: a target outside ``[0, 1]`` or an unknown granularity.
    """
    _check_granularity(granularity)
    if not 0.0 <= target <= 1.0:
        raise ValueError(f"target must be in [0, 1], got {target}")
    sizes = torch.cat(list(group_sizes(weights, granularity).values()))
    flat = torch.cat([scores[n].detach().to("cpu", torch.float64).reshape(-1) for n in weights])
    ranked_frozen = _flat(frozen, weights, granularity)
    ranked_protected = _flat(protected, weights, granularity)
    if ranked_frozen is not None:
        flat = flat.masked_fill(ranked_frozen, -math.inf)
    if ranked_protected is not None:
        flat = flat.masked_fill(ranked_protected, math.inf)
    budget = round(target * int(sizes.sum()))
    order = torch.sort(flat, stable=True).indices
    cumulative = torch.cumsum(sizes[order], dim=0)
    # The largest prefix not above the budget, or one group more if that lands nearer to it.
    count = int(torch.searchsorted(cumulative, budget, right=True))
    below = int(cumulative[count - 1]) if count > 0 else 0
    if count < len(order) and int(cumulative[count]) - budget < budget - below:
        count += 1
    zeroed = torch.zeros(len(flat), dtype=torch.bool)
    zeroed[order[:count]] = True
    keep, offset = {}, 0
    for name, weight in weights.items():
        shape = weight.shape if granularity == "element" else (weight.shape[1],)
        size = math.prod(shape)
        keep[name] = (~zeroed[offset : offset + size]).reshape(shape).to(weight.device)
        offset += size
    return keep


def zeroed_parameters(weights: Mapping[str, Tensor], keep: Mapping[str, Tensor]) -> int:
    """How many parameters of ``weights`` the keep masks zero."""
    total = 0
    for name, weight in weights.items():
        mask = keep[name]
        if mask.shape != weight.shape:
            mask = channel_view(mask, weight).expand(weight.shape)
        total += int((~mask).sum())
    return total


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
        _check_granularity(granularity)
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
