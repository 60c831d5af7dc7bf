"""Proximal optimisers: a torch optimiser step followed by the penalty's proximal step.

Three kinds, chosen by :class:`sparsekit.config.OptimizerConfig` ``name``:

- ``adam_prox`` (default): ``torch.optim.Adam``, then ``penalty.prox_(w, lr, λ)`` on every
  penalised weight. Its threshold lr·λ·√n_g is the one of proximal SGD and of the differentiable
  prox a meta-learner applies in its inner loop, so a learned λ and a fixed λ mean the same.
- ``sgd_prox``: proximal SGD, ``torch.optim.SGD`` with momentum, then the same prox.
- ``proxssi``: Adam, then the prox in the metric D = √v̂ + ε of Adam's bias-corrected second
  moment; a group is zeroed when ‖D⊙w_g‖ ≤ lr·λ·√n_g, so λ is on a different scale.

The prox is applied after every step and groups that were zeroed may come back when the gradient
pushes them out again, as proximal gradient methods do; nothing is masked.

References:
    Deleu & Bengio 2021, "Structured sparsity inducing adaptive optimizers for deep learning"
    (ProxSSI); Upadhyay et al. 2023, "Less is More" (Eq. 4, proximal updates).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor

from sparsekit.config import OptimizerConfig
from sparsekit.interfaces import Penalty

OPTIMIZER_KINDS = ("adam_prox", "sgd_prox", "proxssi")


def _inner_optimizer(params: Iterable[Any], config: OptimizerConfig) -> torch.optim.Optimizer:
    """The plain torch optimiser that takes the gradient step."""
    if config.name in (None, "adam_prox", "proxssi"):
        return torch.optim.Adam(
            params,
            lr=config.lr,
            betas=config.betas,
            eps=config.eps,
            weight_decay=config.weight_decay,
        )
    if config.name == "sgd_prox":
        return torch.optim.SGD(
            params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
        )
    raise ValueError(f"unknown optimizer {config.name!r}; expected one of {OPTIMIZER_KINDS}")


class ProximalOptimizer:
    """A gradient step on all parameters, then a proximal step on the penalised ones.

    With ``penalty=None`` or ``lam == 0`` the trajectory is exactly that of the inner torch
    optimiser. The step size of the prox is the ``lr`` of the parameter group holding the weight,
    read at every step, so an LR scheduler attached to :attr:`inner` also scales the threshold.

    Args:
        params: every trainable parameter: an iterable of tensors or of param-group dicts.
        penalised: the weights to prox (the backbone conv weights); each must be in ``params``.
        penalty: the sparsity penalty, or None for no proximal step.
        lam: λ ≥ 0, a float or a 0-d tensor (a learned λ is detached for the step).
        config: the optimiser kind and its hyper-parameters; defaults to ``OptimizerConfig()``.

    Raises:
        ValueError: a penalised weight is not among ``params``, λ is negative, or the kind is
            unknown.

    References:
        Deleu & Bengio 2021, "Structured sparsity inducing adaptive optimizers for deep learning".
    """

    def __init__(
        self,
        params: Iterable[Any],
        penalised: Iterable[Tensor],
        penalty: Penalty | None,
        lam: float | Tensor,
        config: OptimizerConfig | None = None,
    ) -> None:
        config = config if config is not None else OptimizerConfig()
        # An unset kind is the learner's to choose; a bare optimiser takes plain proximal Adam.
        self.config = (
            config if config.name is not None else config.model_copy(update={"name": "adam_prox"})
        )
        self.inner = _inner_optimizer(params, self.config)
        self.penalty = penalty
        self.penalised = list(penalised)
        self.lam = lam
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
            if self.config.name == "proxssi":
                precond = self.adam_metric(weight, group)
                if precond is None:  # never stepped: no second moment to measure it in
                    continue
                self.penalty.prox_(weight, group["lr"], lam, precond)
            else:
                self.penalty.prox_(weight, group["lr"], lam)

    def adam_metric(self, weight: Tensor, group: dict[str, Any]) -> Tensor | None:
        """D = √v̂ + ε, Adam's own denominator, from the inner optimiser's state of ``weight``."""
        state = self.inner.state.get(weight)
        if not state or "exp_avg_sq" not in state:
            return None
        step = float(state["step"])
        bias_correction2 = 1.0 - group["betas"][1] ** step
        return state["exp_avg_sq"].div(bias_correction2).sqrt_().add_(group["eps"])

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


def build_optimizer(
    model_params: Iterable[Any],
    penalised: Iterable[Tensor],
    penalty: Penalty | None,
    lam: float | Tensor,
    config: OptimizerConfig | None = None,
) -> ProximalOptimizer:
    """A :class:`ProximalOptimizer`; see its arguments."""
    return ProximalOptimizer(model_params, penalised, penalty, lam, config)
