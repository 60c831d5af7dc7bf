"""The torch Adam step shared by the Adam-based optimiser kinds."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from sparsekit.config import OptimizerConfig


def adam(params: Iterable[Any], config: OptimizerConfig) -> torch.optim.Optimizer:
    """``torch.optim.Adam`` with the config's lr, betas, eps and (coupled) weight decay."""
    return torch.optim.Adam(
        params,
        lr=config.lr,
        betas=config.betas,
        eps=config.eps,
        weight_decay=config.weight_decay,
    )
