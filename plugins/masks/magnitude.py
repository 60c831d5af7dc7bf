"""``magnitude``: zero the channel groups or elements of lowest magnitude, ranked globally.

At element granularity an element's score is ``|w|``. At channel granularity a group
``θ_g = weight[:, c]`` has ``n_g = C_out·k_h·k_w`` parameters, which differ between layers, so
groups are ranked across layers by their root mean square ``‖θ_g‖₂ / √n_g`` (the ℓ2 norm
normalised by the group size): a plain ℓ2 norm would favour pruning the small groups of narrow
layers only because they have fewer entries. Equal scores (all-zero groups, say) are ordered by
position, weights in module order and then index. Weights already masked by the schedule score
lowest anyway (they are zero), so iterated magnitude pruning is nested.

References:
    Janowsky, "Pruning versus clipping in neural networks", Phys. Rev. A 39, 1989; Han et al.,
    "Learning both Weights and Connections for Efficient Neural Networks", NeurIPS 2015.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

import torch
from torch import Tensor

from sparsekit.interfaces import ComponentConfig, MaskCriterion
from sparsekit.nn.groups import Granularity


def group_rms(weight: Tensor) -> Tensor:
    """``‖weight[:, c]‖₂ / √n_g`` for every input channel ``c``, a ``[C_in]`` tensor."""
    groups = weight.detach().transpose(0, 1).reshape(weight.shape[1], -1)
    return groups.norm(dim=1) / groups.shape[1] ** 0.5


def magnitude_scores(weights: Mapping[str, Tensor], granularity: Granularity) -> dict[str, Tensor]:
    """``|w|`` per element, or the RMS of each input-channel group."""
    if granularity == "element":
        return {name: w.detach().abs() for name, w in weights.items()}
    return {name: group_rms(w) for name, w in weights.items()}


class MagnitudeMask(MaskCriterion):
    """Lowest-magnitude groups (by RMS) or elements (by ``|w|``) are zeroed first.

    References:
        Janowsky 1989; Han et al., NeurIPS 2015.
    """

    name: ClassVar[str] = "magnitude"

    class Config(ComponentConfig):
        """No parameters."""

    def scores(
        self, weights: Mapping[str, Tensor], granularity: Granularity, generator: torch.Generator
    ) -> dict[str, Tensor]:
        """Magnitudes; ``generator`` is not used."""
        return magnitude_scores(weights, granularity)
