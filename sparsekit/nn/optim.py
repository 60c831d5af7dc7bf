"""The proximal optimiser: a torch optimiser's gradient step, then the penalty's proximal step.

The gradient step is any ``torch.optim.Optimizer``; the optimiser kinds (plugin kind
``optimizer``: ``sparsekit.interfaces.OptimizerKind``) choose which and whether the prox is taken
in the optimiser's own diagonal metric. The prox is applied after every step and groups that were
zeroed may come back when the gradient pushes them out again, as proximal gradient methods do;
nothing is masked.

References:
    Deleu & Bengio 2021, "Structured sparsity inducing adaptive optimizers for deep learning"
    (the prox in Adam's metric); Upadhyay et al. 2023, "Less is More" (Eq. 4, proximal updates).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor

from sparsekit.config import OptimizerConfig

#: ``metric(torch_optimizer, weight, param_group)``: a positive diagonal metric D of ``weight``
#: from the optimiser's state, or None where it has none yet.
Metric = Callable[[torch.optim.Optimizer, Tensor, dict[str, Any]], Tensor | None]


def adam_metric(
    optimizer: torch.optim.Optimizer, weight: Tensor, group: dict[str, Any]
) -> Tensor | None:
    """D = √v̂ + ε, Adam's own denominator, from ``optimizer``'s state of ``weight``.

    None when the weight has not been stepped (no second moment yet).
    """
    state = optimizer.state.get(weight)
    if not state or "exp_avg_sq" not in state:
        return None
    step = float(state["step"])
    bias_correction2 = 1.0 - group["betas"][1] ** step
    return state["exp_avg_sq"].div(bias_correction2).sqrt_().add_(group["eps"])


class ProximalOptimizer:
    """A gradient step on all parameters, then a proximal step on the penalised ones.

    With ``penalty=None`` or ``lam == 0`` the trajectory is exactly that of ``inner``. The step
    size of the prox is the ``lr`` of the parameter group holding the weight, read at every step,
    so an LR scheduler attached to :attr:`inner` also scales the threshold.

    Args:
        inner: the torch optimiser taking the gradient step over every trainable parameter.
        penalised: the weights to prox (the backbone conv weights); each must be in ``inner``.
        penalty: the sparsity penalty, or None for no proximal step.
        lam: λ ≥ 0, a float or a 0-d tensor (a learned λ is detached for the step).
        config: the optimiser settings, its ``name`` the kind's.
        metric: the kind's diagonal metric D, or None when it has none.
        prox_in_metric: take the prox in ``metric`` (a weight without one yet is left alone).

    Raises:
        ValueError: a penalised weight is not among the optimised parameters, or λ is negative.
    """

    def __init__(
        self,
        inner: torch.optim.Optimizer,
        penalised: Iterable[Tensor],
        penalty: Any,
        lam: float | Tensor,
        config: OptimizerConfig,
        metric: Metric | None = None,
        prox_in_metric: bool = False,
    ) -> None:
        self.inner, self.config, self.penalty = inner, config, penalty
        self.penalised = list(penalised)
        self.lam = lam
        self._metric, self.prox_in_metric = metric, prox_in_metric
        known = {id(p) for group in self.inner.param_groups for p in group["params"]}
        missing = [tuple(w.shape) for w in self.penalised if id(w) not in known]
        if missing:
            raise ValueError(
                f"{len(missing)} penalised weight(s) are not among the optimised parameters "
                f"(shapes {missing[:3]})"
            )

    @property
    def lam(self) -> float | Tensor:
        """The penalty strength λ (settable, e.g. by a λ schedule or a meta-learner)."""
        return self._lam

    @lam.setter
    def lam(self, value: float | Tensor) -> None:
        if isinstance(value, Tensor):
            if value.dim() != 0:
                raise ValueError(f"lam must be a 0-d tensor, got shape {tuple(value.shape)}")
        elif value < 0:
            raise ValueError(f"lam must be ≥ 0, got {value}")
        else:
            value = float(value)
        self._lam = value

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        """The inner torch optimiser's parameter groups (shared, so edits take effect)."""
        return self.inner.param_groups

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Clear the gradients of every optimised parameter."""
        self.inner.zero_grad(set_to_none=set_to_none)

    def step(self) -> None:
        """One gradient step of the inner optimiser, then the proximal step."""
        self.inner.step()
        self._prox_step()

    @torch.no_grad()
    def _prox_step(self) -> None:
        lam = self._lam.detach() if isinstance(self._lam, Tensor) else self._lam
        if self.penalty is None or (isinstance(lam, float) and lam == 0.0):
            return
        group_of = {id(p): g for g in self.inner.param_groups for p in g["params"]}
        for weight in self.penalised:
            group = group_of[id(weight)]
            if self.prox_in_metric:
                precond = self.metric(weight, group)
                if precond is None:  # never stepped: no metric to measure it in yet
                    continue
                self.penalty.prox_(weight, group["lr"], lam, precond)
            else:
                self.penalty.prox_(weight, group["lr"], lam)

    def metric(self, weight: Tensor, group: dict[str, Any]) -> Tensor | None:
        """The kind's diagonal metric D of ``weight`` now (None without one)."""
        return None if self._metric is None else self._metric(self.inner, weight, group)

    def state_dict(self) -> dict[str, Any]:
        """The inner optimiser's state, the kind and λ."""
        lam = self._lam.detach().clone() if isinstance(self._lam, Tensor) else self._lam
        return {"name": self.config.name, "optimizer": self.inner.state_dict(), "lam": lam}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict`; a tensor λ is updated in place, keeping its identity.

        Raises:
            ValueError: the state was saved by a different optimiser kind.
        """
        if state_dict["name"] != self.config.name:
            raise ValueError(
                f"state of a {state_dict['name']!r} optimiser cannot be loaded into "
                f"{self.config.name!r}"
            )
        self.inner.load_state_dict(state_dict["optimizer"])
        lam = state_dict["lam"]
        if isinstance(self._lam, Tensor):
            with torch.no_grad():
                self._lam.copy_(torch.as_tensor(lam))
        else:
            self.lam = float(lam)

    def __repr__(self) -> str:
        lam = float(self._lam) if isinstance(self._lam, Tensor) else self._lam
        return (
            f"ProximalOptimizer(kind={self.config.name!r}, penalty={self.penalty!r}, lam={lam}, "
            f"penalised={len(self.penalised)})"
        )
