"""``adam_prox``: an Adam step, then the penalty's plain proximal step (threshold ``lr·λ``)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar

import torch
from torch import Tensor

from sparsekit.config import OptimizerConfig
from sparsekit.interfaces import ComponentConfig, OptimizerKind
from sparsekit.nn.optim import adam_metric
from sparsekit_plugins.optimizers._adam import adam


class AdamProx(OptimizerKind):
    """Proximal Adam: ``torch.optim.Adam``, then ``penalty.prox_(w, lr, λ)``.

    Its threshold ``lr·λ·√n_g`` is that of proximal SGD and of the differentiable prox a
    meta-learner applies in its inner loop, so a learned λ and a fixed λ mean the same. It has
    Adam's metric (for rules that need one) but does not take the prox in it. The default kind.

    References:
        Upadhyay et al. 2023, "Less is More" (Eq. 4, proximal updates).
    """

    name: ClassVar[str] = "adam_prox"
    is_default: ClassVar[bool] = True
    has_metric: ClassVar[bool] = True

    class Config(ComponentConfig):
        """No parameters of its own: the step's settings are the experiment's ``optimizer``."""

    def torch_optimizer(
        self, params: Iterable[Any], config: OptimizerConfig
    ) -> torch.optim.Optimizer:
        return adam(params, config)

    def metric(
        self, optimizer: torch.optim.Optimizer, weight: Tensor, group: dict[str, Any]
    ) -> Tensor | None:
        return adam_metric(optimizer, weight, group)
