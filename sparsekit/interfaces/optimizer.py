"""Optimiser kinds: the gradient step of training and where the proximal step measures λ."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Iterable
from typing import Any, ClassVar

import torch
from torch import Tensor

from sparsekit.config import OptimizerConfig
from sparsekit.interfaces.base import Component
from sparsekit.nn.optim import ProximalOptimizer


class OptimizerKind(Component):
    """Builds a :class:`~sparsekit.nn.optim.ProximalOptimizer` from ``OptimizerConfig`` settings.

    ``torch_optimizer(params, config)`` is the torch optimiser that takes the gradient step over
    every trainable parameter (parameter-group dicts allowed) with ``config``'s ``lr``,
    ``weight_decay``, ``momentum``, ``betas``, ``eps`` as they apply to it; ``metric`` is the
    optimiser's diagonal metric D of a weight, if it has one.

    Capabilities, declared on the class:

    - ``has_metric``: ``metric`` returns a metric (Adam's √v̂ + ε); the meta-learners'
      ``preconditioned`` λ rule needs one.
    - ``prox_in_metric``: the proximal step is taken in that metric (λ is then measured on its
      scale, not on the plain prox's).

    Kind ``optimizer`` (hook ``sparsekit_register_optimizers``).
    """

    has_metric: ClassVar[bool] = False
    prox_in_metric: ClassVar[bool] = False

    @abstractmethod
    def torch_optimizer(
        self, params: Iterable[Any], config: OptimizerConfig
    ) -> torch.optim.Optimizer:
        """The torch optimiser of the gradient step."""

    def metric(
        self, optimizer: torch.optim.Optimizer, weight: Tensor, group: dict[str, Any]
    ) -> Tensor | None:
        """The diagonal metric D of ``weight`` from ``optimizer``'s state; None by default."""
        return None

    def build(
        self,
        params: Iterable[Any],
        penalised: Iterable[Tensor],
        penalty: Any,
        lam: float | Tensor,
        config: OptimizerConfig,
    ) -> ProximalOptimizer:
        """The proximal optimiser over ``params`` proxing ``penalised`` with ``penalty`` and λ."""
        config = config.model_copy(update={"name": self.name})
        return ProximalOptimizer(
            self.torch_optimizer(params, config),
            penalised,
            penalty,
            lam,
            config,
            metric=self.metric if self.has_metric else None,
            prox_in_metric=self.prox_in_metric,
        )
