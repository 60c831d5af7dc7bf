"""``random``: every zeroed channel group regrows with probability r_p, Xavier-initialised.

A regrown group ``weight[:, c]`` takes the values of a fresh Xavier (Glorot) uniform draw of the
whole layer: U(−a, a) with a = gain·√(6 / (fan_in + fan_out)), where, as in
``torch.nn.init.xavier_uniform_``, fan_in = C_in·k_h·k_w and fan_out = C_out·k_h·k_w are the
fans of the full layer (not of the regrown channel, and regardless of how many channels are
currently zero), so a regrown channel has the scale of a freshly initialised layer.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import torch
from pydantic import Field
from torch import Tensor, nn

from sparsekit.interfaces import ComponentConfig, RegrowthPolicy
from sparsekit.nn.groups import zero_channel_groups


def xavier_like(weight: Tensor, generator: torch.Generator, gain: float = 1.0) -> Tensor:
    """A fresh Xavier-uniform tensor of ``weight``'s shape, dtype and device.

    It is drawn on the generator's device (so a CPU generator serves weights on any device) and
    then moved to the weight's.

    References:
        Glorot & Bengio, "Understanding the difficulty of training deep feedforward neural
        networks", AISTATS 2010.
    """
    fresh = torch.empty(weight.shape, dtype=weight.dtype, device=generator.device)
    nn.init.xavier_uniform_(fresh, gain=gain, generator=generator)
    return fresh.to(weight.device)


@torch.no_grad()
def write_groups_(weight: Tensor, groups: Tensor, values: Tensor) -> None:
    """Copy ``values[:, c]`` into ``weight[:, c]`` for every ``c`` with ``groups[c]`` True."""
    if groups.any():
        weight[:, groups] = values[:, groups]


class RandomRegrowth(RegrowthPolicy):
    """Each entirely-zero input-channel group regrows independently with probability ``prob``.

    Regrown groups are re-initialised with Xavier (Glorot) uniform values; see the module
    docstring for the fans.

    References:
        Upadhyay et al., "Meta-Sparsity" (§3.4, Algorithm 3: regrowth with probability r_p;
        §5, Table 6: Xavier initialisation of regrown channels).
    """

    name: ClassVar[str] = "random"

    class Config(ComponentConfig):
        """Configuration of :class:`RandomRegrowth`.

        Attributes:
            prob: r_p, the probability that a zeroed group regrows.
            gain: the Xavier gain.
        """

        prob: float = Field(0.1, ge=0.0, le=1.0)
        gain: float = Field(1.0, gt=0.0)

    config: Config

    @classmethod
    def example_params(cls, workdir: Path) -> dict[str, Any]:
        """r_p = 0.5, so the contract suite sees groups both regrow and stay zero."""
        return {"prob": 0.5}

    @torch.no_grad()
    def regrow(
        self,
        weights: Mapping[str, Tensor],
        grads: Mapping[str, Tensor] | None,
        generator: torch.Generator,
    ) -> dict[str, Tensor]:
        """Regrow zeroed groups at random; ``grads`` is not used."""
        regrown = {}
        for name, weight in weights.items():
            zero = zero_channel_groups(weight)
            # rand ∈ [0, 1): prob 0 never fires, prob 1 always does.
            draws = torch.rand(zero.shape, generator=generator, device=generator.device)
            chosen = zero & (draws < self.config.prob).to(zero.device)
            if chosen.any():
                write_groups_(weight, chosen, xavier_like(weight, generator, self.config.gain))
            regrown[name] = chosen
        return regrown
