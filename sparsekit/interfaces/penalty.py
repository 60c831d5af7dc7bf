"""Sparsity penalties applied to the shared backbone's conv weights by proximal updates."""

from __future__ import annotations

from abc import abstractmethod

import torch
from torch import Tensor

from sparsekit.interfaces.base import Component


class Penalty(Component):
    """A sparsity-inducing penalty R(θ) with its proximal operator.

    All methods act on one weight tensor (a 4-D conv weight ``[C_out, C_in, k_h, k_w]``) and are
    vectorised over the whole tensor. ``lam`` may be a float or a 0-d tensor (a learned λ).
    ``value(weight)`` is R without λ; ``prox(weight, step, lam, precond=None)`` its proximal
    operator, out of place and differentiable in ``weight`` and ``lam`` wherever the result is
    non-zero, optionally in a diagonal metric ``precond``; ``prox_`` the in-place form training
    uses; ``active_mask(weight)`` which groups are non-zero.

    Kind ``penalty`` (hook ``sparsekit_register_penalties``).
    """

    #: Whether ``active_mask`` is per input channel (``"channel"``) or per element (``"element"``).
    granularity: str = "element"

    @abstractmethod
    def value(self, weight: Tensor) -> Tensor:
        """R(weight) without λ, as a 0-d tensor."""

    @abstractmethod
    def prox(
        self,
        weight: Tensor,
        step: float | Tensor,
        lam: float | Tensor,
        precond: Tensor | None = None,
    ) -> Tensor:
        """Proximal operator of ``step * lam * R`` at ``weight`` (out of place).

        Differentiable with respect to ``weight`` and ``lam`` wherever the result is non-zero.

        Args:
            weight: the point z to project.
            step: the step size t (the optimiser's learning rate).
            lam: the penalty strength λ ≥ 0.
            precond: optional positive diagonal metric D of ``weight``'s shape: the prox is then
                ``argmin_x ½ (x−z)ᵀ D (x−z) + t λ R(x)`` (Deleu & Bengio 2021).
        """

    def prox_(
        self,
        weight: Tensor,
        step: float | Tensor,
        lam: float | Tensor,
        precond: Tensor | None = None,
    ) -> Tensor:
        """In-place proximal step, used by the training optimisers. Returns ``weight``."""
        with torch.no_grad():
            weight.copy_(self.prox(weight, step, lam, precond))
        return weight

    @abstractmethod
    def active_mask(self, weight: Tensor) -> Tensor:
        """Boolean mask of the non-zero groups (per input channel or per element)."""
