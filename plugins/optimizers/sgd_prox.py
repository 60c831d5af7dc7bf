"""``sgd_prox``: proximal SGD, an SGD step with momentum then the plain proximal step."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar

import torch

from sparsekit.config import OptimizerConfig
from sparsekit.interfaces import ComponentConfig, OptimizerKind


class SGDProx(OptimizerKind):
    """``torch.optim.SGD`` with momentum and (coupled) weight decay, then ``prox_(w, lr, λ)``.

    References:
        Parikh & Boyd 2014, "Proximal Algorithms" (proximal gradient method).
    """

    name: ClassVar[str] = "sgd_prox"

    class Config(ComponentConfig):
        """No parameters of its own: the step's settings are the experiment's ``optimizer``."""

    def torch_optimizer(
        self, params: Iterable[Any], config: OptimizerConfig
    ) -> torch.optim.Optimizer:
        return torch.optim.SGD(
            params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
        )
