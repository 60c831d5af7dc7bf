"""``random``: zero channel groups or elements chosen uniformly at random.

Every group (or element) gets an independent U(0, 1) score from the run's pruning generator, so
the chosen set is a uniform random subset of the size the target needs (to one group at channel
granularity, where groups of different sizes are drawn with equal probability each). Ties have
probability zero. Weights already masked stay masked at later updates of a schedule, so the
masks of a dense-to-sparse schedule are nested random subsets.

References:
    Upadhyay et al., "Meta-Sparsity" (Table 5, Mask-3: random sparsification).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

import torch
from torch import Tensor

from sparsekit.interfaces import ComponentConfig, MaskCriterion
from sparsekit.nn.groups import Granularity


class RandomMask(MaskCriterion):
    """Uniformly random groups or elements are zeroed.

    References:
        Upadhyay et al., "Meta-Sparsity" (Table 5, Mask-3).
    """

    name: ClassVar[str] = "random"

    class Config(ComponentConfig):
        """No parameters."""

    def scores(
        self, weights: Mapping[str, Tensor], granularity: Granularity, generator: torch.Generator
    ) -> dict[str, Tensor]:
        """Independent U(0, 1) scores drawn from ``generator``."""
        scores = {}
        for name, weight in weights.items():
            shape = weight.shape if granularity == "element" else (weight.shape[1],)
            scores[name] = torch.rand(
                shape, generator=generator, dtype=torch.float64, device=generator.device
            )
        return scores
