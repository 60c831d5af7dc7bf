"""The parts of joint multi-task training: loss combiners, early stopping, devices, tables.

References are written out here: the uncertainty weighting's closed form and derivative, a
hand-made checkpoint sequence, and a table whose cells are computed from the numbers given.
"""

import math

import numpy as np
import pytest
import torch
from torch import nn

import sparsekit
from sparsekit.engine.loop import EarlyStopping
from sparsekit.engine.runtime import resolve_device
from sparsekit.reporting.tables import results_table
from sparsekit.runs.store import Result


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


def test_early_stopping_keeps_the_lowest_validation_loss_and_counts_patience():
    model = nn.Linear(2, 1, bias=False)
    stopper = EarlyStopping(patience=2, modules=[model])
    sequence = [(10, 3.0, 1.0), (20, 1.0, 2.0), (30, 1.5, 3.0), (40, 1.0, 4.0)]
    for step, val_loss, weight in sequence:
        with torch.no_grad():
            model.weight.fill_(weight)
        stopper.update(step, val_loss)
    # 1.0 at step 20 is the best; an equal loss later (step 40) is not an improvement.
    assert stopper.best_step == 20 and stopper.best_loss == 1.0
    assert stopper.bad_evals == 2 and stopper.should_stop
    stopper.restore_best()
    assert torch.equal(model.weight, torch.full((1, 2), 2.0))
    assert not EarlyStopping(patience=None, modules=[model]).should_stop


def test_auto_device_picks_cuda_when_present(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(RuntimeError, match="no CUDA device"):
        resolve_device("cuda")


def _result(metrics, group, parameter, lam):
    return Result(
        config={"lam": lam},
        tasks=list(metrics),
        metrics=metrics,
        metric_directions={"segmentation": {"miou": True}, "depth": {"mae": False}},
        sparsity={"group": group, "parameter": parameter},
        layers=[],
        profile=[],
        timings={},
    )


def test_results_table_prints_metrics_and_sparsity_in_percent():
    rows = [
        ("dense", _result({"segmentation": {"miou": 0.51234}, "depth": {"mae": 0.3}}, 0, 0, 0.0)),
        ("gl", _result({"segmentation": {"miou": 0.4}}, 0.375, 0.612, 0.3)),
    ]
    lines = results_table(rows).splitlines()
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert header == [
        "run",
        "segmentation/miou ↑",
        "depth/mae ↓",
        "λ",
        "group sp. %",
        "param. sp. %",
    ]
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in lines[2:]]
    assert cells[0] == ["dense", "0.5123", "0.3000", "0", "0.0", "0.0"]
    assert cells[1] == ["gl", "0.4000", "—", "0.3", "37.5", "61.2"]
