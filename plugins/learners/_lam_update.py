"""How the meta-training loop learns λ: the rules of ``MetaConfig.lam_update``, and diagnostics.

- ``inner_prox`` (default): the inner loop's adapted clone gets the differentiable prox
  ``prox(w, α_in, λ)`` on its backbone conv weights, so the query loss carries a meta-gradient to
  ρ (λ = softplus_β(ρ)); the outer prox ``prox(w, α_out, λ)`` then acts on Θ_meta.
- ``outer_penalty``: Algorithm 3 as printed. The inner loop takes plain SGD steps (no prox); the
  outer objective of an episode is ``query_loss + λ·R(θ_b adapted)`` (Eq. 10, 12) with the
  adapted weights detached inside R, so the penalty reaches ρ and not Θ_meta, whose penalty is the
  outer prox. ∂/∂λ of that objective is R > 0 whatever the data say, so λ can only shrink.
- ``preconditioned``: both proxes in the metric D = √v̂ + ε of the outer optimiser's Adam state
  (ProxSSI), which is equivariant to the scale of a conv weight that BatchNorm makes irrelevant.
- ``relative``: the plain proxes of ``inner_prox``, with each layer's λ measured in units of that
  layer's RMS weight, s_l = ‖W_l‖_F/√numel(W_l) (taken as a constant of the step): the threshold
  ``step·λ·s_l·√n_g`` scales with the layer, so ``prox(c·W) = c·prox(W)`` and the scale that
  BatchNorm leaves free decides nothing.

Independently of the rule, ``MetaConfig.lam_holdout`` holds out part of the training split for
λ's meta-gradient (:class:`._episodes.HeldOutBatches`): ρ is differentiated through the adapted
clone's loss on held-out examples that Θ_meta never trains on, Θ_meta through the
query loss as before.

References:
    Upadhyay et al., "Meta-Sparsity: Learning Optimal Sparse Structures in Multi-task Networks
    through Meta-learning" (Algorithm 3, Eq. 10-12); Deleu & Bengio 2021, "Structured sparsity
    inducing adaptive optimizers for deep learning" (ProxSSI, the prox in Adam's metric);
    Luketina et al. 2016, "Scalable Gradient-Based Tuning of Continuous Regularization
    Hyperparameters" (the held-out split of ``lam_holdout``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Literal, get_args

import torch
from torch import Tensor

from sparsekit.errors import ConfigError
from sparsekit.interfaces import OptimizerKind, Penalty
from sparsekit.nn.optim import ProximalOptimizer
from sparsekit_plugins.learners._learned_lambda import SOFTPLUS_THRESHOLD, LearnedLambda

LamUpdate = Literal["inner_prox", "outer_penalty", "preconditioned", "relative", "tolerance"]
LAM_UPDATES: tuple[str, ...] = get_args(LamUpdate)

#: The ``history.extra`` lists :func:`record_diagnostics` fills.
DIAGNOSTICS = ("lam_grad", "group_norm_quantiles", "outer_threshold")


def in_metric(rule: str) -> bool:
    """Whether the rule's proxes work in the outer optimiser's metric D where it has one
    (ProxSSI's λ scale under Adam); a weight without a D gets the plain prox."""
    return rule in ("preconditioned", "tolerance")


def check_outer_optimizer(rule: str, kind: OptimizerKind, learner_name: str) -> None:
    """Reject an outer optimiser kind that does not fit the λ update rule.

    ``tolerance`` takes both proxes in the outer optimiser's metric when it has one (Adam's) and
    plain proxes otherwise; its λ is moved by a multiplicative controller on either scale.

    Raises:
        ConfigError: ``preconditioned`` with a kind that has no metric to take D from, or a kind
            that takes the prox in its own metric under the plain-prox rules, whose λ is on the
            plain prox's scale.
    """
    if rule == "tolerance":
        return
    if rule == "preconditioned":
        if not kind.has_metric:
            raise ConfigError(
                f"learner {learner_name!r}: lam_update 'preconditioned' takes its metric "
                f"D = √v̂ + ε from an Adam outer optimizer, and {kind.name!r} has none"
            )
    elif kind.prox_in_metric:
        raise ConfigError(
            f"learner {learner_name!r}: lam_update {rule!r} takes λ on the plain prox's scale, "
            f"and the outer optimizer {kind.name!r} measures λ in its own metric (use lam_update "
            "'preconditioned' for that)"
        )


def layer_scale(weight: Tensor) -> Tensor:
    """s_l = ‖W‖_F/√numel(W), the RMS weight of a layer, detached: ``relative``'s unit of λ.

    It equals the root-mean-square over input-channel groups of ‖w_g‖/√n_g, the quantity the
    outer threshold of the plain prox compares with (:func:`group_norm_quantiles`).
    """
    return weight.detach().square().mean().sqrt()


def layer_lambda(rule: str, lam_l: Tensor, weight: Tensor) -> Tensor:
    """The λ a prox applies to ``weight``: ``lam_l``, times the layer's scale under ``relative``."""
    return lam_l * layer_scale(weight) if rule == "relative" else lam_l


def penalty_term(
    weights: Mapping[str, Tensor], penalty: Penalty, lam_module: LearnedLambda, lam: Tensor
) -> Tensor:
    """Σ_l λ_l·R(w_l) over the backbone conv weights, with the weights detached (Eq. 10, 12).

    Detached because in Algorithm 3 the penalty's effect on Θ_meta is the outer prox; only λ
    receives the gradient of this term, which is R(w_l) per layer.
    """
    total = lam.new_zeros(())
    for index, weight in enumerate(weights.values()):
        total = total + lam_module.for_layer(lam, index) * penalty.value(weight.detach())
    return total


def adam_preconditioners(
    optimizer: ProximalOptimizer, weights: Mapping[str, Tensor]
) -> dict[str, Tensor]:
    """D = √v̂ + ε of each weight from the outer optimiser's Adam state, detached, by name.

    A weight the optimiser has not stepped yet has no second moment and is left out; the proxes
    then fall back to the plain prox for it.
    """
    group_of = {id(p): g for g in optimizer.param_groups for p in g["params"]}
    metrics = {}
    for name, weight in weights.items():
        # The very D the proxssi kind uses, so λ here is on the proxssi scale.
        metric = optimizer.metric(weight, group_of[id(weight)])
        if metric is not None:
            metrics[name] = metric.detach()
    return metrics


@torch.no_grad()
def outer_prox_(
    weights: Mapping[str, Tensor],
    penalty: Penalty,
    lam_module: LearnedLambda,
    step: float,
    precond: Mapping[str, Tensor],
    rule: str = "inner_prox",
) -> None:
    """The outer prox ``prox_(w, α_out, λ_l, precond=D)`` on each of Θ_meta's weights, in place.

    λ is read from ``lam_module`` now, i.e. from the ρ the outer optimiser has just updated, and
    is scaled by the layer's RMS weight under ``relative``. A weight without an entry in
    ``precond`` (every weight outside ``preconditioned``) gets the plain prox.
    """
    lam = lam_module()
    for index, (name, weight) in enumerate(weights.items()):
        lam_l = layer_lambda(rule, lam_module.for_layer(lam, index), weight)
        penalty.prox_(weight, step, lam_l, precond.get(name))


def lam_meta_gradient(lam: LearnedLambda) -> float | None:
    """d(objective)/dλ from ρ.grad, dividing by softplus_β'(ρ) = sigmoid(β·ρ).

    Per layer it is Σ_l ∂/∂λ_l: the derivative along moving every λ_l, hence their mean, together.

    Returns:
        The derivative, or None when λ is fixed or received no gradient.
    """
    if not lam.learnable or lam.rho.grad is None:
        return None
    scaled = lam.beta * lam.rho.detach()
    # torch's softplus is the identity above its threshold, so its derivative is exactly 1 there.
    slope = torch.where(scaled > SOFTPLUS_THRESHOLD, torch.ones_like(scaled), scaled.sigmoid())
    return float((lam.rho.grad.detach() / slope).sum())


@torch.no_grad()
def group_norm_quantiles(weights: Mapping[str, Tensor]) -> list[float] | None:
    """10/50/90 % quantiles of ‖w_g‖/√n_g over the non-zero input-channel groups of ``weights``.

    Dividing by √n_g puts layers of different group sizes on the scale of one weight, the scale
    on which the outer threshold α_out·λ compares. None when every group is zero.
    """
    norms = []
    for weight in weights.values():
        rows = weight.detach().transpose(0, 1).flatten(1)
        norms.append(torch.linalg.vector_norm(rows, dim=1) / math.sqrt(rows.shape[1]))
    every = torch.cat(norms).double()
    every = every[every > 0]
    if every.numel() == 0:
        return None
    levels = torch.tensor([0.1, 0.5, 0.9], dtype=every.dtype, device=every.device)
    return [float(q) for q in torch.quantile(every, levels)]


def record_diagnostics(
    extra: dict[str, list],
    lam_grad: float | None,
    weights: Mapping[str, Tensor],
    lam_module: LearnedLambda,
    step: float,
    evaluated: bool,
    rule: str = "inner_prox",
) -> None:
    """Append the λ diagnostics of one meta-step to ``extra`` (its lists named in DIAGNOSTICS).

    ``lam_grad`` every meta-step; at evaluations, also the group-norm quantiles of ``weights``
    and the outer prox threshold α_out·λ (a list per layer under a per-layer λ, and under
    ``relative``, where it is α_out·λ_l·s_l, on the scale of the group-norm quantiles).
    """
    extra["lam_grad"].append(lam_grad)
    if not evaluated:
        return
    extra["group_norm_quantiles"].append(group_norm_quantiles(weights))
    if rule == "relative":
        lam_t = lam_module().detach()
        extra["outer_threshold"].append(
            [
                step * float(layer_lambda(rule, lam_module.for_layer(lam_t, i), w))
                for i, w in enumerate(weights.values())
            ]
        )
        return
    lam = lam_module.values()
    extra["outer_threshold"].append(
        [step * v for v in lam] if isinstance(lam, list) else step * lam
    )
