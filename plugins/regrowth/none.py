"""``none``: no regrowth, the papers' default (r_p = 0)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

import torch
from torch import Tensor

from sparsekit.interfaces import ComponentConfig, RegrowthPolicy


class NoRegrowth(RegrowthPolicy):
    """Regrows nothing: every weight is left as it is.

    References:
        Upadhyay et al., "Meta-Sparsity" (§5, Table 6: r_p = 0, the setting of all main results).
    """

    name: ClassVar[str] = "none"

    class Config(ComponentConfig):
        """No parameters."""

    def regrow(
        self,
        weights: Mapping[str, Tensor],
        grads: Mapping[str, Tensor] | None,
        generator: torch.Generator,
    ) -> dict[str, Tensor]:
        """All-False masks; nothing is touched and no random number is drawn."""
        return {
            name: torch.zeros(w.shape[1], dtype=torch.bool, device=w.device)
            for name, w in weights.items()
        }
