"""Meta-sparsity end to end: ``maml``, ``fomaml`` and ``anil`` with a learned λ on tiny shapes."""

from __future__ import annotations

import csv
import math

import pytest
import torch

from sparsekit import Experiment, finetune
from sparsekit.config import ConfigError, build_config
from sparsekit.data.tensor_dataset import MultiTaskTensorDataset
from sparsekit.engine.resolve import train_settings
from sparsekit.interfaces import RegrowthPolicy, TrainingContext
from sparsekit.nn import MultiTaskNet, backbone_conv_weights
from sparsekit.tasks import AttributeTask, DepthTask
from sparsekit_plugins.learners.maml import MAMLLearner
from sparsekit_plugins.loss_combiners.uncertainty import UncertaintyWeighting
from sparsekit_plugins.penalties.group_lasso import GroupLassoPenalty

TINY = {"name": "shapes", "n_train": 32, "n_val": 8, "n_test": 8, "image_size": 16}
STEPS = 4


def run(learner: str | dict = "maml", **fields):
    """A tiny run; ``learner`` is a name (batch 4, α_in 0.1) or a complete learner spec, whose
    λ rule is the meta-gradient rule ``inner_prox`` unless the spec names another."""
    spec = learner if isinstance(learner, dict) else {"name": learner}
    options = {
        "dataset": TINY,
        "tasks": ["segmentation", "depth"],
        "learner": {
            k: v
            for k, v in {
                "batch_size": 4,
                "inner_lr": 0.1,
                "lam_update": "inner_prox",
                **spec,
            }.items()
            if v is not None
        },
        "lam": "learned",
        "steps": STEPS,
        "batch_size": 8,
        "eval_every": 2,
        "device": "cpu",
        "seed": 0,
        **fields,
    }
    return Experiment(**options).run()


def finite_metrics(result) -> bool:
    return all(math.isfinite(v) for task in result.metrics.values() for v in task.values())


@pytest.mark.parametrize("learner", ["maml", "fomaml", "anil"])
def test_learned_lambda_runs_end_to_end(learner):
    result = run(learner, optimizer={"lr": 0.05})
    lam = result.lam_history
    assert len(lam) == STEPS and all(value > 0 for value in lam)
    assert lam[-1] != lam[0]
    assert 0.1 <= result.config["learner"]["lam_init"][0] and all(math.isfinite(v) for v in lam)
    assert 0.0 <= result.sparsity["group"] <= 1.0 and 0.0 <= result.sparsity["parameter"] <= 1.0
    assert finite_metrics(result)
    assert [row["step"] for row in result.profile] == [2, 4]
    assert [row["lam"] for row in result.profile] == [lam[1], lam[3]]
    assert len(result.extra["support_loss"]) == len(result.extra["query_loss"]) == STEPS
    assert sum(result.extra["episode_counts"].values()) == 2 * STEPS


@pytest.mark.parametrize("learner", ["maml", "anil"])
def test_the_default_tolerance_rule_runs_end_to_end(learner):
    """No ``lam_update``: λ₀ drawn on the proxssi scale, held while the metric averages settle
    (one meta-step here), then moved by the constraint; r recorded at every meta-step."""
    result = run({"name": learner, "lam_update": None, "lam_window": 1}, optimizer={"lr": 0.05})
    lam = result.lam_history
    assert result.config["learner"]["lam_update"] == "tolerance"
    assert 0.001 <= lam[0] <= 0.01  # λ₀, held through the first meta-step
    assert all(after != before for before, after in zip(lam, lam[1:], strict=False))
    violation = result.extra["lam_violation"]
    assert violation[0] is None and all(v >= 0 for v in violation[1:])
    assert finite_metrics(result)


def test_meta_learning_is_deterministic_under_a_seed():
    first, second = run("maml", seed=4), run("maml", seed=4)
    assert first.lam_history == second.lam_history
    assert first.metrics == second.metrics
    assert first.extra["query_loss"] == second.extra["query_loss"]
    other = run("maml", seed=5)
    assert other.lam_history[0] != first.lam_history[0]


def test_fixed_lambda_stays_fixed_and_zero_lambda_means_no_sparsity():
    fixed = run("fomaml", lam=0.05)
    assert fixed.lam_history == [0.05] * STEPS
    dense = run("fomaml", lam=0.0, optimizer={"lr": 0.05})
    assert dense.lam_history == [0.0] * STEPS
    assert dense.sparsity == {"group": 0.0, "parameter": 0.0}


def test_strong_learned_lambda_sparsifies_and_per_layer_lambda_is_recorded(tmp_path):
    result = run(
        {"name": "maml", "lam_init": (40.0, 40.0), "lam_per_layer": True},
        optimizer={"lr": 0.05},
        run_dir=tmp_path,
    )
    layers = len(result.layers)
    assert all(isinstance(entry, list) and len(entry) == layers for entry in result.lam_history)
    assert result.sparsity["group"] > 0
    assert result.profile[-1]["lam"] == pytest.approx(sum(result.lam_history[-1]) / layers)
    assert (tmp_path / "lambda_sparsity.png").stat().st_size > 0
    assert (tmp_path / "meta_losses.png").stat().st_size > 0
    # The default csv logger has every layer's λ at every meta-step.
    rows = csv.DictReader((tmp_path / "metrics.csv").read_text().splitlines())
    logged = {(int(r["step"]), r["name"]): float(r["value"]) for r in rows}
    for step, values in enumerate(result.lam_history, start=1):
        assert [logged[step, f"lam_layer/{i:02d}"] for i in range(layers)] == values


def test_early_stopping_restores_the_best_model_and_lambda():
    result = run("anil", steps=8, eval_every=1, patience=2, optimizer={"lr": 0.05})
    best = min(result.profile, key=lambda row: row["val_loss"])
    assert result.best_step == best["step"]
    assert result.extra["final_lam"] == pytest.approx(result.lam_history[best["step"] - 1])


def test_learned_lambda_needs_a_meta_learner_and_a_penalty():
    with pytest.raises(ConfigError, match="lam='learned'.*learner 'mtl'"):
        Experiment(learner="mtl", lam="learned").run()
    with pytest.raises(ConfigError, match="needs a penalty"):
        Experiment(learner="maml", lam="learned", penalty=None).run()
    with pytest.raises(ConfigError, match="lam: .*greater than or equal to 0"):
        Experiment(learner="maml", lam=-0.1)
    with pytest.raises(ConfigError, match="lam_init"):
        Experiment(learner={"name": "maml", "lam_init": (0.5, 0.1)}, lam="learned").run()
    with pytest.raises(ConfigError, match="proxssi"):
        run("maml", optimizer={"name": "proxssi"})
    bad_episode = {"name": "maml", "episodes": [["edges"]], "batch_size": 4}
    with pytest.raises(ConfigError, match=r"learner 'maml': .*unknown task\(s\) \['edges'\]"):
        Experiment(
            dataset=TINY,
            tasks=["segmentation", "depth"],
            learner=bad_episode,
            lam="learned",
            device="cpu",
        ).run()
    with pytest.raises(ConfigError, match="at least 64 training examples"):
        Experiment(
            dataset=TINY,
            tasks=["depth"],
            learner={"name": "maml", "batch_size": 32},
            lam="learned",
            device="cpu",
        ).run()


class RecordingRegrowth(RegrowthPolicy):
    """Records what it is given and regrows every zeroed group with the value 1."""

    name = "recording"

    def __init__(self, meta_weight: torch.Tensor) -> None:
        super().__init__()
        self.meta_weight = meta_weight
        self.calls: list[dict[str, torch.Tensor]] = []
        self.meta_zero_groups: list[int] = []

    def regrow(self, weights, grads, generator):
        self.calls.append(dict(weights))
        masks = {}
        for name, weight in weights.items():
            zero = weight.flatten(2).eq(0).all(dim=2).all(dim=0)
            weight[:, zero] = 1.0
            masks[name] = zero
        meta_zero = self.meta_weight.flatten(2).eq(0).all(dim=2).all(dim=0)
        self.meta_zero_groups.append(int(meta_zero.sum()))
        return masks


def test_regrowth_acts_on_every_episode_clone_only():
    torch.manual_seed(0)
    backbone = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, padding=1, bias=False), torch.nn.BatchNorm2d(4), torch.nn.ReLU()
    )
    heads = {
        "depth": torch.nn.Conv2d(4, 1, 1),
        "attr": torch.nn.Sequential(
            torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(4, 1)
        ),
    }
    model = MultiTaskNet(backbone, heads, {"depth"}, 4)
    with torch.no_grad():
        model.backbone[0].weight[:, 1] = 0.0
    gen = torch.Generator().manual_seed(0)
    train = MultiTaskTensorDataset(
        torch.randn(16, 3, 8, 8, generator=gen),
        {
            "depth": torch.rand(16, 1, 8, 8, generator=gen) + 0.5,
            "attr": torch.randint(0, 2, (16,), generator=gen).float(),
        },
    )
    meta_weight = backbone_conv_weights(model)["backbone.0.weight"]
    policy = RecordingRegrowth(meta_weight)
    learner = MAMLLearner(batch_size=4, episodes_per_batch=3, regrowth=policy)
    context = TrainingContext(
        model=model,
        tasks=[DepthTask("depth"), AttributeTask("attr")],
        train=train,
        val=train,
        penalty=GroupLassoPenalty(),
        lam=0.0,
        combiner=UncertaintyWeighting(["depth", "attr"], 0.0),
        settings=train_settings(build_config({"steps": 2, "device": "cpu"})),
        device=torch.device("cpu"),
        generator=torch.Generator().manual_seed(1),
    )
    learner.fit(context)
    assert len(policy.calls) == 2 * 3
    assert all(call["backbone.0.weight"] is not meta_weight for call in policy.calls)
    # Regrowing the clones of the first meta-step left Θ_meta's zero group at zero.
    assert policy.meta_zero_groups[:3] == [1, 1, 1]


def test_gradient_regrowth_to_zero_is_rejected_in_meta_training():
    with pytest.raises(ConfigError, match="regrowth 'gradient' leaves regrown groups at 0"):
        run({"name": "maml", "regrowth": {"name": "gradient"}})
    xavier = {"name": "gradient", "init": "xavier", "fraction": 0.5}
    result = run({"name": "maml", "regrowth": xavier})
    assert len(result.lam_history) == STEPS


def test_initial_lambda_is_drawn_from_lam_init_per_seed():
    """λ₀ ~ U(0.1, 1) by default: with a negligible λ learning rate λ stays at its draw."""
    frozen = {"name": "maml", "lam_lr": 1e-12}
    starts = [run(frozen, seed=seed).lam_history for seed in (0, 1, 2)]
    for history in starts:
        assert all(0.1 <= value <= 1.0 for value in history)
        assert history[-1] == pytest.approx(history[0], abs=1e-6)
    assert len({round(history[0], 6) for history in starts}) == 3
    narrow = run({**frozen, "lam_init": (0.4, 0.45)}).lam_history
    assert 0.4 <= narrow[0] <= 0.45


META_TASKS = ["segmentation", "depth", "normals"]
#: Momentum and weight decay: either would revive zeroed weights if nothing held them at zero.
SGD = {"name": "sgd_prox", "lr": 0.05, "momentum": 0.9, "weight_decay": 1e-2}


@pytest.fixture(scope="module")
def meta_trained(tmp_path_factory):
    """A ``maml`` run with a learned λ that zeroed some, not all, backbone groups; saved."""
    run_dir = tmp_path_factory.mktemp("runs") / "meta"
    result = run(
        {"name": "maml", "lam_init": (1.5, 1.5)},
        tasks=META_TASKS,
        steps=6,
        optimizer={"lr": 0.01},
        run_dir=run_dir,
    )
    assert 0.05 < result.sparsity["group"] < 0.95, result.sparsity
    assert result.lam_history[-1] != result.lam_history[0]
    return result, run_dir


def zero_masks(model):
    return {n: w.detach() == 0 for n, w in backbone_conv_weights(model).items()}


def assert_zeros_kept(parent, child):
    before, after = zero_masks(parent.model), zero_masks(child.model)
    assert any(m.any() for m in before.values())
    for name, mask in before.items():
        assert torch.equal(after[name], mask), name
    assert child.sparsity == parent.sparsity


@pytest.mark.parametrize("mode", ["head", "all"])
def test_meta_trained_run_meta_tests_with_an_unseen_task(meta_trained, mode):
    from sparsekit.engine.loop import evaluate
    from sparsekit.registry import create

    parent, _ = meta_trained
    tuned = finetune(parent, add_tasks=["edges"], mode=mode, steps=4, optimizer=SGD)
    assert tuned.tasks == [*META_TASKS, "edges"]
    assert_zeros_kept(parent, tuned)
    backbone_same = all(
        torch.equal(a, b)
        for a, b in zip(
            tuned.model.backbone.state_dict().values(),
            parent.model.backbone.state_dict().values(),
            strict=True,
        )
    )
    assert backbone_same == (mode == "head")
    assert tuned.extra["finetune"]["parent_lam"] == pytest.approx(parent.lam_history[-1])
    # The reported metrics are the final model's on the test split, recomputed here.
    provider = create("dataset", TINY)
    tasks = provider.select_tasks(tuned.tasks)
    _, metrics = evaluate(
        tuned.model, provider.load("test", tuned.tasks), tasks, tuned.combiner, torch.device("cpu")
    )
    assert metrics == tuned.metrics


def test_saved_meta_trained_run_finetunes_from_the_cli(meta_trained, tmp_path, capsys):
    import json

    from sparsekit import Result
    from sparsekit.cli import main

    parent, run_dir = meta_trained
    loaded = Result.load(run_dir)
    assert loaded.lam_history == parent.lam_history
    out = tmp_path / "ft"
    code = main(
        ["finetune", str(run_dir), "--add-task", "edges", "--mode", "all", "--steps", "2"]
        + ["--run-dir", str(out)]
    )
    assert code == 0
    saved = json.loads((out / "result.json").read_text())
    assert saved["tasks"] == [*META_TASKS, "edges"]
    assert saved["sparsity"] == parent.sparsity
    assert_zeros_kept(parent, Result.load(out))
