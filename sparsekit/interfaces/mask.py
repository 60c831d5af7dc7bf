"""Mask criteria: which channel groups or elements of the backbone are zeroed."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Mapping

import torch
from torch import Tensor

from sparsekit.interfaces.base import Component
from sparsekit.nn.groups import Granularity, select_keep


class MaskCriterion(Component):
    """Ranks the backbone's channel groups or elements; the lowest-ranked are zeroed first.

    A channel group is ``weight[:, c]`` of one conv layer (``C_out·k_h·k_w`` parameters, the
    groups of the channel-wise group lasso); an element is one parameter. A criterion only scores;
    :meth:`keep_mask` (shared by every criterion) turns scores into a mask that zeroes exactly the
    target number of parameters, to one group at channel granularity and exactly at element
    granularity. ``scores(weights, granularity, generator)`` gives each group (``[C_in]``) or
    element a score, lowest zeroed first.

    Kind ``mask`` (hook ``sparsekit_register_masks``).
    """

    @abstractmethod
    def scores(
        self, weights: Mapping[str, Tensor], granularity: Granularity, generator: torch.Generator
    ) -> dict[str, Tensor]:
        """A score per group (``[C_in]``) or per element (the weight's shape), for every weight.

        Lower scores are zeroed first; equal scores are ordered by position (weights in the given
        order, then index).

        Args:
            weights: backbone conv weights ``[C_out, C_in, k_h, k_w]`` by name, in module order.
            granularity: ``"channel"`` or ``"element"``.
            generator: the source of randomness, so random criteria are reproducible.
        """

    def keep_mask(
        self,
        weights: Mapping[str, Tensor],
        target: float,
        granularity: Granularity,
        generator: torch.Generator,
        frozen: Mapping[str, Tensor] | None = None,
        protected: Mapping[str, Tensor] | None = None,
    ) -> dict[str, Tensor]:
        """Keep masks zeroing the ``round(target · N)`` lowest-scored parameters of ``weights``.

        Args:
            weights: backbone conv weights by name.
            target: fraction of the ``N`` parameters of ``weights`` to zero, in ``[0, 1]``.
            granularity: ``"channel"`` (masks ``[C_in]``) or ``"element"`` (the weights' shapes).
            generator: the source of randomness for :meth:`scores`.
            frozen: entries already zeroed, zeroed first whatever their score.
            protected: entries zeroed last whatever their score.

        Returns:
            A bool keep mask per weight: ``False`` entries are zeroed.
        """
        ranked = self.scores(weights, granularity, generator)
        return select_keep(weights, ranked, target, granularity, frozen, protected)
