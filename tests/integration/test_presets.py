"""The ready configs of the frontier study: the over-parameterised preset and the sweep."""

from pathlib import Path

import pytest

from sparsekit.config import load_config
from sparsekit.nn import backbone_conv_weights
from sparsekit.registry import create
from sparsekit.sweep import Sweep

CONFIGS = (
    next(p for p in Path(__file__).resolve().parents if (p / "pyproject.toml").is_file())
    / "configs"
)


def backbone_parameters(model_spec, dataset_spec):
    provider = create("dataset", dataset_spec)
    net = create("model", model_spec).build(provider.select_tasks(None), 3)
    return sum(w.numel() for w in backbone_conv_weights(net).values())


def test_the_over_parameterised_preset_has_four_times_the_parameters_on_a_quarter_of_the_scenes():
    preset = load_config(CONFIGS / "overparameterised_shapes.yaml")
    default = load_config(CONFIGS / "group_lasso_shapes.yaml")
    ratio = backbone_parameters(preset.model, preset.dataset) / backbone_parameters(
        default.model, default.dataset
    )
    assert ratio == pytest.approx(4.0, rel=0.01)
    provider = create("dataset", preset.dataset)
    assert len(provider.load("train", ["depth"])) == 256
    assert len(create("dataset", default.dataset).load("train", ["depth"])) == 1024


def test_the_frontier_sweep_covers_both_regimes_dense_and_the_ablation_switches():
    sweep = Sweep.from_yaml(CONFIGS / "frontier_shapes.yaml")
    assert sweep.config.seeds == [0, 1, 2]
    runs = sweep.runs()
    frontier = [r for r in runs if r.stage == "frontier"]
    regimes = {
        (tuple(r.config["model"]["widths"]), r.config["dataset"]["n_train"]) for r in frontier
    }
    assert regimes == {((16, 32, 64), 1024), ((32, 64, 128), 256)}
    lams = sorted({r.config["lam"] for r in frontier})
    assert lams[0] == 0.0 and len(lams) >= 6  # dense, and a grid dense enough for a curve
    for run in frontier:
        assert run.config["optimizer"]["name"] == "proxssi" and run.config["debias_steps"] is None
    ablation = [r.config for r in runs if r.stage == "ablation"]
    kinds = {c["optimizer"]["name"] for c in ablation}
    assert kinds == {"adam_prox", "sgd_prox", "proxssi"}
    assert any(c["debias_steps"] == 0 for c in ablation)  # the debiasing stage switched off
    assert any(c["lam_warmup"] > 0 for c in ablation)
    assert any(c["steps"] > 600 for c in ablation)  # the training length


def test_the_meta_sparsity_sweeps_are_five_seeds_and_the_half_double_grid_of_the_defaults():
    from sparsekit.config import ExperimentConfig
    from sparsekit_plugins.learners._meta import MetaConfig

    seeds = Sweep.from_yaml(CONFIGS / "meta_sparsity_shapes.yaml")
    assert seeds.config.seeds == [0, 1, 2, 3, 4] and len(seeds.runs()) == 5
    lam_lr, outer_lr = MetaConfig().lam_lr, ExperimentConfig().optimizer.lr
    assert {r.config["learner"]["lam_lr"] for r in seeds.runs()} == {lam_lr}
    grid = Sweep.from_yaml(CONFIGS / "meta_sparsity_lr_grid_shapes.yaml").runs()
    cells = {(r.config["learner"]["lam_lr"], r.config["optimizer"]["lr"]) for r in grid}
    scales = (0.5, 1.0, 2.0)
    assert cells == {(a * lam_lr, b * outer_lr) for a in scales for b in scales}
