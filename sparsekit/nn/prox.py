"""Helpers every proximal operator needs: the threshold's scalar and the metric's shape."""

from __future__ import annotations

from torch import Tensor


def step_lam(weight: Tensor, step: float | Tensor, lam: float | Tensor) -> float | Tensor:
    """t = step·λ, a Python float when both are, otherwise in ``weight``'s dtype and device."""
    step, lam = (
        v.to(dtype=weight.dtype, device=weight.device) if isinstance(v, Tensor) else v
        for v in (step, lam)
    )
    return step * lam


def check_precond(weight: Tensor, precond: Tensor) -> None:
    """A diagonal metric must have the weight's shape.

    Raises:
        ValueError: it has another shape.
    """
    if precond.shape != weight.shape:
        raise ValueError(
            f"precond must have the weight's shape {tuple(weight.shape)}, got "
            f"{tuple(precond.shape)}"
        )
