"""Channel-wise group lasso (l1/l2) on conv weights, with its plain and preconditioned prox.

The groups are the input channels of a weight: ``w[:, c]`` of a conv weight
``[C_out, C_in, k_h, k_w]`` (or a column of a Linear weight ``[out, in]``), each of size
``n_g = C_out·k_h·k_w``. Zeroing input channel ``c`` of a layer removes that channel from the
layer's input, which is the structure the multi-task papers prune.

References:
    Upadhyay et al. 2023, "Less is More: Towards parsimonious multi-task models using structured
    sparsity" (penalty and closed-form prox, Eq. 5); Deleu & Bengio 2021, "Structured sparsity
    inducing adaptive optimizers for deep learning" (preconditioned prox, ProxSSI).
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from torch import Tensor

from sparsekit.interfaces import ComponentConfig, Penalty
from sparsekit.nn.groups import zero_channel_groups
from sparsekit.nn.prox import check_precond, step_lam

#: Newton iterations allowed for the preconditioned prox; it converges quadratically from below,
#: and in one step when D is constant over a group, so this cap is never reached in practice.
NEWTON_MAX_ITER = 30

#: Size of the buffer in which :func:`group_sq_norms` accumulates squares: 1 MiB of float32,
#: small enough to stay in a core's L2 cache while the weight streams past it.
SQ_NORM_BLOCK_ELEMENTS = 1 << 18


def group_dims(weight: Tensor) -> tuple[int, ...]:
    """The dimensions reduced to get one value per input channel (every dimension but 1).

    Raises:
        ValueError: the weight has fewer than two dimensions (no input-channel axis).
    """
    if weight.dim() < 2:
        raise ValueError(
            f"group lasso needs a weight with an input-channel dimension (≥ 2-D), got shape "
            f"{tuple(weight.shape)}"
        )
    return (0, *range(2, weight.dim()))


def group_size(weight: Tensor) -> int:
    """Elements per input-channel group: ``C_out·k_h·k_w`` for a conv weight."""
    group_dims(weight)
    return weight.numel() // max(weight.shape[1], 1)


def group_sq_norms(weight: Tensor) -> Tensor:
    """Squared l2 norm of every input-channel group, shape ``[C_in]``.

    A contiguous weight is read as the 2-D view ``[C_out, C_in·k_h·k_w]`` and reduced over its
    rows. On CPU, outside autograd, the squares are accumulated block of rows by block of rows
    into one cache-sized buffer with ``addcmul_``: the weight is read once and no weight-sized
    temporary is allocated. ``vector_norm`` over dims (0, 2, 3) is an order of magnitude slower
    on CPU, and ``square().sum(0)`` writes and rereads a temporary as large as the weight
    (``benchmarks/bench_prox.py`` measures the result).
    """
    dims = group_dims(weight)
    if not weight.is_contiguous() or weight.numel() == 0:
        return weight.square().sum(dim=dims)
    c_out, c_in = weight.shape[0], weight.shape[1]
    rows2d = weight.view(c_out, -1)
    block = SQ_NORM_BLOCK_ELEMENTS // rows2d.shape[1]
    blocked = block < c_out and weight.device.type == "cpu"
    if not blocked or (weight.requires_grad and torch.is_grad_enabled()):
        sq = rows2d.square().sum(dim=0)
    else:
        block = max(block, 1)
        acc = rows2d[:block].square()
        for start in range(block, c_out, block):
            chunk = rows2d[start : start + block]
            acc[: chunk.shape[0]].addcmul_(chunk, chunk)
        sq = acc.sum(dim=0)
    return sq if sq.numel() == c_in else sq.view(c_in, -1).sum(dim=1)


def _keepdim_shape(weight: Tensor) -> tuple[int, ...]:
    """The shape ``[1, C_in, 1, ...]`` that broadcasts one value per group over ``weight``."""
    return (1, weight.shape[1], *([1] * (weight.dim() - 2)))


def scale_groups_(weight: Tensor, scale: Tensor) -> Tensor:
    """Multiply input-channel group c of ``weight`` by ``scale[c]`` in place; returns ``weight``.

    A contiguous weight is multiplied as ``[C_out, C_in·k_h·k_w]`` by a contiguous row, the
    broadcast pattern that runs at the speed of a plain element-wise pass (broadcasting
    ``[1, C_in, 1, 1]`` over the 4-D tensor is several times slower on CPU).
    """
    if not weight.is_contiguous() or weight.numel() == 0:
        return weight.mul_(scale.view(_keepdim_shape(weight)))
    c_out, c_in = weight.shape[0], weight.shape[1]
    per_group = weight.numel() // (c_out * c_in)
    weight.view(c_out, -1).mul_(scale if per_group == 1 else scale.repeat_interleave(per_group))
    return weight


def _threshold(weight: Tensor, step: float | Tensor, lam: float | Tensor) -> float | Tensor:
    """τ = step·λ·√n_g, kept a Python float when possible and in the weight's dtype otherwise."""
    return step_lam(weight, step, lam) * math.sqrt(group_size(weight))


def _newton_radius(
    z: Tensor, b: Tensor, r: Tensor, active: Tensor, dims: tuple[int, ...]
) -> Tensor:
    """One Newton step on h(r) = S(r)^(-1/2) − 1, S(r) = Σ_i (z_i / (r + b_i))², per group.

    ``b = τ/D``. h has the same root as S(r) = 1 but is concave and increasing in r (it is a
    power mean with exponent −2 of the affine maps (r + b_i)/|z_i|), so Newton's iterates rise
    monotonically towards the root from any point below it, and h is affine when D is constant
    over the group, making one step exact there. Inactive groups keep ``r``.
    """
    denom = r + b
    v_sq = (z / denom).square()
    s = v_sq.sum(dim=dims, keepdim=True)
    q = (v_sq / denom).sum(dim=dims, keepdim=True)
    s_safe = torch.where(active, s, torch.ones_like(s))
    q_safe = torch.where(active, q, torch.ones_like(q))
    delta = (s_safe.pow(1.5) - s_safe) / q_safe
    return torch.where(active, r + delta, r)


def precond_group_radius(
    z: Tensor, precond: Tensor, tau: float | Tensor, active: Tensor, dims: tuple[int, ...]
) -> Tensor:
    """Per-group norm r = ‖x‖ of the preconditioned prox, the root of Σ_i (D_i z_i/(D_i r+τ))² = 1.

    All groups are solved at once. The iteration starts at the lower bound
    ``max(‖z_g‖ − τ/min_g D, 0)`` (exact when τ = 0), runs without autograd until every group's
    relative change is within a few ulps, and ends with one differentiable Newton step from the
    detached root: at a root that step's derivative is the implicit-function derivative, so
    gradients reach ``z``, ``precond`` and τ without unrolling the loop.

    Args:
        z: the point to project.
        precond: the positive diagonal metric D, shaped like ``z``.
        tau: the group threshold step·λ·√n_g.
        active: bool per group (keepdim shape), True where ‖D⊙z_g‖ > τ.
        dims: the reduced dimensions (every dimension but the group axis).

    Returns:
        r per group (keepdim shape); 1 on inactive groups, whose prox is zero anyway.
    """
    b = tau / precond
    with torch.no_grad():
        z_d, b_d = z.detach(), b.detach()
        norm = torch.linalg.vector_norm(z_d, dim=dims, keepdim=True)
        d_min = precond.detach().amin(dim=dims, keepdim=True)
        tau_d = tau.detach() if isinstance(tau, Tensor) else tau
        r = torch.where(active, (norm - tau_d / d_min).clamp_min(0.0), torch.ones_like(norm))
        # A group whose ‖D⊙z‖ ≤ τ would divide by zero at r = 0 when τ = 0; it is inactive, so
        # it iterates on a harmless r = 1 instead.
        rel_tol = 4 * torch.finfo(z.dtype).eps
        for _ in range(NEWTON_MAX_ITER):
            r_next = _newton_radius(z_d, b_d, r, active, dims)
            converged = bool(((r_next - r).abs() <= rel_tol * r_next.abs()).all())
            r = r_next
            if converged:
                break
    return _newton_radius(z, b, r, active, dims)


class GroupLassoPenalty(Penalty):
    """Group lasso over input channels: R(w) = Σ_g √n_g ‖w_g‖₂.

    ``prox`` with ``t = step·λ`` zeroes every group with ‖w_g‖₂ ≤ t√n_g and scales the others by
    ``1 − t√n_g/‖w_g‖₂``. With a preconditioner D it solves
    ``argmin_x ½(x−z)ᵀD(x−z) + t√n_g‖x‖₂`` per group: zero iff ‖D⊙z_g‖₂ ≤ t√n_g, otherwise
    ``x_i = D_i z_i / (D_i + τ/r)`` with r = ‖x‖ found by Newton's method.

    References:
        Upadhyay et al. 2023, "Less is More" (Eq. 5); Deleu & Bengio 2021, "Structured sparsity
        inducing adaptive optimizers for deep learning".
    """

    name: ClassVar[str] = "group_lasso"
    is_default: ClassVar[bool] = True
    granularity = "channel"

    class Config(ComponentConfig):
        """Group lasso has no parameters: λ and the step come from the optimiser."""

    def value(self, weight: Tensor) -> Tensor:
        """Σ_g √n_g ‖w_g‖₂ (zero groups contribute a zero gradient, not NaN)."""
        dims = group_dims(weight)
        norms = torch.linalg.vector_norm(weight, dim=dims)
        return math.sqrt(group_size(weight)) * norms.sum()

    def prox(
        self,
        weight: Tensor,
        step: float | Tensor,
        lam: float | Tensor,
        precond: Tensor | None = None,
    ) -> Tensor:
        """Group soft-thresholding of ``weight`` with threshold τ = step·λ·√n_g (out of place).

        Args:
            weight: the point z, at least 2-D (groups along dim 1).
            step: the step size t.
            lam: λ ≥ 0, a float or a 0-d tensor (gradients flow to it).
            precond: optional positive diagonal metric D shaped like ``weight``.

        Returns:
            The prox, shaped like ``weight``; differentiable where non-zero.
        """
        dims = group_dims(weight)
        tau = _threshold(weight, step, lam)
        if precond is not None:
            return self._precond_prox(weight, tau, precond, dims)
        sq = group_sq_norms(weight).view(_keepdim_shape(weight))
        active = sq > tau * tau
        # The norm is taken only where the group survives, so an all-zero group never puts
        # 1/0 into the backward pass.
        norm = torch.where(active, sq, torch.ones_like(sq)).sqrt()
        scale = torch.where(active, 1 - tau / norm, torch.zeros_like(sq))
        return weight * scale

    def _precond_prox(
        self, z: Tensor, tau: float | Tensor, precond: Tensor, dims: tuple[int, ...]
    ) -> Tensor:
        check_precond(z, precond)
        active = (precond * z).square().sum(dim=dims, keepdim=True) > tau * tau
        r = precond_group_radius(z, precond, tau, active, dims)
        # x_i = D_i z_i r / (D_i r + τ) = z_i r / (r + τ/D_i)
        factor = r / (r + tau / precond)
        return torch.where(active, z * factor, torch.zeros_like(z))

    def prox_(
        self,
        weight: Tensor,
        step: float | Tensor,
        lam: float | Tensor,
        precond: Tensor | None = None,
    ) -> Tensor:
        """In-place prox: one read of ``weight`` for the group norms, then one broadcast ``mul_``.

        On CPU this costs about three times a single element-wise ``mul_`` pass over ``weight``
        (``benchmarks/bench_prox.py``).

        Args:
            weight: the tensor to update in place (groups along dim 1).
            step: the step size t.
            lam: λ ≥ 0.
            precond: optional positive diagonal metric D shaped like ``weight``.

        Returns:
            ``weight``.
        """
        if torch.is_grad_enabled():
            with torch.no_grad():
                return self._prox_inplace(weight, step, lam, precond)
        return self._prox_inplace(weight, step, lam, precond)

    def _prox_inplace(
        self, weight: Tensor, step: float | Tensor, lam: float | Tensor, precond: Tensor | None
    ) -> Tensor:
        tau = _threshold(weight, step, lam)
        if precond is not None:
            return weight.copy_(self._precond_prox(weight, tau, precond, group_dims(weight)))
        if not isinstance(tau, Tensor):
            if tau == 0:
                return weight
            # An all-zero group gets 1 − τ·rsqrt(0) = −inf, clamped to 0.
            scale = torch.rsub(group_sq_norms(weight).rsqrt_(), 1.0, alpha=tau).clamp_min_(0)
        else:
            # Flooring ‖w‖² keeps τ·rsqrt(‖w‖²) finite, so a zero τ cannot make 0·inf.
            sq = group_sq_norms(weight).clamp_min_(torch.finfo(weight.dtype).tiny)
            scale = sq.rsqrt_().mul_(-tau).add_(1).clamp_min_(0)
        return scale_groups_(weight, scale)

    def active_mask(self, weight: Tensor) -> Tensor:
        """Bool ``[C_in]``: True for input channels with at least one non-zero weight."""
        return ~zero_channel_groups(weight)
