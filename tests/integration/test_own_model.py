"""Any backbone, any data set, reloadable: torchvision, timm and import-path backbones and data
sets train with group lasso, reload with equal weights, compact exactly, fine-tune and sweep; a
backbone given as an instance trains and says clearly how it can be reloaded."""

import own_code
import pytest
import torch
import yaml

from sparsekit import ConfigError, Experiment, Result, compact, finetune
from sparsekit.interfaces import ComponentConfig, Executor, TaskOutcome
from sparsekit.nn import backbone_conv_weights
from sparsekit.runs.store import compact_run, make_provider
from sparsekit.sweep import Sweep

BASE = {
    "dataset": {"name": "shapes", "n_train": 16, "n_val": 8, "n_test": 8, "image_size": 32},
    "tasks": ["segmentation", "depth"],
    "penalty": "group_lasso",
    "lam": 0.3,
    "optimizer": {"name": "sgd_prox", "lr": 0.05},
    "steps": 3,  # and one debiasing step
    "batch_size": 8,
    "eval_every": 3,
    "device": "cpu",
}

#: Each backbone with a λ that zeroes some, not all, of its channel groups within three steps.
MODELS = {
    "resnet18": ({"name": "torchvision", "arch": "resnet18", "head_channels": 8}, 0.3),
    "vgg11_bn": ({"name": "torchvision", "arch": "vgg11_bn", "head_channels": 8}, 0.15),
    "timm": ({"name": "timm", "arch": "mobilenetv3_small_050", "head_channels": 8}, 1.0),
}

IMPORTED = {
    "model": {"name": "import", "target": "own_code:make_backbone", "kwargs": {"width": 6}},
    "dataset": {"name": "import", "target": "own_code:make_dataset", "kwargs": {"n": 24}},
    "tasks": None,
    "lam": 0.6,
}


class InlineExecutor(Executor):
    """Runs a sweep's calls one after another in this process."""

    name = "inline_own_model"
    Config = ComponentConfig

    def map_unordered(self, fn, items, on_start, on_done):
        for index, item in enumerate(items):
            on_start(index)
            try:
                on_done(TaskOutcome(index, value=fn(item)))
            except Exception as exc:  # noqa: BLE001
                on_done(TaskOutcome(index, error=f"{type(exc).__name__}: {exc}"))


def same_weights(a, b):
    first, second = a.state_dict(), b.state_dict()
    return first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


def sample_images(config, tasks, count=4):
    data = make_provider(config["dataset"]).load("test", tasks)
    return torch.stack([data[i][0] for i in range(count)])


def compact_loaded(run_dir, loaded):
    return loaded.model, compact(loaded.model)


def full_cycle(tmp_path, fields, executor, compacted):
    """Train, reload, compact, fine-tune and sweep one configuration."""
    run_dir = tmp_path / "run"
    result = Experiment(**fields, run_dir=run_dir).run()
    assert 0 < result.sparsity["group"] < 1, result.sparsity
    loaded = Result.load(run_dir)
    assert same_weights(loaded.model, result.model)
    masked, small = compacted(run_dir, loaded)
    x = sample_images(result.config, result.tasks)
    with torch.no_grad():
        expected, got = masked(x), small(x)
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], atol=1e-4, rtol=1e-4)
    assert sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in masked.parameters())
    tuned = finetune(loaded, steps=2)
    before = backbone_conv_weights(loaded.model)
    for name, weight in backbone_conv_weights(tuned.model).items():
        assert torch.equal(weight == 0, before[name] == 0)  # the sparsity pattern is kept
    sweep = Sweep(
        base={**fields, "debias_steps": 0},
        grid={"lam": [0.0, fields["lam"]]},
        directory=tmp_path / "sweep",
        executor=executor,
    )
    summary = sweep.run()
    assert len(summary.finished) == 2, [row.error for row in sweep.store.rows()]


@pytest.mark.parametrize("key", list(MODELS))
def test_a_library_backbone_trains_reloads_compacts_finetunes_and_sweeps(tmp_path, key):
    model, lam = MODELS[key]
    full_cycle(tmp_path, {**BASE, "model": model, "lam": lam}, InlineExecutor(), compact_loaded)


def test_import_paths_of_a_backbone_and_a_data_set_are_rebuilt_everywhere(tmp_path):
    """In a sweep too, whose worker processes import the user's module themselves."""
    local = {"name": "local", "workers": 2, "threads": 1}
    full_cycle(tmp_path, {**BASE, **IMPORTED}, local, lambda run_dir, _: compact_run(run_dir)[:2])
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["model"]["target"] == "own_code:make_backbone"
    assert saved["dataset"] == {**IMPORTED["dataset"]}


def test_a_backbone_given_as_an_instance_trains_saves_and_says_how_to_reload(tmp_path):
    backbone = own_code.TinyNet(width=6)
    untouched = {k: v.clone() for k, v in backbone.state_dict().items()}
    run_dir = tmp_path / "run"
    result = Experiment(**{**BASE, "lam": 0.6}, model=backbone, run_dir=run_dir).run()
    assert {"config.yaml", "result.json", "model.pt"} <= {p.name for p in run_dir.iterdir()}
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())["model"]
    assert saved["name"] == "module" and saved["class"] == "own_code.TinyNet"
    assert all(torch.equal(v, backbone.state_dict()[k]) for k, v in untouched.items())

    with pytest.raises(ConfigError) as error:
        Result.load(run_dir)
    message = str(error.value)
    assert "given as an instance of own_code.TinyNet, which sparsekit cannot rebuild" in message
    assert "Result.load(run_dir, backbone=TinyNet(...))" in message
    assert "model: {name: import, target: 'own_code:make_backbone'}" in message
    with pytest.raises(ConfigError, match="cannot rebuild"):
        compact_run(run_dir)
    with pytest.raises(ConfigError, match="cannot rebuild"):
        Experiment.from_yaml(run_dir / "config.yaml").run()
    assert Result.load(run_dir, with_model=False).metrics == result.metrics

    again = Result.load(run_dir, backbone=own_code.TinyNet(width=6))
    assert same_weights(again.model, result.model)
    with pytest.raises(ConfigError, match="do not fit the given backbone TinyNet"):
        Result.load(run_dir, backbone=own_code.TinyNet(width=4))
    assert finetune(again, steps=2).metrics.keys() == result.metrics.keys()
    assert finetune(result, steps=2, add_tasks=["edges"]).tasks == [*result.tasks, "edges"]


def test_a_sweep_cannot_hold_an_instance_and_says_so_before_running(tmp_path):
    sweep = Sweep(
        base={**BASE, "model": own_code.TinyNet()},
        grid={"lam": [0.0, 0.3]},
        directory=tmp_path,
        executor=InlineExecutor(),
    )
    with pytest.raises(ConfigError, match="cannot be written into a config.*name: import"):
        sweep.run()


def test_own_tensors_train_and_reload_and_fine_tune_when_given_again(tmp_path):
    data = own_code.make_dataset()
    fields = {k: v for k, v in BASE.items() if k not in ("dataset", "tasks")}
    model = {"name": "small_resnet", "widths": [8, 16], "output_stride": 4, "head_channels": 8}
    result = Experiment(**fields, dataset=data, model=model, run_dir=tmp_path).run()
    recorded = yaml.safe_load((tmp_path / "config.yaml").read_text())["dataset"]
    assert recorded["name"] == "in_memory" and recorded["in_channels"] == 3
    loaded = Result.load(tmp_path)  # its model, rebuilt from the recorded tasks
    assert same_weights(loaded.model, result.model)
    with pytest.raises(ConfigError, match="data was given in memory"):
        finetune(loaded, steps=2)
    assert finetune(loaded, steps=2, dataset=data).tasks == ["segmentation", "depth"]
