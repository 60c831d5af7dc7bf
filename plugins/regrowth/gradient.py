"""``gradient``: regrow the zeroed channel groups with the largest loss-gradient norm (RigL).

Per layer, among the entirely-zero input-channel groups ``weight[:, c]``, the ``k`` with the
largest ‖∂L/∂weight[:, c]‖₂ regrow, where ``k`` is ``count`` when given, else ``fraction`` of that
layer's zeroed groups rounded to the nearest integer (halves up). All groups of one layer have the
same size, so their norms compare directly. Regrown groups start at zero (RigL's choice: the
network's function is unchanged and the groups then grow by gradient descent, so this needs a
caller that releases them from any mask, see ``MaskSet.unfreeze``) or at Xavier values.

References:
    Evci et al., "Rigging the Lottery: Making All Tickets Winners", ICML 2020 (gradient-based
    growth, zero initialisation), applied here to channel groups.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
from pydantic import Field
from torch import Tensor

from sparsekit.interfaces import ComponentConfig, RegrowthPolicy
from sparsekit.nn.groups import zero_channel_groups
from sparsekit_plugins.regrowth.random import write_groups_, xavier_like


class GradientRegrowth(RegrowthPolicy):
    """Regrow the zeroed groups whose loss gradient has the largest ℓ2 norm.

    References:
        Evci et al., "Rigging the Lottery: Making All Tickets Winners", ICML 2020.
    """

    name: ClassVar[str] = "gradient"

    class Config(ComponentConfig):
        """Configuration of :class:`GradientRegrowth`.

        Attributes:
            fraction: the share of each layer's zeroed groups to regrow (ignored when ``count``
                is set).
            count: regrow this many zeroed groups per layer (all of them if fewer are zero).
            init: ``"zeros"`` (RigL) or ``"xavier"`` (a fresh Xavier-uniform draw of the layer).
            gain: the Xavier gain, for ``init="xavier"``.
        """

        fraction: float = Field(0.1, ge=0.0, le=1.0)
        count: int | None = Field(None, ge=0)
        init: Literal["zeros", "xavier"] = "zeros"
        gain: float = Field(1.0, gt=0.0)

    config: Config

    @classmethod
    def example_params(cls, workdir: Path) -> dict[str, Any]:
        """Half of the zeroed groups, Xavier-initialised, so the contract suite sees changes."""
        return {"fraction": 0.5, "init": "xavier"}

    @property
    def regrows_to_zero(self) -> bool:
        """True with ``init="zeros"``: the chosen groups stay 0 until a mask releases them."""
        return self.config.init == "zeros"

    def how_many(self, zeroed: int) -> int:
        """How many of ``zeroed`` groups of one layer regrow."""
        if self.config.count is not None:
            return min(self.config.count, zeroed)
        return min(zeroed, math.floor(self.config.fraction * zeroed + 0.5))

    @torch.no_grad()
    def regrow(
        self,
        weights: Mapping[str, Tensor],
        grads: Mapping[str, Tensor] | None,
        generator: torch.Generator,
    ) -> dict[str, Tensor]:
        """Regrow the top-k zeroed groups of every layer by gradient norm.

        Raises:
            ValueError: ``grads`` is None or lacks the gradient of a weight.
        """
        if grads is None:
            raise ValueError(
                "the 'gradient' regrowth policy ranks zeroed groups by their loss gradient, but "
                "no gradients were given (grads=None)"
            )
        regrown = {}
        for name, weight in weights.items():
            grad = grads.get(name)
            if grad is None:
                raise ValueError(f"the 'gradient' regrowth policy has no gradient for {name}")
            zero = zero_channel_groups(weight)
            chosen = torch.zeros_like(zero)
            k = self.how_many(int(zero.sum()))
            if k > 0:
                norms = grad.detach().transpose(0, 1).reshape(zero.shape[0], -1).norm(dim=1)
                ranked = norms.to(zero.device).masked_fill(~zero, -math.inf)
                chosen[torch.topk(ranked, k).indices] = True
                # With init "zeros" the chosen groups already hold their initial value.
                if self.config.init == "xavier":
                    write_groups_(weight, chosen, xavier_like(weight, generator, self.config.gain))
            regrown[name] = chosen
        return regrown
