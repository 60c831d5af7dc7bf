"""Proximal optimisers checked against optimisers and proximal steps written out in NumPy."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

from sparsekit.config import OptimizerConfig
from sparsekit.nn.optim import ProximalOptimizer
from sparsekit.registry import create
from sparsekit_plugins.penalties import GroupLassoPenalty, L1Penalty

SHAPES = {"conv1": (4, 3, 3, 3), "conv2": (6, 4, 1, 1), "bias": (6,)}
PENALISED = ("conv1", "conv2")
STEPS = 4


def make_params(seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    params = {
        k: torch.randn(s, generator=gen, dtype=torch.float64) * 0.1 for k, s in SHAPES.items()
    }
    params["conv1"][:, 2] *= 0.01  # a weak input channel the prox can remove
    return {k: p.requires_grad_() for k, p in params.items()}


def gradients(seed: int = 1) -> list[dict[str, np.ndarray]]:
    """A fixed gradient sequence, so optimisers are compared on identical inputs."""
    rng = np.random.default_rng(seed)
    return [{k: rng.standard_normal(s) * 0.05 for k, s in SHAPES.items()} for _ in range(STEPS)]


def set_grads(params: dict[str, torch.Tensor], grads: dict[str, np.ndarray]) -> None:
    for k, p in params.items():
        p.grad = torch.from_numpy(grads[k].copy())


def np_group_prox(z: np.ndarray, t: float, d: np.ndarray | None = None) -> np.ndarray:
    """Plain group prox (threshold t·√n_g), written per input channel."""
    assert d is None
    out = np.zeros_like(z)
    n_g = z.size // z.shape[1]
    tau = t * math.sqrt(n_g)
    for c in range(z.shape[1]):
        norm = np.linalg.norm(z[:, c])
        if norm > tau:
            out[:, c] = (1 - tau / norm) * z[:, c]
    return out


def np_adam(grads_seq, params0, lr, betas, eps, wd, prox_t=None):
    """Adam (L2 weight decay added to the gradient, as torch.optim.Adam) then the group prox."""
    p = {k: v.detach().numpy().copy() for k, v in params0.items()}
    m = {k: np.zeros_like(v) for k, v in p.items()}
    v = {k: np.zeros_like(x) for k, x in p.items()}
    for t, grads in enumerate(grads_seq, start=1):
        for k in p:
            g = grads[k] + wd * p[k]
            m[k] = betas[0] * m[k] + (1 - betas[0]) * g
            v[k] = betas[1] * v[k] + (1 - betas[1]) * g * g
            m_hat = m[k] / (1 - betas[0] ** t)
            v_hat = v[k] / (1 - betas[1] ** t)
            p[k] = p[k] - lr * m_hat / (np.sqrt(v_hat) + eps)
            if prox_t is not None and k in PENALISED:
                p[k] = np_group_prox(p[k], prox_t)
    return p


def np_sgd(grads_seq, params0, lr, momentum, wd, prox_t=None):
    """SGD with heavy-ball momentum (buffer starts at the first gradient) then the group prox."""
    p = {k: v.detach().numpy().copy() for k, v in params0.items()}
    buf: dict[str, np.ndarray] = {}
    for grads in grads_seq:
        for k in p:
            g = grads[k] + wd * p[k]
            buf[k] = g.copy() if k not in buf else momentum * buf[k] + g
            p[k] = p[k] - lr * buf[k]
            if prox_t is not None and k in PENALISED:
                p[k] = np_group_prox(p[k], prox_t)
    return p


def run(opt: ProximalOptimizer, params: dict[str, torch.Tensor], grads_seq) -> None:
    for grads in grads_seq:
        opt.zero_grad()
        set_grads(params, grads)
        opt.step()


def make(params, penalised, penalty, lam, config: OptimizerConfig | None = None):
    """The optimiser of ``config``'s kind (the default kind when unset)."""
    config = config if config is not None else OptimizerConfig()
    kind = create("optimizer", config.name or "default")
    return kind.build(params, penalised, penalty, lam, config)


def build(params, name: str, lam, penalty=None, **cfg) -> ProximalOptimizer:
    penalty = GroupLassoPenalty() if penalty is None else penalty
    config = OptimizerConfig(name=name, **cfg)
    return make(list(params.values()), [params[k] for k in PENALISED], penalty, lam, config)


@pytest.mark.parametrize("wd", [0.0, 0.01])
def test_adam_prox_matches_handwritten_adam_then_closed_form_prox(wd: float) -> None:
    params, grads = make_params(), gradients()
    lr, lam = 0.01, 2.0
    expected = np_adam(grads, params, lr, (0.9, 0.999), 1e-8, wd, prox_t=lr * lam)
    run(build(params, "adam_prox", lam, lr=lr, weight_decay=wd), params, grads)
    assert np.all(expected["conv1"][:, 2] == 0), "the weak channel should be pruned"
    assert np.all(np.any(expected["conv1"][:, [0, 1]] != 0, axis=(0, 2, 3))), "but not the others"
    for k, p in params.items():
        np.testing.assert_allclose(p.detach().numpy(), expected[k], rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("wd", [0.0, 0.01])
def test_sgd_prox_matches_handwritten_momentum_sgd_then_closed_form_prox(wd: float) -> None:
    params, grads = make_params(), gradients()
    lr, lam, mom = 0.05, 0.2, 0.9
    expected = np_sgd(grads, params, lr, mom, wd, prox_t=lr * lam)
    run(build(params, "sgd_prox", lam, lr=lr, momentum=mom, weight_decay=wd), params, grads)
    assert np.all(expected["conv1"][:, 2] == 0), "the weak channel should be pruned"
    for k, p in params.items():
        np.testing.assert_allclose(p.detach().numpy(), expected[k], rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("name", ["adam_prox", "sgd_prox", "proxssi"])
@pytest.mark.parametrize("variant", ["lam0", "lam0_tensor", "no_penalty"])
def test_without_penalty_the_trajectory_is_exactly_torchs(name: str, variant: str) -> None:
    params, grads = make_params(), gradients()
    reference = {k: v.detach().clone().requires_grad_() for k, v in params.items()}
    lam = torch.zeros((), dtype=torch.float64) if variant == "lam0_tensor" else 0.0
    penalty = None if variant == "no_penalty" else GroupLassoPenalty()
    opt = make(
        list(params.values()),
        [params[k] for k in PENALISED],
        penalty,
        lam,
        OptimizerConfig(name=name, lr=0.01),
    )
    if name == "sgd_prox":
        torch_opt: torch.optim.Optimizer = torch.optim.SGD(
            list(reference.values()), lr=0.01, momentum=0.9
        )
    else:
        torch_opt = torch.optim.Adam(list(reference.values()), lr=0.01)
    run(opt, params, grads)
    for g in grads:
        torch_opt.zero_grad()
        set_grads(reference, g)
        torch_opt.step()
    for k in params:
        assert torch.equal(params[k], reference[k]), k


def test_proxssi_zeroes_a_group_iff_metric_norm_below_threshold() -> None:
    params, grads = make_params(), gradients()
    lr, betas, eps = 0.01, (0.9, 0.999), 1e-8
    # The state after one plain Adam step: z and D = √v̂ + ε, written out here.
    z = np_adam(grads[:1], params, lr, betas, eps, 0.0)
    d = {k: np.sqrt(grads[0][k] ** 2) + eps for k in PENALISED}  # v̂₁ = g₁²
    ratios = []  # ‖D⊙z_g‖ / (lr·√n_g): λ at which group g turns zero
    for k in PENALISED:
        n_g = z[k].size // z[k].shape[1]
        ratios += [
            np.linalg.norm((d[k] * z[k])[:, c]) / (lr * math.sqrt(n_g))
            for c in range(z[k].shape[1])
        ]
    ratios.sort()
    lam = 0.5 * (ratios[3] + ratios[4])  # four groups below, the rest above, no ties
    opt = build(params, "proxssi", lam, lr=lr)
    run(opt, params, grads[:1])
    zeroed = 0
    for k in PENALISED:
        x, zk, dk = params[k].detach().numpy(), z[k], d[k]
        tau = lr * lam * math.sqrt(zk.size // zk.shape[1])
        for c in range(zk.shape[1]):
            below = np.linalg.norm(dk[:, c] * zk[:, c]) <= tau
            assert np.all(x[:, c] == 0) == below, (k, c)
            zeroed += below
            if not below:  # the non-zero groups solve D(x − z) + τ x/‖x‖ = 0
                xc = x[:, c]
                residual = dk[:, c] * (xc - zk[:, c]) + tau * xc / np.linalg.norm(xc)
                assert np.abs(residual).max() < 1e-9 * np.linalg.norm(dk[:, c] * zk[:, c])
    assert zeroed == 4
    np.testing.assert_allclose(params["bias"].detach().numpy(), z["bias"], rtol=1e-12)


def test_proxssi_threshold_differs_from_adam_prox() -> None:
    """The same λ prunes differently under the Adam metric: λ is not comparable across kinds."""
    out = {}
    for name in ("adam_prox", "proxssi"):
        params = make_params()
        run(build(params, name, 0.5, lr=0.01), params, gradients())
        out[name] = params["conv1"].detach().clone()
    assert not torch.allclose(out["adam_prox"], out["proxssi"])


def test_prox_uses_each_param_groups_current_lr() -> None:
    """With zero gradients Adam does not move, so one step is the prox alone at that lr."""
    params = make_params()
    w0 = {k: p.detach().numpy().copy() for k, p in params.items()}
    groups = [
        {"params": [params["conv1"]], "lr": 0.1},
        {"params": [params["conv2"], params["bias"]], "lr": 0.01},
    ]
    opt = make(groups, [params[k] for k in PENALISED], GroupLassoPenalty(), 0.3)
    scheduler = torch.optim.lr_scheduler.StepLR(opt.inner, step_size=1, gamma=0.5)
    zero = {k: np.zeros(s) for k, s in SHAPES.items()}
    run(opt, params, [zero])
    np.testing.assert_allclose(params["conv1"].detach().numpy(), np_group_prox(w0["conv1"], 0.03))
    np.testing.assert_allclose(params["conv2"].detach().numpy(), np_group_prox(w0["conv2"], 0.003))
    scheduler.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.05)
    w1 = params["conv1"].detach().numpy().copy()
    run(opt, params, [zero])
    np.testing.assert_allclose(params["conv1"].detach().numpy(), np_group_prox(w1, 0.015))


def test_other_penalty_is_applied() -> None:
    params = make_params()
    w0 = params["conv2"].detach().numpy().copy()
    opt = build(params, "adam_prox", 2.0, penalty=L1Penalty(), lr=0.01)
    run(opt, params, [{k: np.zeros(s) for k, s in SHAPES.items()}])
    expected = np.sign(w0) * np.maximum(np.abs(w0) - 0.02, 0)
    np.testing.assert_allclose(params["conv2"].detach().numpy(), expected)


@pytest.mark.parametrize("name", ["adam_prox", "sgd_prox", "proxssi"])
def test_state_dict_round_trip_continues_identically(name: str) -> None:
    grads = gradients()
    a = make_params()
    opt_a = build(a, name, 0.3, lr=0.01)
    run(opt_a, a, grads[:2])
    state = copy.deepcopy(opt_a.state_dict())
    b = {k: v.detach().clone().requires_grad_() for k, v in a.items()}
    opt_b = build(b, name, 0.0, lr=0.01)
    opt_b.load_state_dict(state)
    assert opt_b.lam == 0.3
    run(opt_a, a, grads[2:])
    run(opt_b, b, grads[2:])
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_state_dict_restores_tensor_lam_in_place_and_checks_kind() -> None:
    params = make_params()
    lam = torch.tensor(0.25, dtype=torch.float64)
    opt = build(params, "adam_prox", lam, lr=0.01)
    state = opt.state_dict()
    lam.fill_(0.9)
    opt.load_state_dict(state)
    assert opt.lam is lam and lam.item() == 0.25
    other = build(make_params(), "sgd_prox", 0.1)
    with pytest.raises(ValueError, match="adam_prox"):
        other.load_state_dict(state)


def test_validation_and_alias() -> None:
    params = make_params()
    with pytest.raises(ValueError, match="not among"):
        make([params["bias"]], [params["conv1"]], GroupLassoPenalty(), 0.1)
    with pytest.raises(ValueError, match="≥ 0"):
        build(params, "adam_prox", -1.0)
    opt = make(list(params.values()), [params["conv1"]], None, 0.1)
    assert isinstance(opt, ProximalOptimizer) and opt.config.name == "adam_prox"
    opt.lam = 0.2
    assert opt.lam == 0.2
    with pytest.raises(ValueError, match="0-d"):
        opt.lam = torch.ones(2)
