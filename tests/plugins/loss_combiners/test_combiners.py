"""The loss combiners against their closed forms: uncertainty weighting and equal weighting."""

import math

import numpy as np
import pytest
import torch
from torch import nn

import sparsekit


def test_uncertainty_weighting_is_kendalls_closed_form_with_its_gradient():
    combiner = sparsekit.create("loss_combiner", "uncertainty", init_log_var=0.0).build(
        ["a", "b", "c"]
    )
    s = np.array([0.3, -0.7, 1.2])
    with torch.no_grad():
        combiner.log_vars.copy_(torch.from_numpy(s))
    losses = {"a": 2.0, "c": 0.25}  # "b" is absent from this batch
    total = combiner({k: torch.tensor(v, dtype=torch.float32) for k, v in losses.items()})
    expected = math.exp(-s[0]) * 2.0 + s[0] + math.exp(-s[2]) * 0.25 + s[2]
    assert float(total.detach()) == pytest.approx(expected, rel=1e-6)
    total.backward()
    grad = combiner.log_vars.grad.numpy()
    # ∂/∂s_t [exp(−s_t)·L_t + s_t] = 1 − exp(−s_t)·L_t; an absent task gets no gradient.
    np.testing.assert_allclose(
        grad, [1 - math.exp(-s[0]) * 2.0, 0.0, 1 - math.exp(-s[2]) * 0.25], rtol=1e-5
    )


def test_uncertainty_init_and_equal_weighting():
    module = sparsekit.create("loss_combiner", "uncertainty", init_log_var=0.5).build(["x", "y"])
    torch.testing.assert_close(module.log_vars.detach(), torch.full((2,), 0.5))
    assert isinstance(module.log_vars, nn.Parameter) and module.log_vars.requires_grad
    equal = sparsekit.create("loss_combiner", "equal").build(["x", "y"])
    assert list(equal.parameters()) == []
    assert float(equal({"x": torch.tensor(1.5), "y": torch.tensor(-0.25)})) == 1.25
