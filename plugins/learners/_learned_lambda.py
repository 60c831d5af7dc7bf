"""The sparsity strength λ as a module: learned through a softplus, or held fixed.

A learned λ is ``softplus_β(ρ) = log(1 + exp(β·ρ)) / β`` of a free parameter ρ, so it stays
positive whatever the optimiser does to ρ (Meta-Sparsity, §3.4). It is one scalar shared by every
backbone conv layer, or one value per layer. A fixed λ is stored as given (no softplus round trip),
so a fixed λ really stays the number configured.

References:
    Upadhyay et al., "Meta-Sparsity: Learning Optimal Sparse Structures in Multi-task Networks
    through Meta-learning" (§3.4, softplus parametrisation; λ₀ ~ U(0.1, 1)).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

#: torch's softplus is the identity once β·x exceeds this; the inverse follows suit.
SOFTPLUS_THRESHOLD = 20.0


def inverse_softplus(value: float, beta: float = 1.0) -> float:
    """ρ with ``softplus_β(ρ) = value``.

    Raises:
        ValueError: ``value`` is not positive (softplus never reaches 0) or ``beta`` is not.
    """
    if value <= 0 or beta <= 0:
        raise ValueError(f"inverse softplus needs value > 0 and beta > 0, got {value}, {beta}")
    if beta * value > SOFTPLUS_THRESHOLD:
        return value
    return math.log(math.expm1(beta * value)) / beta


def draw_initial_lambda(bounds: tuple[float, float], generator: torch.Generator) -> float:
    """λ₀ drawn uniformly from ``[low, high]`` with ``generator`` (the paper uses U(0.1, 1))."""
    low, high = bounds
    u = float(torch.rand((), generator=generator, dtype=torch.float64))
    return low + (high - low) * u


class LearnedLambda(nn.Module):
    """λ for the backbone's conv layers: ``softplus_β(ρ)`` when learned, a constant otherwise.

    Args:
        initial: λ₀ ≥ 0 (> 0 when learned); every layer starts from it.
        beta: the softplus sharpness β > 0.
        layers: how many conv layers get their own λ; None shares one λ among all of them.
        learnable: whether ρ is a trainable parameter; False stores ``initial`` as a buffer.
        dtype: the dtype of ρ (that of the model, so float64 models get float64 meta-gradients).

    Raises:
        ValueError: a negative λ₀, a non-positive λ₀ to learn, a non-positive β or ``layers``.
    """

    def __init__(
        self,
        initial: float,
        beta: float = 1.0,
        layers: int | None = None,
        learnable: bool = True,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__()
        if initial < 0 or (learnable and initial == 0):
            raise ValueError(f"λ₀ must be > 0 to learn and ≥ 0 otherwise, got {initial}")
        if beta <= 0:
            raise ValueError(f"the softplus beta must be > 0, got {beta}")
        if layers is not None and layers < 1:
            raise ValueError(f"layers must be ≥ 1 or None, got {layers}")
        self.beta = float(beta)
        self.learnable = learnable
        shape = () if layers is None else (layers,)
        if learnable:
            rho = torch.full(shape, inverse_softplus(initial, beta), dtype=dtype)
            self.rho = nn.Parameter(rho)
        else:
            self.register_buffer("fixed", torch.full(shape, float(initial), dtype=dtype))
        # A fixed λ is reported as configured, not as its rounded float32 copy.
        self._fixed_value = None if learnable else float(initial)

    @property
    def per_layer(self) -> bool:
        """Whether every conv layer has its own λ."""
        return self._tensor().dim() == 1

    @property
    def is_zero(self) -> bool:
        """A fixed λ of 0: no proximal step anywhere, nothing to learn."""
        return not self.learnable and not bool(self.fixed.ne(0).any())

    def _tensor(self) -> Tensor:
        return self.rho if self.learnable else self.fixed

    def forward(self) -> Tensor:
        """λ: a 0-d tensor, or ``[layers]`` per layer; differentiable in ρ when learned."""
        if self.learnable:
            return F.softplus(self.rho, beta=self.beta, threshold=SOFTPLUS_THRESHOLD)
        return self.fixed

    def for_layer(self, lam: Tensor, index: int) -> Tensor:
        """The λ of conv layer ``index`` out of ``lam = self()`` (the shared λ if not per layer)."""
        return lam[index] if lam.dim() == 1 else lam

    def values(self) -> float | list[float]:
        """The current λ as plain numbers, for histories and reports."""
        lam = self().detach()
        if self._fixed_value is not None:
            return [self._fixed_value] * lam.numel() if lam.dim() == 1 else self._fixed_value
        return [float(v) for v in lam] if lam.dim() == 1 else float(lam)

    def mean(self) -> float:
        """The mean λ over layers (λ itself when shared), for one-number summaries."""
        if self._fixed_value is not None:
            return self._fixed_value
        return float(self().detach().mean())
