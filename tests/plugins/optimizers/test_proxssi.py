"""Why proxssi is the default of penalised mtl runs: its prox commutes with rescaling a layer.

A conv layer followed by BatchNorm computes the same function for weights w and c·w (c > 0),
and its loss gradient scales as 1/c, so Adam's metric D = √v̂ + ε scales as 1/c too (ε aside).
The prox in that metric is then equivariant, prox(c·z; D/c) = c·prox(z; D): which groups die
does not depend on the layer's arbitrary scale. The plain prox has an absolute threshold, so
shrinking a whole layer (which the loss does not oppose under BatchNorm) decides what is zeroed.
The closed forms below are checked against the implementation, not against each other.
"""

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sparsekit_plugins.penalties.group_lasso import GroupLassoPenalty

PENALTY = GroupLassoPenalty()


def point(seed):
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(6, 5, 3, 3, generator=gen, dtype=torch.float64)
    z[:, 1] *= 0.05  # a weak group, near the threshold
    d = torch.rand(6, 5, 3, 3, generator=gen, dtype=torch.float64) + 0.1
    return z, d


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), scale=st.floats(0.05, 20.0), lam=st.floats(0.01, 2.0))
def test_the_preconditioned_prox_is_equivariant_to_a_layers_scale(seed, scale, lam):
    z, d = point(seed)
    base = PENALTY.prox(z, 0.1, lam, precond=d)
    scaled = PENALTY.prox(scale * z, 0.1, lam, precond=d / scale)
    torch.testing.assert_close(scaled, scale * base, rtol=1e-9, atol=1e-12)


def test_the_plain_prox_zeroes_by_absolute_size_so_a_shrunken_layer_loses_groups():
    z, _ = point(0)
    lam, step = 0.2, 0.1
    # Group norms of z, and the threshold step·λ·√n_g of the closed form (Eq. 5).
    tau = step * lam * (6 * 3 * 3) ** 0.5
    norms = z.square().sum(dim=(0, 2, 3)).sqrt()
    for scale in (1.0, 0.1, 0.01):
        zeroed = PENALTY.prox(scale * z, step, lam).abs().amax(dim=(0, 2, 3)) == 0
        assert torch.equal(zeroed, scale * norms <= tau)
    counts = [
        int((PENALTY.prox(s * z, step, lam).abs().amax(dim=(0, 2, 3)) == 0).sum())
        for s in (1.0, 0.1, 0.01)
    ]
    assert counts[0] < counts[-1] == 5  # the same layer, only smaller: every group dies
