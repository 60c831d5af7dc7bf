"""Sparsity statistics of the shared backbone (the definitions used in every report).

- group sparsity: zero input-channel groups / all input-channel groups over the backbone's conv
  weights, a group being ``weight[:, c]`` (size C_out·k_h·k_w) of one conv layer;
- parameter sparsity: zero-valued parameters / all parameters of the backbone's conv weights.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from sparsekit.nn.groups import zero_channel_groups
from sparsekit.nn.multitask import MultiTaskNet, backbone_conv_weights


@dataclass(frozen=True)
class LayerChannels:
    """Active (non-zero) input channels of one backbone conv layer."""

    name: str
    total: int
    active: int


@torch.no_grad()
def layer_channels(model: MultiTaskNet) -> list[LayerChannels]:
    """Active input-channel groups of every backbone conv layer, in module order."""
    rows = []
    for name, weight in backbone_conv_weights(model).items():
        zero = zero_channel_groups(weight)
        rows.append(LayerChannels(name, int(zero.numel()), int((~zero).sum())))
    return rows


@torch.no_grad()
def sparsity(model: MultiTaskNet) -> dict[str, float]:
    """``{"group": g, "parameter": p}`` for the backbone, as fractions in [0, 1]."""
    groups = zero_groups = params = zero_params = 0
    for weight in backbone_conv_weights(model).values():
        w = weight.detach()
        zero = zero_channel_groups(w)
        groups += zero.numel()
        zero_groups += int(zero.sum())
        params += w.numel()
        zero_params += int(w.eq(0).sum())
    return {
        "group": zero_groups / groups if groups else 0.0,
        "parameter": zero_params / params if params else 0.0,
    }
