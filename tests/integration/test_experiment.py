"""End-to-end experiments on the built-in data: sparsity, determinism, results on disk."""

import json
import math

import numpy as np
import pytest
import torch

import sparsekit
from sparsekit import Experiment, Result
from sparsekit.engine.loop import evaluate
from sparsekit.nn.sparsity import sparsity

SMALL_DATA = {"n_train": 128, "n_val": 32, "n_test": 32, "image_size": 24}
SMALL = {
    "dataset": {"name": "shapes", **SMALL_DATA},
    "steps": 60,
    "batch_size": 16,
    "eval_every": 20,
    "device": "cpu",
    # These tests are about one training phase; the debiasing stage has its own tests.
    "debias_steps": 0,
}


def run(**overrides):
    return Experiment(**{**SMALL, **overrides}).run()


@pytest.fixture(scope="module")
def sparse_result(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("runs") / "gl"
    return run(
        penalty="group_lasso", lam=2.0, optimizer={"name": "adam_prox"}, run_dir=run_dir
    ), run_dir


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
    assert all(row["active_before"] == row["total"] for row in result.layers)  # random init
    assert sum(row["total"] for row in result.layers) == total_groups


def test_timings_are_consistent(sparse_result):
    result, _ = sparse_result
    t = result.timings
    assert set(t) == {"setup_s", "train_s", "test_s", "total_s"}
    assert all(v > 0 for v in t.values())
    assert t["total_s"] == pytest.approx(t["setup_s"] + t["train_s"] + t["test_s"], rel=1e-9)


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


def _splits():
    provider = sparsekit.create("dataset", "shapes", **SMALL_DATA)
    tasks = provider.tasks()
    names = [t.name for t in tasks]
    return tasks, {split: provider.load(split, names) for split in ("val", "test")}


def test_early_stopping_keeps_the_best_validation_model():
    # A learning rate this high makes the validation loss rise again within a few evaluations.
    result = run(
        lam=0.0,
        steps=200,
        eval_every=5,
        patience=2,
        loss_combiner="equal",
        optimizer={"lr": 0.05},
    )
    assert result.stopped_early and result.profile[-1]["step"] < 200
    best = min(result.profile, key=lambda row: row["val_loss"])
    assert result.best_step == best["step"] < result.profile[-1]["step"]
    tasks, splits = _splits()
    val_loss, _ = evaluate(result.model, splits["val"], tasks, result.combiner, torch.device("cpu"))
    # The returned model is the best checkpoint, not the last weights trained.
    assert val_loss == pytest.approx(best["val_loss"], rel=1e-6)
    assert val_loss < result.profile[-1]["val_loss"]


def test_test_metrics_are_those_of_the_returned_model(sparse_result):
    result, _ = sparse_result
    tasks, splits = _splits()
    _, metrics = evaluate(result.model, splits["test"], tasks, result.combiner, torch.device("cpu"))
    assert metrics == result.metrics
    # mIoU recomputed from the model's own predictions with a NumPy confusion matrix.
    images = torch.stack([splits["test"][i][0] for i in range(len(splits["test"]))])
    labels = torch.stack([splits["test"][i][1]["segmentation"] for i in range(len(splits["test"]))])
    result.model.eval()
    with torch.no_grad():
        predicted = result.model(images)["segmentation"].argmax(dim=1).numpy().ravel()
    truth = labels.numpy().ravel()
    confusion = np.zeros((5, 5))
    np.add.at(confusion, (truth, predicted), 1)
    tp = np.diag(confusion)
    union = confusion.sum(0) + confusion.sum(1) - tp
    miou = float(np.mean(tp[union > 0] / union[union > 0]))
    assert result.metrics["segmentation"]["miou"] == pytest.approx(miou, rel=1e-9)


def test_the_test_split_never_influences_training():
    """Runs that differ only in their test scenes train bit-identical models."""
    first = run(lam=0.5, steps=20, eval_every=5, patience=3)
    other_data = {"name": "shapes", **SMALL_DATA, "n_test": 16}
    second = run(lam=0.5, steps=20, eval_every=5, patience=3, dataset=other_data)
    assert first.profile == second.profile and first.best_step == second.best_step
    for (name, a), (_, b) in zip(
        first.model.state_dict().items(), second.model.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name
    assert first.metrics != second.metrics  # the test scenes did differ


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


def test_the_progress_bar_names_each_phase_and_is_off_when_asked(capsys):
    tiny = {**SMALL, "steps": 4, "eval_every": 2, "debias_steps": 2}
    Experiment(**tiny).run(progress=True)
    err = capsys.readouterr().err
    # The penalised phase is tested before debiasing too; its last phases come in this order.
    phases = ["training", "debiasing", "testing", "measuring efficiency"]
    positions = [err.rfind(phase) for phase in phases]
    assert -1 not in positions and positions == sorted(positions), err
    assert "6/6" in err
    Experiment(**tiny).run(progress=False)
    Experiment(**tiny).run()  # not a terminal: no bar by default
    assert capsys.readouterr().err == ""
