"""Group lasso and l1 penalties: values, prox operators and their gradients.

Every reference here is computed independently: closed forms in NumPy, the optimality (KKT)
conditions of the prox problem, a generic numerical minimiser (SciPy), and finite differences.
"""

from __future__ import annotations

import math

import numpy as np
import pydantic
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from scipy.optimize import minimize

from sparsekit_plugins.penalties import GroupLassoPenalty, L1Penalty, sparsekit_register_penalties
from sparsekit_plugins.penalties.group_lasso import SQ_NORM_BLOCK_ELEMENTS

GROUP = GroupLassoPenalty()
L1 = L1Penalty()
PROPERTY = settings(max_examples=60, deadline=None)


# ---------------------------------------------------------------- NumPy references


def np_groups(z: np.ndarray) -> np.ndarray:
    """``[C_in, n_g]``: one row per input channel (dim 1)."""
    return np.moveaxis(z, 1, 0).reshape(z.shape[1], -1)


def np_ungroup(rows: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    moved = (shape[1], shape[0], *shape[2:])
    return np.moveaxis(rows.reshape(moved), 0, 1)


def np_group_prox(z: np.ndarray, t: float) -> np.ndarray:
    """Group soft-thresholding with threshold t·√n_g, row by row."""
    rows = np_groups(z)
    tau = t * math.sqrt(rows.shape[1])
    out = np.zeros_like(rows)
    for g, row in enumerate(rows):
        norm = math.sqrt(float(np.sum(row * row)))
        if norm > tau:
            out[g] = (1.0 - tau / norm) * row
    return np_ungroup(out, z.shape)


def np_soft_threshold(z: np.ndarray, t: np.ndarray | float) -> np.ndarray:
    return np.sign(z) * np.maximum(np.abs(z) - t, 0.0)


# ---------------------------------------------------------------- strategies


@st.composite
def weights(draw: st.DrawFn, min_dims: int = 2) -> np.ndarray:
    """A float64 weight, 2-D (Linear) or 4-D (conv), some input channels exactly zero."""
    four_d = draw(st.booleans()) if min_dims == 2 else True
    c_out = draw(st.integers(1, 5))
    c_in = draw(st.integers(1, 6))
    shape = (
        (c_out, c_in, draw(st.integers(1, 3)), draw(st.integers(1, 3))) if four_d else (c_out, c_in)
    )
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    scale = draw(st.sampled_from([1e-3, 1.0, 30.0]))
    z = rng.standard_normal(shape) * scale
    zero = draw(st.lists(st.booleans(), min_size=c_in, max_size=c_in))
    z[:, np.array(zero, dtype=bool)] = 0.0
    return z


steps = st.sampled_from([1e-4, 1e-2, 0.1, 1.0])
lams = st.floats(0.0, 20.0, allow_nan=False)


def as_tensor(z: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(z.copy())


# ---------------------------------------------------------------- group lasso: plain prox


@PROPERTY
@given(z=weights(), step=steps, lam=lams)
def test_group_prox_matches_numpy_closed_form(z: np.ndarray, step: float, lam: float) -> None:
    expected = np_group_prox(z, step * lam)
    got = GROUP.prox(as_tensor(z), step, lam).numpy()
    # Groups within rounding of the threshold may land on either side; both results are tiny
    # there (continuity of the prox), which the absolute tolerance allows for.
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-12 * max(1.0, np.abs(z).max()))


@PROPERTY
@given(z=weights(), step=steps, lam=lams)
def test_group_prox_inplace_equals_prox(z: np.ndarray, step: float, lam: float) -> None:
    expected = GROUP.prox(as_tensor(z), step, lam)
    w = as_tensor(z)
    assert GROUP.prox_(w, step, lam) is w
    torch.testing.assert_close(w, expected, rtol=1e-12, atol=1e-14 * max(1.0, np.abs(z).max()))


@pytest.mark.parametrize("layout", ["blocked", "transposed", "tensor_lam"])
def test_group_prox_inplace_other_paths(layout: str) -> None:
    """Large (row-blocked norms), non-contiguous and tensor-λ inputs give the closed form."""
    rng = np.random.default_rng(3)
    c_in, k = 20, 5
    c_out = SQ_NORM_BLOCK_ELEMENTS // (c_in * k * k) * 2 + 7  # two full blocks and a ragged one
    z = rng.standard_normal((c_out, c_in, k, k))
    z[:, ::2] *= 0.005  # these groups fall below τ
    t = 0.02 * 0.5
    expected = np_group_prox(z, t)
    assert 0 < (np.abs(np_groups(expected)).sum(1) == 0).sum() < c_in, "λ should zero some groups"
    if layout == "transposed":
        w = as_tensor(np.ascontiguousarray(np.moveaxis(z, 0, 1))).transpose(0, 1)
        assert not w.is_contiguous()
    else:
        w = as_tensor(z)
    lam: float | torch.Tensor = torch.tensor(0.5) if layout == "tensor_lam" else 0.5
    GROUP.prox_(w, 0.02, lam)
    np.testing.assert_allclose(w.numpy(), expected, rtol=1e-10, atol=1e-12)


def test_group_prox_float32_blocked_matches_float64() -> None:
    rng = np.random.default_rng(4)
    z = rng.standard_normal((2000, 16, 3, 3))  # 288k elements: several row blocks
    z[:, ::3] *= 0.05  # these groups fall below τ
    w = torch.from_numpy(z).float()
    GROUP.prox_(w, 0.01, 8.0)
    np.testing.assert_allclose(w.numpy(), np_group_prox(z, 0.08), rtol=2e-4, atol=2e-6)


def test_group_right_at_threshold_is_zero_and_neighbours_continuous() -> None:
    rng = np.random.default_rng(5)
    z = rng.standard_normal((3, 4, 2, 2))
    n_g = 12
    norm0 = float(np.linalg.norm(z[:, 0]))
    step, lam = 0.5, norm0 / (0.5 * math.sqrt(n_g))  # τ equals ‖z_0‖ up to rounding
    got = GROUP.prox(as_tensor(z), step, lam).numpy()
    assert np.linalg.norm(got[:, 0]) <= 1e-12 * norm0
    others = np_group_prox(z, step * lam)[:, 1:]
    np.testing.assert_allclose(got[:, 1:], others, rtol=1e-10, atol=1e-12)
    just_above = GROUP.prox(as_tensor(z), step, lam * (1 - 1e-9)).numpy()
    assert 0 < np.linalg.norm(just_above[:, 0]) <= 2e-9 * norm0


def test_group_prox_zero_lam_is_identity_and_zero_groups_stay_zero() -> None:
    z = np.random.default_rng(6).standard_normal((4, 3, 3, 3))
    z[:, 1] = 0
    for lam in (0.0, torch.tensor(0.0, dtype=torch.float64)):
        np.testing.assert_array_equal(GROUP.prox(as_tensor(z), 0.1, lam).numpy(), z)
        w = as_tensor(z)
        GROUP.prox_(w, 0.1, lam)
        np.testing.assert_array_equal(w.numpy(), z)


# ---------------------------------------------------------------- group lasso: preconditioned


def prox_objective(x: np.ndarray, z: np.ndarray, d: np.ndarray, tau: float) -> float:
    return float(0.5 * np.sum(d * (x - z) ** 2) + tau * np.linalg.norm(x))


@PROPERTY
@given(
    z=weights(),
    step=steps,
    lam=lams,
    seed=st.integers(0, 2**32 - 1),
    spread=st.sampled_from([1.0, 3.0, 100.0]),
)
def test_precond_group_prox_satisfies_optimality(
    z: np.ndarray, step: float, lam: float, seed: int, spread: float
) -> None:
    """Zero iff ‖D⊙z_g‖ ≤ τ; otherwise D(x − z) + τ x/‖x‖ = 0 (the prox problem's KKT)."""
    d = np.random.default_rng(seed).uniform(1.0, spread, size=z.shape) * 0.7
    x = GROUP.prox(as_tensor(z), step, lam, precond=as_tensor(d)).numpy()
    zr, dr, xr = np_groups(z), np_groups(d), np_groups(x)
    tau = step * lam * math.sqrt(zr.shape[1])
    for zg, dg, xg in zip(zr, dr, xr, strict=True):
        dz = float(np.linalg.norm(dg * zg))
        assume(abs(dz - tau) > 1e-9 * max(dz, tau, 1e-300))
        if dz <= tau:
            assert np.all(xg == 0)
        else:
            r = np.linalg.norm(xg)
            assert r > 0
            residual = dg * (xg - zg) + tau * xg / r
            assert np.abs(residual).max() <= 1e-9 * max(dz, 1e-300)


@pytest.mark.parametrize("seed", range(6))
def test_precond_group_prox_matches_scipy_minimiser(seed: int) -> None:
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((3, 4, 1, 2))
    d = rng.uniform(0.1, 10.0, size=z.shape)
    tau = 0.3 * 0.5 * math.sqrt(6)
    x = np_groups(GROUP.prox(as_tensor(z), 0.3, 0.5, precond=as_tensor(d)).numpy())
    for zg, dg, xg in zip(np_groups(z), np_groups(d), x, strict=True):
        res = minimize(
            prox_objective,
            zg,
            args=(zg, dg, tau),
            method="Nelder-Mead",
            options={"xatol": 1e-10, "fatol": 1e-14, "maxiter": 40000},
        )
        ours = prox_objective(xg, zg, dg, tau)
        assert ours <= res.fun + 1e-10
        np.testing.assert_allclose(xg, res.x, atol=1e-4)


@PROPERTY
@given(z=weights(), step=steps, lam=lams, c=st.sampled_from([1.0, 0.25, 7.0]))
def test_precond_constant_metric_is_plain_prox_rescaled(
    z: np.ndarray, step: float, lam: float, c: float
) -> None:
    """D = c·1 turns ½c‖x−z‖² + τ‖x‖ into the plain prox with threshold τ/c."""
    got = GROUP.prox(as_tensor(z), step, lam, precond=torch.full(z.shape, c, dtype=torch.float64))
    expected = np_group_prox(z, step * lam / c)
    np.testing.assert_allclose(
        got.numpy(), expected, rtol=1e-9, atol=1e-11 * max(1.0, np.abs(z).max())
    )


@PROPERTY
@given(z=weights(), step=steps, lam=lams, seed=st.integers(0, 2**32 - 1))
def test_precond_group_prox_inplace_equals_prox(
    z: np.ndarray, step: float, lam: float, seed: int
) -> None:
    d = as_tensor(np.random.default_rng(seed).uniform(0.01, 5.0, size=z.shape))
    expected = GROUP.prox(as_tensor(z), step, lam, precond=d)
    w = as_tensor(z)
    GROUP.prox_(w, step, lam, precond=d)
    torch.testing.assert_close(w, expected, rtol=1e-12, atol=1e-14 * max(1.0, np.abs(z).max()))


# ---------------------------------------------------------------- gradients


def _margin_weight(rng: np.random.Generator) -> tuple[torch.Tensor, float]:
    """A conv weight with one zero group and every other norm well clear of τ."""
    z = rng.standard_normal((3, 5, 2, 2))
    z[:, 2] = 0.0
    z[:, 4] *= 0.01  # far below τ: zeroed
    return as_tensor(z), 0.05  # step; with λ = 1, τ = 0.05·√12 ≈ 0.17


@pytest.mark.parametrize("with_precond", [False, True])
def test_group_prox_gradcheck_weight_and_lam(with_precond: bool) -> None:
    rng = np.random.default_rng(7)
    z, step = _margin_weight(rng)
    d = as_tensor(rng.uniform(0.5, 2.0, size=z.shape)) if with_precond else None
    w = z.clone().requires_grad_()
    lam = torch.tensor(1.0, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: GROUP.prox(a, step, b, precond=d), (w, lam))


@pytest.mark.parametrize("with_precond", [False, True])
def test_l1_prox_gradcheck_weight_and_lam(with_precond: bool) -> None:
    rng = np.random.default_rng(8)
    t = 0.2
    # |z| well inside (0, t) or well beyond t, so no element sits on a kink.
    mags = np.where(rng.random(20) < 0.5, rng.uniform(0.0, 0.1, 20), rng.uniform(0.5, 2.0, 20))
    z = as_tensor(mags * rng.choice([-1.0, 1.0], 20))
    d = as_tensor(rng.uniform(0.8, 1.25, 20)) if with_precond else None
    w = z.clone().requires_grad_()
    lam = torch.tensor(1.0, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: L1.prox(a, t, b, precond=d), (w, lam))


@pytest.mark.parametrize("with_precond", [False, True])
def test_no_nan_gradient_through_all_zero_group(with_precond: bool) -> None:
    w = torch.randn(4, 3, 3, 3, dtype=torch.float64)
    w[:, 1] = 0.0
    w.requires_grad_()
    lam = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    d = torch.rand(4, 3, 3, 3, dtype=torch.float64) + 0.5 if with_precond else None
    loss = (GROUP.prox(w, 0.1, lam, precond=d) ** 2).sum() + GROUP.value(w)
    loss.backward()
    assert torch.isfinite(w.grad).all() and torch.isfinite(lam.grad)
    # The zero group's gradient is √n_g·(subgradient 0) from value() and 0 from the prox.
    assert torch.all(w.grad[:, 1] == 0)
    # Also with λ = 0, where the zero group is not thresholded away but stays zero.
    w.grad = None
    GROUP.prox(w, 0.1, torch.zeros((), dtype=torch.float64), precond=d).sum().backward()
    assert torch.isfinite(w.grad).all()


# ---------------------------------------------------------------- values and masks


@PROPERTY
@given(z=weights())
def test_group_value_and_active_mask(z: np.ndarray) -> None:
    rows = np_groups(z)
    expected = math.sqrt(rows.shape[1]) * np.linalg.norm(rows, axis=1).sum()
    assert GROUP.value(as_tensor(z)).item() == pytest.approx(expected, rel=1e-12, abs=1e-300)
    mask = GROUP.active_mask(as_tensor(z))
    assert mask.dtype == torch.bool and mask.shape == (z.shape[1],)
    np.testing.assert_array_equal(mask.numpy(), np.any(rows != 0, axis=1))


def test_group_lasso_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError, match="input-channel"):
        GROUP.prox(torch.ones(5), 0.1, 1.0)
    with pytest.raises(ValueError, match="precond"):
        GROUP.prox(torch.ones(2, 3), 0.1, 1.0, precond=torch.ones(3, 2))
    with pytest.raises(ValueError, match="precond"):
        L1.prox(torch.ones(2, 3), 0.1, 1.0, precond=torch.ones(6))


# ---------------------------------------------------------------- l1


@PROPERTY
@given(
    z=weights(), step=steps, lam=lams, seed=st.integers(0, 2**32 - 1), with_precond=st.booleans()
)
def test_l1_prox_matches_numpy_soft_threshold(
    z: np.ndarray, step: float, lam: float, seed: int, with_precond: bool
) -> None:
    d = np.random.default_rng(seed).uniform(0.1, 10.0, size=z.shape) if with_precond else None
    t = step * lam / d if d is not None else step * lam
    expected = np_soft_threshold(z, t)
    precond = as_tensor(d) if d is not None else None
    got = L1.prox(as_tensor(z), step, lam, precond=precond)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-12, atol=1e-12 * max(1.0, step * lam))
    w = as_tensor(z)
    assert L1.prox_(w, step, lam, precond=precond) is w
    np.testing.assert_allclose(
        w.numpy(), got.numpy(), rtol=1e-12, atol=1e-12 * max(1.0, step * lam)
    )


@PROPERTY
@given(z=weights())
def test_l1_value_and_active_mask(z: np.ndarray) -> None:
    assert L1.value(as_tensor(z)).item() == pytest.approx(np.abs(z).sum(), rel=1e-12, abs=0)
    np.testing.assert_array_equal(L1.active_mask(as_tensor(z)).numpy(), z != 0)


def test_l1_tensor_lam_and_step() -> None:
    z = torch.tensor([-2.0, -0.05, 0.0, 0.3, 1.0], dtype=torch.float64)
    expected = np_soft_threshold(z.numpy(), 0.25)
    got = L1.prox(z, torch.tensor(0.5), torch.tensor(0.5, dtype=torch.float64))
    np.testing.assert_allclose(got.numpy(), expected, rtol=0, atol=1e-15)
    w = z.clone()
    L1.prox_(w, torch.tensor(0.5), torch.tensor(0.5))
    np.testing.assert_allclose(w.numpy(), expected, rtol=0, atol=1e-7)


# ---------------------------------------------------------------- registration


def test_hook_registers_both_penalties_with_empty_configs() -> None:
    registered: list[type] = []
    sparsekit_register_penalties(register=registered.append)
    by_name = {cls.name: cls for cls in registered}
    assert by_name == {"group_lasso": GroupLassoPenalty, "l1": L1Penalty}
    assert GroupLassoPenalty.granularity == "channel" and L1Penalty.granularity == "element"
    for cls in registered:
        assert cls().spec() == {"name": cls.name}
        with pytest.raises(pydantic.ValidationError):
            cls(lam=0.1)
