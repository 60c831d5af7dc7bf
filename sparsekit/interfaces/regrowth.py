"""Regrowth policies: which zeroed channel groups of the backbone come back, and how."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Mapping

import torch
from torch import Tensor

from sparsekit.interfaces.base import Component


class RegrowthPolicy(Component):
    """Chooses zeroed input-channel groups of backbone conv weights to re-initialise.

    Only groups that are entirely zero may change; every other weight is left untouched.
    ``regrow(weights, grads, generator)`` re-initialises some of them in place and returns, per
    weight, the mask ``[C_in]`` of groups regrown; ``grads`` (each weight's loss gradient, or
    None) serves policies that rank groups by it, ``generator`` makes the choice reproducible.
    ``regrows_to_zero`` says whether regrown groups keep the value 0 (they are only released from
    a mask).

    Kind ``regrowth`` (hook ``sparsekit_register_regrowth_policies``).
    """

    @property
    def regrows_to_zero(self) -> bool:
        """Whether regrown groups keep the value 0 (they are only released from a mask).

        Such a policy changes nothing where no mask holds zeroed groups at zero, as in
        meta-training, whose inner SGD step moves zeroed groups anyway; the meta-learners
        reject it. False by default.
        """
        return False

    @abstractmethod
    def regrow(
        self,
        weights: Mapping[str, Tensor],
        grads: Mapping[str, Tensor] | None,
        generator: torch.Generator,
    ) -> dict[str, Tensor]:
        """Re-initialise some zeroed groups of ``weights`` in place (under ``no_grad``).

        Args:
            weights: backbone conv weights ``[C_out, C_in, k_h, k_w]`` by name.
            grads: the loss gradient of each weight, for policies that rank groups by it (None
                when unavailable).
            generator: the source of randomness, so regrowth is reproducible under a seed.

        Returns:
            For every weight, a bool mask ``[C_in]`` of the groups regrown.
        """
