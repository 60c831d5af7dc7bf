"""Fine-tuning (meta-testing): the three modes, the kept sparsity pattern, API, CLI and YAML."""

import json
import math

import pytest
import torch
import yaml

from sparsekit import ConfigError, Experiment, Result, finetune
from sparsekit.cli import main
from sparsekit.engine.loop import evaluate
from sparsekit.nn import backbone_conv_weights
from sparsekit.registry import create

DATA = {"name": "shapes", "n_train": 32, "n_val": 8, "n_test": 8, "image_size": 16}
TRAINED = ["segmentation", "depth", "normals"]
# Momentum and weight decay: both would revive zeroed weights if nothing masked them.
SGD = {"name": "sgd_prox", "lr": 0.05, "momentum": 0.9, "weight_decay": 1e-2}
ADAM = {"name": "adam_prox", "lr": 1e-2, "weight_decay": 1e-2}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A run trained with a group lasso strong enough to zero some channel groups, saved."""
    run_dir = tmp_path_factory.mktemp("runs") / "pretrained"
    result = Experiment(
        dataset=DATA,
        tasks=TRAINED,
        penalty="group_lasso",
        lam=0.6,
        steps=16,
        batch_size=8,
        eval_every=8,
        optimizer={"name": "adam_prox", "lr": 0.01},
        debias_steps=0,
        device="cpu",
        run_dir=run_dir,
    ).run()
    zero_groups = result.sparsity["group"]
    assert 0.05 < zero_groups < 0.95, f"needs some zero and some live groups: {zero_groups}"
    return result, run_dir


def snapshot(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def identical(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def zero_masks(model):
    return {n: (w.detach() == 0) for n, w in backbone_conv_weights(model).items()}


def assert_zeros_kept(parent, child):
    """Every backbone weight that was zero is still exactly zero, and nothing else became zero."""
    before, after = zero_masks(parent.model), zero_masks(child.model)
    assert any(m.any() for m in before.values())
    for name, mask in before.items():
        assert torch.equal(after[name], mask), name
        assert not torch.signbit(backbone_conv_weights(child.model)[name][mask]).any()
    assert child.sparsity == parent.sparsity
    assert [r["active_after"] for r in child.layers] == [r["active_after"] for r in parent.layers]


def assert_finite_metrics(result, tasks):
    assert set(result.metrics) == set(tasks)
    for task in tasks:
        assert result.metrics[task] and all(math.isfinite(v) for v in result.metrics[task].values())


def test_mode_head_trains_only_the_new_head(trained):
    parent, _ = trained
    before = snapshot(parent.model)
    tuned = finetune(parent, add_tasks=["edges"], mode="head", steps=6, eval_every=3, optimizer=SGD)
    assert identical(snapshot(parent.model), before), "the parent run must be left unchanged"
    assert tuned.tasks == [*TRAINED, "edges"]
    # Backbone (BatchNorm running statistics included) and old heads: bit-identical.
    assert identical(snapshot(tuned.model.backbone), snapshot(parent.model.backbone))
    for task in TRAINED:
        assert identical(snapshot(tuned.model.heads[task]), snapshot(parent.model.heads[task]))
        assert tuned.metrics[task] == parent.metrics[task]
    # The new head trained: one step from the same seeded initialisation ends elsewhere.
    one_step = finetune(parent, add_tasks=["edges"], mode="head", steps=1, optimizer=SGD)
    assert not identical(
        snapshot(one_step.model.heads["edges"]), snapshot(tuned.model.heads["edges"])
    )
    again = finetune(parent, add_tasks=["edges"], mode="head", steps=1, optimizer=SGD)
    assert identical(snapshot(again.model), snapshot(one_step.model)), "seeded: deterministic"
    assert again.metrics == one_step.metrics
    # Only the new task's loss weight is learned; the old ones are untouched.
    assert torch.equal(tuned.combiner.log_vars[:3], parent.combiner.log_vars)
    assert tuned.combiner.log_vars[3] != 0
    assert_zeros_kept(parent, tuned)
    assert_finite_metrics(tuned, [*TRAINED, "edges"])
    record = tuned.extra["finetune"]
    assert record["trained_tasks"] == ["edges"] and record["added_tasks"] == ["edges"]
    assert tuned.config["finetune"]["mode"] == "head"
    assert tuned.config["tasks"] == TRAINED


def test_mode_all_with_a_new_task_trains_backbone_but_keeps_zeros(trained):
    parent, _ = trained
    tuned = finetune(parent, add_tasks=["edges"], mode="all", steps=6, eval_every=3, optimizer=SGD)
    assert_zeros_kept(parent, tuned)
    for name, w in backbone_conv_weights(tuned.model).items():
        old = backbone_conv_weights(parent.model)[name].detach()
        live = old != 0
        if live.any():
            assert (w.detach()[live] != old[live]).float().mean() > 0.9, name
    for task in TRAINED:
        assert not identical(snapshot(tuned.model.heads[task]), snapshot(parent.model.heads[task]))
    assert_finite_metrics(tuned, [*TRAINED, "edges"])
    assert tuned.extra["finetune"]["trained_tasks"] == [*TRAINED, "edges"]
    assert parent.model.task_names == TRAINED, "the new head belongs to the copy only"


def test_mode_all_on_the_same_tasks_with_adam_weight_decay(trained):
    parent, _ = trained
    tuned = finetune(parent, mode="all", steps=5, eval_every=2, patience=2, optimizer=ADAM)
    assert tuned.tasks == TRAINED
    assert_zeros_kept(parent, tuned)
    live = [(w != 0) for w in backbone_conv_weights(parent.model).values()]
    changed = [
        (a.detach()[m] != b.detach()[m]).any()
        for a, b, m in zip(
            backbone_conv_weights(tuned.model).values(),
            backbone_conv_weights(parent.model).values(),
            live,
            strict=True,
        )
        if m.any()
    ]
    assert all(changed)
    assert 1 <= tuned.best_step <= 5 and len(tuned.profile) >= 1
    # The reported metrics are the final model's on the test split, recomputed here.
    provider = create("dataset", DATA)
    tasks = provider.select_tasks(TRAINED)
    _, metrics = evaluate(
        tuned.model, provider.load("test", TRAINED), tasks, tuned.combiner, torch.device("cpu")
    )
    assert metrics == tuned.metrics


def test_a_subset_of_trained_tasks_keeps_the_others_frozen(trained):
    parent, _ = trained
    tuned = finetune(parent, tasks=["depth"], mode="all", steps=3, optimizer=SGD)
    for task in ("segmentation", "normals"):
        assert identical(snapshot(tuned.model.heads[task]), snapshot(parent.model.heads[task]))
    depth = snapshot(parent.model.heads["depth"])
    assert not identical(snapshot(tuned.model.heads["depth"]), depth)
    assert_zeros_kept(parent, tuned)


def test_loaded_result_finetunes_and_reloads(trained, tmp_path):
    parent, run_dir = trained
    loaded = Result.load(run_dir)
    out = tmp_path / "ft"
    tuned = finetune(loaded, add_tasks=["edges"], mode="head", steps=2, run_dir=out)
    assert_zeros_kept(parent, tuned)
    assert tuned.extra["finetune"]["parent_run_dir"] == str(run_dir)
    again = Result.load(out)
    assert again.tasks == tuned.tasks and again.metrics == tuned.metrics
    assert identical(snapshot(again.model), snapshot(tuned.model))
    assert identical(snapshot(again.combiner), snapshot(tuned.combiner))
    with pytest.raises(ValueError, match="no model"):
        finetune(Result.load(run_dir, with_model=False), add_tasks=["edges"])


def test_invalid_stages_are_clear_errors(trained):
    parent, _ = trained
    with pytest.raises(ConfigError, match="already trained"):
        finetune(parent, add_tasks=["depth"])
    with pytest.raises(ConfigError, match="not tasks of data set"):
        finetune(parent, add_tasks=["no_such_task"])
    with pytest.raises(ConfigError, match="not tasks of this run"):
        finetune(parent, tasks=["edges"])
    with pytest.raises(ConfigError, match="nothing to fine-tune"):
        finetune(parent, tasks=[], mode="head")
    with pytest.raises(ConfigError, match="mode"):
        finetune(parent, mode="backbone")
    with pytest.raises(ConfigError, match="unknown config key 'lam'"):
        finetune(parent, lam=0.1)


def test_cli_finetune_prints_the_table(trained, tmp_path, capsys):
    parent, run_dir = trained
    out = tmp_path / "cli"
    assert (
        main(
            [
                "finetune",
                str(run_dir),
                "--add-task",
                "edges",
                "--mode",
                "head",
                "--steps",
                "2",
                "--set",
                "optimizer.lr=0.01",
                "--run-dir",
                str(out),
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "edges/mae ↓" in printed and "finetune (head)" in printed
    saved = json.loads((out / "result.json").read_text())
    assert saved["tasks"] == [*TRAINED, "edges"]
    assert saved["config"]["finetune"]["optimizer"]["lr"] == 0.01
    assert main(["finetune", str(run_dir), "--add-task", "nope"]) == 2
    assert "not tasks of data set" in capsys.readouterr().err


def test_yaml_two_stage_config(tmp_path, capsys):
    config = {
        "dataset": DATA,
        "tasks": ["segmentation", "depth"],
        "lam": 0.6,
        "steps": 16,
        "batch_size": 8,
        "eval_every": 8,
        "optimizer": {"lr": 0.01},
        "device": "cpu",
        "finetune": {
            "add_tasks": ["edges"],
            "mode": "all",
            "steps": 3,
            "optimizer": {"name": "sgd_prox", "lr": 0.05, "weight_decay": 0.01},
        },
    }
    path = tmp_path / "two_stage.yaml"
    path.write_text(yaml.safe_dump(config))
    run_dir = tmp_path / "run"
    assert main(["run", str(path), "--run-dir", str(run_dir)]) == 0
    assert "19/19" in capsys.readouterr().err  # one progress bar over both stages
    final, pretrained = Result.load(run_dir), Result.load(run_dir / "pretrain")
    assert pretrained.tasks == ["segmentation", "depth"]
    assert pretrained.config["finetune"] is None
    assert final.tasks == ["segmentation", "depth", "edges"]
    assert final.config["finetune"]["add_tasks"] == ["edges"]
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["finetune"]["steps"] == 3
    assert final.extra["finetune"]["parent_run_dir"] == str(run_dir / "pretrain")
    assert_zeros_kept(pretrained, final)
    # The saved two-stage config is a valid experiment config again.
    reread = Experiment.from_yaml(run_dir / "config.yaml").config
    assert reread.finetune is not None and reread.finetune.mode == "all"
