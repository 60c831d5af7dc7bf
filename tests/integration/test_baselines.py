"""Scheduled runs through ``Experiment``: the Table 5 baselines end to end on tiny data."""

import json

import pytest
import torch

from sparsekit import ConfigError, Experiment, Result
from sparsekit.nn import backbone_conv_weights
from sparsekit.nn.masking import zero_channel_groups
from sparsekit_plugins.masks.magnitude import group_rms

TINY = {
    "dataset": {"name": "shapes", "n_train": 32, "n_val": 8, "n_test": 8, "image_size": 16},
    "tasks": ["segmentation", "edges"],
    "steps": 12,
    "batch_size": 8,
    "eval_every": 4,
    "device": "cpu",
}


def zeroed_fraction(model, granularity):
    weights = backbone_conv_weights(model)
    total = sum(w.numel() for w in weights.values())
    if granularity == "element":
        return sum(int(w.detach().eq(0).sum()) for w in weights.values()) / total
    return (
        sum(int(zero_channel_groups(w).sum()) * (w.numel() // w.shape[1]) for w in weights.values())
        / total
    )


def largest_group_fraction(model):
    weights = backbone_conv_weights(model)
    total = sum(w.numel() for w in weights.values())
    return max(w.numel() // w.shape[1] for w in weights.values()) / total


@pytest.fixture(scope="module")
def dense_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("dense")
    Experiment(**TINY, penalty=None, lam=0.0, run_dir=run_dir).run()
    return run_dir


@pytest.mark.parametrize(
    ("scheduler", "mask", "granularity"),
    [
        ("one_shot", "magnitude", "channel"),
        ("iterative", "magnitude", "element"),
        ("progressive", "random", "channel"),
        ({"name": "progressive", "update_every": 2}, "magnitude", "element"),
        ("sparse_training", "random", "channel"),
        (
            {"name": "sparse_training", "regrowth": "random", "update_every": 4},
            "magnitude",
            "channel",
        ),
    ],
)
def test_every_scheduler_reaches_its_target_and_the_zeros_are_exact(scheduler, mask, granularity):
    result = Experiment(
        **TINY,
        penalty=None,
        scheduler=scheduler,
        mask=mask,
        granularity=granularity,
        target=0.4,
        init="random",
    ).run()
    reached = zeroed_fraction(result.model, granularity)
    tolerance = largest_group_fraction(result.model) / 2 if granularity == "channel" else 1e-9
    assert abs(reached - 0.4) <= tolerance + 1e-12
    assert result.sparsity["parameter"] >= reached - 1e-12
    schedule = result.extra["schedule"]
    assert schedule["levels"][-1] == 0.4 and schedule["updates"]
    assert all(m == m for task in result.metrics.values() for m in task.values())


def test_one_shot_from_a_dense_run_prunes_its_lowest_magnitude_groups(dense_run):
    dense = Result.load(dense_run).model
    result = Experiment(
        **TINY,
        penalty=None,
        scheduler="one_shot",
        mask="magnitude",
        init="dense",
        init_from=dense_run,
        target=0.3,
    ).run()
    # The step-0 mask is computed on the dense model's weights: recompute it independently.
    scores = []
    for name, weight in backbone_conv_weights(dense).items():
        rms = group_rms(weight)
        scores += [(float(rms[c]), name, c) for c in range(weight.shape[1])]
    zeroed = {
        (n, c)
        for n, w in backbone_conv_weights(result.model).items()
        for c in torch.nonzero(zero_channel_groups(w)).flatten().tolist()
    }
    lowest = {(n, c) for _, n, c in sorted(scores, key=lambda s: s[0])[: len(zeroed)]}
    assert zeroed == lowest
    assert result.extra["schedule"]["update_steps"] == [0]


def test_init_dense_without_a_checkpoint_trains_a_dense_phase_first():
    result = Experiment(
        **TINY,
        penalty=None,
        scheduler="one_shot",
        mask="magnitude",
        init="dense",
        dense_steps=4,
        target=0.2,
    ).run()
    schedule = result.extra["schedule"]
    assert schedule["dense_steps"] == 4 and schedule["scheduled_steps"] == 8
    assert result.extra["dense_phase"]["profile"]


def test_target_from_run_matches_the_parameter_sparsity_of_that_run(tmp_path):
    source = tmp_path / "source"
    source.mkdir()
    (source / "result.json").write_text(json.dumps({"sparsity": {"parameter": 0.37}}))
    result = Experiment(
        **TINY,
        penalty=None,
        scheduler="progressive",
        mask="magnitude",
        granularity="element",
        target={"from_run": str(source)},
    ).run()
    assert result.extra["schedule"]["target"] == 0.37
    assert abs(zeroed_fraction(result.model, "element") - 0.37) < 1e-4


def test_meta_mask_from_a_run_applies_its_pattern(tmp_path):
    source = tmp_path / "gl"
    learned = Experiment(
        **TINY,
        penalty="group_lasso",
        lam=0.8,
        optimizer={"name": "adam_prox", "lr": 0.01},
        run_dir=source,
    ).run()
    assert learned.sparsity["group"] > 0
    result = Experiment(
        **TINY,
        penalty=None,
        scheduler="sparse_training",
        mask={"name": "meta", "from_run": str(source)},
        target={"from_run": str(source)},
    ).run()
    for name, weight in backbone_conv_weights(learned.model).items():
        theirs = zero_channel_groups(weight)
        ours = zero_channel_groups(backbone_conv_weights(result.model)[name])
        assert torch.all(ours[theirs]), name  # every learned zero group is zero here too


def test_scheduled_run_errors_name_the_culprit(tmp_path, dense_run):
    with pytest.raises(ConfigError, match="needs a mask"):
        Experiment(**TINY, penalty=None, scheduler="one_shot", target=0.3)
    with pytest.raises(ConfigError, match="penalty to None"):
        Experiment(**TINY, scheduler="one_shot", mask="magnitude", target=0.3)
    with pytest.raises(ConfigError, match="set a scheduler"):
        Experiment(**TINY, mask="magnitude")
    with pytest.raises(ConfigError, match="target must be a fraction"):
        Experiment(**TINY, penalty=None, scheduler="one_shot", mask="magnitude", target=1.2)

    def scheduled(**fields):
        """A random-mask one-shot run at 20 %, with ``fields`` changed, run to its first error."""
        Experiment(
            **{**TINY, "penalty": None, "scheduler": "one_shot", "mask": "random", "target": 0.2}
            | fields
        ).run()

    with pytest.raises(ConfigError, match="drives a sparsity schedule"):
        scheduled(learner="maml")
    with pytest.raises(ConfigError, match="cannot read the parameter sparsity"):
        scheduled(target={"from_run": str(tmp_path / "missing")})
    with pytest.raises(ConfigError, match="holds no trained model"):
        scheduled(init="dense", init_from=tmp_path)
    with pytest.raises(ConfigError, match="granularity: channel"):
        scheduled(
            scheduler={"name": "sparse_training", "regrowth": "random"}, granularity="element"
        )
    with pytest.raises(ConfigError, match="does not fit"):
        scheduled(tasks=["segmentation", "depth"], init="dense", init_from=dense_run)
