"""End-to-end experiments on the built-in data: sparsity, determinism, results on disk."""

import json
import math

import pytest
import torch

from sparsekit import Experiment, Result
from sparsekit.engine.sparsity import sparsity

SMALL = {
    "dataset": {"name": "shapes", "n_train": 128, "n_val": 32, "n_test": 32, "image_size": 24},
    "steps": 60,
    "batch_size": 16,
    "eval_every": 20,
    "device": "cpu",
}


def run(**overrides):
    return Experiment(**{**SMALL, **overrides}).run()


@pytest.fixture(scope="module")
def sparse_result(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("runs") / "gl"
    return run(penalty="group_lasso", lam=2.0, run_dir=run_dir), run_dir


def test_group_lasso_gives_group_sparsity_and_finite_metrics(sparse_result):
    result, _ = sparse_result
    assert result.sparsity["group"] > 0.05
    assert 0 < result.sparsity["parameter"] <= 1
    assert set(result.metrics) == {"segmentation", "depth", "normals", "edges"}
    for task, metrics in result.metrics.items():
        assert metrics and all(math.isfinite(v) for v in metrics.values()), task


def test_reported_sparsity_matches_the_weights(sparse_result):
    result, _ = sparse_result
    zero_groups = total_groups = zero_params = total_params = 0
    for module in result.model.backbone.modules():
        if isinstance(module, torch.nn.Conv2d):
            w = module.weight.detach()
            per_group = w.permute(1, 0, 2, 3).reshape(w.shape[1], -1)
            zero_groups += int((per_group.abs().sum(1) == 0).sum())
            total_groups += w.shape[1]
            zero_params += int((w == 0).sum())
            total_params += w.numel()
    assert result.sparsity["group"] == pytest.approx(zero_groups / total_groups)
    assert result.sparsity["parameter"] == pytest.approx(zero_params / total_params)
    active = sum(row["active_after"] for row in result.layers)
    assert active == total_groups - zero_groups


def test_lambda_zero_gives_no_sparsity():
    result = run(penalty="group_lasso", lam=0.0, steps=20)
    assert result.sparsity == {"group": 0.0, "parameter": 0.0}


def test_same_seed_same_metrics_different_seed_different():
    first, second = run(lam=0.1, steps=20, seed=7), run(lam=0.1, steps=20, seed=7)
    assert first.metrics == second.metrics
    assert first.sparsity == second.sparsity
    other = run(lam=0.1, steps=20, seed=8)
    assert other.metrics != first.metrics


def test_uncertainty_log_variances_are_optimised():
    result = run(lam=0.0, steps=20, loss_combiner="uncertainty")
    assert result.combiner.log_vars.detach().abs().sum() > 0


def test_run_directory_reloads(sparse_result):
    result, run_dir = sparse_result
    for name in (
        "config.yaml",
        "result.json",
        "model.pt",
        "sparsity_profile.png",
        "active_channels.png",
    ):
        assert (run_dir / name).is_file(), name
    loaded = Result.load(run_dir)
    assert loaded.metrics == result.metrics
    assert loaded.sparsity == sparsity(loaded.model)
    x = torch.randn(2, 3, 24, 24)
    result.model.eval()
    with torch.no_grad():
        for task, out in result.model(x).items():
            torch.testing.assert_close(loaded.model(x)[task], out)
    profile = json.loads((run_dir / "result.json").read_text())["profile"]
    assert [row["step"] for row in profile] == [20, 40, 60]


def test_early_stopping_keeps_the_best_validation_model():
    result = run(lam=0.0, steps=60, eval_every=10, patience=1, loss_combiner="equal")
    best = min(result.profile, key=lambda row: row["val_loss"])
    assert result.best_step == best["step"]
    if result.stopped_early:
        assert result.profile[-1]["step"] < 60


def test_failure_keeps_config_and_error(tmp_path):
    with pytest.raises(ValueError, match="no task 'sky'"):
        run(tasks=["sky"], run_dir=tmp_path / "bad")
    assert (tmp_path / "bad" / "config.yaml").is_file()
    assert "no task 'sky'" in (tmp_path / "bad" / "error.txt").read_text()


def test_components_accept_names_dicts_and_instances():
    from sparsekit import create

    penalty = create("penalty", "l1")
    result = run(
        penalty=penalty, lam=0.01, steps=5, loss_combiner={"name": "equal"}, tasks=["depth"]
    )
    assert result.config["penalty"] == {"name": "l1"}
    assert result.config["loss_combiner"] == {"name": "equal"}


@pytest.mark.gpu
def test_cuda_mixed_precision_and_pinned_memory():
    result = run(device="cuda", amp=True, pin_memory=True, steps=10, lam=0.1)
    assert all(math.isfinite(v) for m in result.metrics.values() for v in m.values())
    assert next(result.model.parameters()).is_cuda
