"""The group-lasso recipe: proxssi by default for mtl, the masked debiasing stage, λ warm-up,
validation metrics of the final model."""

import json

import numpy as np
import pytest
import torch

from sparsekit.config import ConfigError
from sparsekit.engine.experiment import PRETRAIN_DIR, Experiment
from sparsekit.engine.loop import evaluate
from sparsekit.nn import backbone_conv_weights
from sparsekit.registry import create
from sparsekit.runs.store import Result
from sparsekit_plugins.learners.mtl import warmed_up_lambda

SMALL = {
    "dataset": {"name": "shapes", "n_train": 32, "n_val": 16, "n_test": 16, "image_size": 16},
    "tasks": ["segmentation", "depth"],
    "batch_size": 8,
    "eval_every": 5,
    "device": "cpu",
    "seed": 0,
}


def zero_masks(model):
    return {name: (w.detach() == 0) for name, w in backbone_conv_weights(model).items()}


def test_debiasing_holds_the_zeros_and_trains_the_rest_without_the_penalty(tmp_path):
    result = Experiment(**SMALL, lam=0.02, steps=30, debias_steps=15, run_dir=tmp_path).run()
    pretrained = Result.load(tmp_path / PRETRAIN_DIR)
    assert pretrained.sparsity["parameter"] > 0.2  # the penalty zeroed something to hold
    before, after = zero_masks(pretrained.model), zero_masks(result.model)
    assert before.keys() == after.keys()
    for name in before:
        assert torch.equal(before[name], after[name]), name  # not one zero more or less
    assert result.sparsity == pretrained.sparsity
    old = backbone_conv_weights(pretrained.model)
    new = backbone_conv_weights(result.model)
    moved = [
        name for name in old if not torch.equal(old[name][~before[name]], new[name][~before[name]])
    ]
    assert moved == list(old)  # every layer's surviving weights were trained
    # Without the penalty the shrunken groups grow back: the backbone's norm rises.
    norm = lambda ws: float(sum(w.detach().square().sum() for w in ws.values()))  # noqa: E731
    assert norm(new) > norm(old)
    record = result.extra["finetune"]
    assert record["mode"] == "all" and record["parent_sparsity"] == pretrained.sparsity
    # The whole run's profile: 30 penalised steps, then 15 debiasing steps, evaluated every 5.
    assert [row["step"] for row in result.profile] == list(range(5, 46, 5))
    assert [row["parameter"] for row in result.profile[6:]] == [
        pretrained.sparsity["parameter"]
    ] * 3
    assert result.best_step == 45 and result.extra["debias"]["steps_before"] == 30
    assert [row["active_before"] for row in result.layers] == [
        row["total"] for row in result.layers
    ]
    assert result.config["debias_steps"] == 15 and result.config["finetune"] is None
    assert Result.load(tmp_path).metrics == result.metrics


def test_the_debiasing_stage_defaults_to_a_third_of_the_steps_and_zero_skips_it(tmp_path):
    default = Experiment(**SMALL, lam=0.02, steps=12, run_dir=tmp_path / "a").run()
    assert (tmp_path / "a" / PRETRAIN_DIR).is_dir()
    assert default.profile[-1]["step"] == 12 + 4  # steps // 3 debiasing steps
    skipped = Experiment(**SMALL, lam=0.02, steps=12, debias_steps=0, run_dir=tmp_path / "b").run()
    assert not (tmp_path / "b" / PRETRAIN_DIR).exists() and "finetune" not in skipped.extra
    dense = Experiment(**SMALL, lam=0.0, steps=12).run()  # λ = 0 gets the same budget
    assert "finetune" in dense.extra and dense.sparsity["parameter"] == 0.0


@pytest.mark.parametrize(
    "fields",
    [
        {"penalty": None},
        {"learner": "maml", "lam": "learned"},
        {"penalty": None, "scheduler": "one_shot", "mask": "magnitude", "target": 0.3},
        {"finetune": {"steps": 3}},
    ],
    ids=["no-penalty", "meta-learner", "scheduled", "explicit-finetune"],
)
def test_only_penalised_mtl_runs_are_debiased(fields):
    result = Experiment(**{**SMALL, "steps": 6, "lam": 0.02, **fields}).run()
    record = result.extra.get("finetune")
    if "finetune" in fields:
        assert record is not None and "debias" not in result.extra
    else:
        assert record is None


def test_the_optimiser_kind_defaults_to_the_learners_and_an_explicit_kind_is_kept():
    mtl = Experiment(**SMALL, steps=3, debias_steps=0).run()
    assert mtl.config["optimizer"]["name"] == "proxssi"
    meta = Experiment(**SMALL, steps=2, learner="maml", lam="learned").run()
    assert meta.config["optimizer"]["name"] == "adam_prox"
    explicit = Experiment(**SMALL, steps=3, debias_steps=0, optimizer={"name": "adam_prox"}).run()
    assert explicit.config["optimizer"]["name"] == "adam_prox"
    # The kind decides the trajectory: proxssi and adam_prox zero different weights.
    a = zero_masks(Experiment(**SMALL, steps=20, lam=0.05, debias_steps=0).run().model)
    b = zero_masks(
        Experiment(**SMALL, steps=20, lam=0.05, debias_steps=0, optimizer={"name": "adam_prox"})
        .run()
        .model
    )
    assert any(not torch.equal(a[name], b[name]) for name in a)


def test_lambda_warm_up_is_linear_then_constant():
    assert warmed_up_lambda(0.3, 1, 0) == 0.3
    assert [warmed_up_lambda(0.3, s, 4) for s in (1, 2, 4, 9)] == pytest.approx(
        [0.075, 0.15, 0.3, 0.3]
    )
    result = Experiment(**SMALL, lam=0.04, lam_warmup=10, steps=20, debias_steps=0).run()
    lams = {row["step"]: row["lam"] for row in result.profile}
    assert lams == pytest.approx({5: 0.02, 10: 0.04, 15: 0.04, 20: 0.04})


def test_a_meta_learner_refuses_a_lambda_warm_up_it_would_ignore():
    with pytest.raises(ConfigError, match="lam_warmup"):
        Experiment(**SMALL, steps=2, learner="maml", lam="learned", lam_warmup=5).run()


def test_validation_metrics_are_those_of_the_final_model(tmp_path):
    result = Experiment(**SMALL, lam=0.02, steps=10, debias_steps=5, run_dir=tmp_path).run()
    provider = create("dataset", SMALL["dataset"])
    tasks = provider.select_tasks(SMALL["tasks"])
    val = provider.load("val", SMALL["tasks"])
    # Depth MAE over valid pixels recomputed with NumPy from the final model's predictions.
    model = result.model.eval()
    errors, count = 0.0, 0
    with torch.no_grad():
        for index in range(len(val)):
            image, targets = val[index]
            pred = model(image[None], ["depth"])["depth"][0].numpy()
            target = targets["depth"].numpy()
            valid = target > 0
            errors += float(np.abs(pred - target)[valid].sum())
            count += int(valid.sum())
    assert result.val_metrics["depth"]["mae"] == pytest.approx(errors / count, rel=1e-4)
    _, again = evaluate(model, val, tasks, result.combiner, torch.device("cpu"))
    for task, metrics in again.items():
        assert metrics == pytest.approx(result.val_metrics[task])
    assert result.val_metrics != result.metrics
    saved = json.loads((tmp_path / "result.json").read_text())
    assert saved["val_metrics"] == result.val_metrics
