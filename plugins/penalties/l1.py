"""Element-wise l1 penalty with soft-thresholding as its prox.

References:
    Combettes & Wajs 2005, "Signal recovery by proximal forward-backward splitting" (the l1
    prox); Deleu & Bengio 2021, "Structured sparsity inducing adaptive optimizers for deep
    learning" (the diagonally preconditioned form).
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from sparsekit.interfaces import ComponentConfig, Penalty
from sparsekit.nn.prox import check_precond, step_lam


class L1Penalty(Penalty):
    """Unstructured sparsity: R(w) = Σ_i |w_i|.

    ``prox`` with ``t = step·λ`` is soft-thresholding ``sign(z)·max(|z| − t, 0)``; with a
    diagonal preconditioner D the threshold becomes ``t/D_i`` element-wise (the prox of
    ``½(x−z)ᵀD(x−z) + t‖x‖₁`` separates over elements).

    References:
        Combettes & Wajs 2005; Deleu & Bengio 2021.
    """

    name: ClassVar[str] = "l1"
    granularity = "element"

    class Config(ComponentConfig):
        """The l1 penalty has no parameters: λ and the step come from the optimiser."""

    def value(self, weight: Tensor) -> Tensor:
        """Σ|w|."""
        return weight.abs().sum()

    def prox(
        self,
        weight: Tensor,
        step: float | Tensor,
        lam: float | Tensor,
        precond: Tensor | None = None,
    ) -> Tensor:
        """Soft-thresholding of ``weight`` by step·λ (divided by ``precond`` when given).

        Args:
            weight: the point z, any shape.
            step: the step size t.
            lam: λ ≥ 0, a float or a 0-d tensor (gradients flow to it).
            precond: optional positive diagonal metric D shaped like ``weight``.

        Returns:
            The prox, shaped like ``weight``; differentiable where non-zero.
        """
        t = step_lam(weight, step, lam)
        if precond is not None:
            check_precond(weight, precond)
            t = t / precond
        return torch.sign(weight) * torch.relu(weight.abs() - t)

    def prox_(
        self,
        weight: Tensor,
        step: float | Tensor,
        lam: float | Tensor,
        precond: Tensor | None = None,
    ) -> Tensor:
        """In-place soft-thresholding: ``w −= clamp(w, −t, t)``.

        Args:
            weight: the tensor to update in place.
            step: the step size t.
            lam: λ ≥ 0.
            precond: optional positive diagonal metric D shaped like ``weight``.

        Returns:
            ``weight``.
        """
        with torch.no_grad():
            lam_d = lam.detach() if isinstance(lam, Tensor) else lam
            step_d = step.detach() if isinstance(step, Tensor) else step
            t = step_lam(weight, step_d, lam_d)
            if precond is not None:
                check_precond(weight, precond)
                t = t / precond
            elif not isinstance(t, Tensor):
                t = torch.as_tensor(t, dtype=weight.dtype, device=weight.device)
            weight.sub_(torch.clamp(weight, min=-t, max=t))
        return weight

    def active_mask(self, weight: Tensor) -> Tensor:
        """Bool mask shaped like ``weight``: True where the weight is non-zero."""
        return weight.detach() != 0
