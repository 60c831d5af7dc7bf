"""Regrowth policies: only zeroed groups change, r_p statistics, Xavier scale, RigL top-k."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from scipy import stats

from sparsekit import create
from sparsekit.interfaces import ComponentConfig, RegrowthPolicy
from sparsekit.testing import check_regrowth
from sparsekit_plugins.regrowth import GradientRegrowth, NoRegrowth, RandomRegrowth


def sparse_weights(seed=0, zero_share=0.5, shapes=((6, 10, 3, 3), (4, 12, 1, 1), (8, 5, 3, 3))):
    """Random conv weights with a random share of their input-channel groups set to zero."""
    gen = torch.Generator().manual_seed(seed)
    weights = {}
    for i, shape in enumerate(shapes):
        w = torch.randn(*shape, generator=gen, dtype=torch.float64)
        zero = torch.rand(shape[1], generator=gen) < zero_share
        w[:, zero] = 0.0
        weights[f"layer{i}.weight"] = w
    return weights


def zero_groups_np(w):
    """Independent NumPy reference: which input-channel groups are all zero."""
    arr = w.detach().numpy()
    return np.all(arr.transpose(1, 0, 2, 3).reshape(arr.shape[1], -1) == 0, axis=1)


def clone(weights):
    return {k: v.clone() for k, v in weights.items()}


def assert_only_masked_groups_changed(before, after, masks):
    for name, old in before.items():
        new, mask = after[name], masks[name].numpy()
        zero = zero_groups_np(old)
        assert not (mask & ~zero).any(), "a non-zero group was regrown"
        keep = ~mask
        # Bit-identical: compare the raw bytes, not just values.
        assert np.array_equal(
            old[:, keep].numpy().view(np.int64), new[:, keep].numpy().view(np.int64)
        )


def test_none_regrows_nothing():
    weights = sparse_weights()
    before = clone(weights)
    masks = NoRegrowth().regrow(weights, None, torch.Generator().manual_seed(0))
    assert all(not m.any() for m in masks.values())
    assert all(torch.equal(weights[k], before[k]) for k in weights)


@settings(max_examples=25, deadline=None)
@given(prob=st.floats(0.0, 1.0), seed=st.integers(0, 2**16), zero_share=st.floats(0.0, 1.0))
def test_random_changes_only_zeroed_groups(prob, seed, zero_share):
    weights = sparse_weights(seed, zero_share)
    before = clone(weights)
    masks = RandomRegrowth(prob=prob).regrow(weights, None, torch.Generator().manual_seed(seed))
    assert_only_masked_groups_changed(before, weights, masks)
    for name, w in weights.items():
        # A regrown group holds fresh Xavier values: non-zero (with probability one).
        assert not zero_groups_np(w)[masks[name].numpy()].any()


def test_random_prob_zero_and_one():
    weights = sparse_weights(zero_share=0.6)
    before = clone(weights)
    none = RandomRegrowth(prob=0.0).regrow(weights, None, torch.Generator().manual_seed(1))
    assert all(not m.any() for m in none.values())
    assert all(torch.equal(weights[k], before[k]) for k in weights)
    every = RandomRegrowth(prob=1.0).regrow(weights, None, torch.Generator().manual_seed(1))
    for name, old in before.items():
        assert np.array_equal(every[name].numpy(), zero_groups_np(old))
        assert not zero_groups_np(weights[name]).any(), "every zeroed group must regrow"


def test_random_regrowth_rate_matches_prob():
    # 3 layers × 4000 groups, about half zero: the regrown count is Binomial(n_zero, r_p).
    weights = sparse_weights(seed=3, shapes=((2, 4000, 1, 1),) * 3)
    n_zero = sum(int(zero_groups_np(w).sum()) for w in weights.values())
    for prob in (0.05, 0.3, 0.8):
        trial = clone(weights)
        masks = RandomRegrowth(prob=prob).regrow(trial, None, torch.Generator().manual_seed(7))
        regrown = sum(int(m.sum()) for m in masks.values())
        sigma = math.sqrt(n_zero * prob * (1 - prob))
        assert abs(regrown - n_zero * prob) < 5 * sigma, (prob, regrown, n_zero)
        assert stats.binomtest(regrown, n_zero, prob).pvalue > 1e-6


def test_random_regrowth_is_independent_per_group():
    # Indicators of regrowth over many groups: adjacent groups uncorrelated (no block choice).
    weights = {"w": torch.zeros(2, 20000, 1, 1, dtype=torch.float64)}
    mask = RandomRegrowth(prob=0.5).regrow(weights, None, torch.Generator().manual_seed(0))["w"]
    x = mask.numpy().astype(float)
    r = np.corrcoef(x[:-1], x[1:])[0, 1]
    assert abs(r) < 5 / math.sqrt(x.size)


def test_random_regrowth_uses_xavier_uniform_with_layer_fans():
    c_out, c_in, k = 48, 32, 3
    weights = {"w": torch.zeros(c_out, c_in, k, k, dtype=torch.float64)}
    RandomRegrowth(prob=1.0, gain=2.0).regrow(weights, None, torch.Generator().manual_seed(0))
    fan_in, fan_out = c_in * k * k, c_out * k * k
    bound = 2.0 * math.sqrt(6.0 / (fan_in + fan_out))
    values = weights["w"].flatten().numpy()
    assert np.abs(values).max() <= bound
    # Kolmogorov–Smirnov against U(−a, a), an independent check of the distribution.
    assert stats.kstest(values, stats.uniform(loc=-bound, scale=2 * bound).cdf).pvalue > 1e-4


def test_random_regrowth_is_seeded():
    a, b, c = sparse_weights(), sparse_weights(), sparse_weights()
    policy = RandomRegrowth(prob=0.5)
    ma = policy.regrow(a, None, torch.Generator().manual_seed(11))
    mb = policy.regrow(b, None, torch.Generator().manual_seed(11))
    mc = policy.regrow(c, None, torch.Generator().manual_seed(12))
    assert all(torch.equal(ma[k], mb[k]) and torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(ma[k], mc[k]) or not torch.equal(a[k], c[k]) for k in a)


def expected_topk(weight, grad, k_of):
    """NumPy reference: indices of the zeroed groups with the largest gradient norms."""
    zero = np.flatnonzero(zero_groups_np(weight))
    g = grad.numpy()
    norms = np.sqrt((g.transpose(1, 0, 2, 3).reshape(g.shape[1], -1) ** 2).sum(axis=1))
    order = zero[np.argsort(-norms[zero], kind="stable")]
    mask = np.zeros(weight.shape[1], dtype=bool)
    mask[order[: k_of(zero.size)]] = True
    return mask


@pytest.mark.parametrize(
    ("params", "k_of"),
    [
        ({"fraction": 0.5}, lambda n: math.floor(0.5 * n + 0.5)),
        ({"fraction": 0.3}, lambda n: math.floor(0.3 * n + 0.5)),
        ({"fraction": 1.0}, lambda n: n),
        ({"count": 2}, lambda n: min(2, n)),
        ({"count": 100}, lambda n: n),
    ],
)
def test_gradient_regrows_top_k_by_gradient_norm(params, k_of):
    weights = sparse_weights(seed=5, zero_share=0.6, shapes=((6, 40, 3, 3), (4, 25, 1, 1)))
    gen = torch.Generator().manual_seed(9)
    grads = {k: torch.randn(w.shape, generator=gen, dtype=w.dtype) for k, w in weights.items()}
    before = clone(weights)
    masks = GradientRegrowth(**params).regrow(weights, grads, torch.Generator().manual_seed(0))
    for name in weights:
        assert np.array_equal(masks[name].numpy(), expected_topk(before[name], grads[name], k_of))
    # RigL's zero initialisation: the weights themselves are untouched.
    assert all(torch.equal(weights[k], before[k]) for k in weights)


def test_gradient_with_xavier_init_fills_exactly_the_chosen_groups():
    weights = sparse_weights(seed=2, zero_share=0.5)
    gen = torch.Generator().manual_seed(4)
    grads = {k: torch.randn(w.shape, generator=gen, dtype=w.dtype) for k, w in weights.items()}
    before = clone(weights)
    masks = GradientRegrowth(fraction=0.5, init="xavier").regrow(
        weights, grads, torch.Generator().manual_seed(0)
    )
    assert_only_masked_groups_changed(before, weights, masks)
    for name, w in weights.items():
        assert not zero_groups_np(w)[masks[name].numpy()].any()
    assert any(m.any() for m in masks.values())


def test_gradient_needs_gradients():
    with pytest.raises(ValueError, match="no gradients were given"):
        GradientRegrowth().regrow(sparse_weights(), None, torch.Generator())
    weights = sparse_weights()
    grads = {k: torch.ones_like(w) for k, w in list(weights.items())[:1]}
    with pytest.raises(ValueError, match="no gradient for layer1.weight"):
        GradientRegrowth().regrow(weights, grads, torch.Generator())


def test_configs_validate_and_registry_creates():
    assert isinstance(create("regrowth", "random", prob=0.2), RandomRegrowth)
    assert isinstance(create("regrowth", "gradient", count=3), GradientRegrowth)
    assert isinstance(create("regrowth", "none"), NoRegrowth)
    for bad in ({"prob": 1.5}, {"prob": -0.1}, {"rp": 0.1}):
        with pytest.raises(ValidationError):
            RandomRegrowth.Config(**bad)
    for bad in ({"fraction": 2.0}, {"count": -1}, {"init": "kaiming"}):
        with pytest.raises(ValidationError):
            GradientRegrowth.Config(**bad)


class _RegrowsEverything(RegrowthPolicy):
    """A broken policy: it overwrites non-zero groups too."""

    name = "broken"

    class Config(ComponentConfig):
        pass

    def regrow(self, weights, grads, generator):
        for w in weights.values():
            w.add_(1.0)
        return {k: torch.zeros(w.shape[1], dtype=torch.bool) for k, w in weights.items()}


def test_contract_check_catches_a_policy_touching_live_groups(tmp_path):
    with pytest.raises(AssertionError, match="kept group changed|non-zero group"):
        check_regrowth(_RegrowsEverything, tmp_path)
