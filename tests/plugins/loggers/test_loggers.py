"""The built-in loggers, read back with each tool's own reader and checked against result.json."""

import csv
import json
import math

import pytest
from mlflow.tracking import MlflowClient
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from sparsekit.engine.experiment import Experiment
from sparsekit.interfaces import ComponentConfig, Executor, TaskOutcome
from sparsekit.sweep import Sweep

BASE = {
    "dataset": {"name": "shapes", "n_train": 16, "n_val": 8, "n_test": 8, "image_size": 16},
    "tasks": ["segmentation", "depth"],
    "steps": 6,
    "batch_size": 8,
    "eval_every": 3,
    "lam": 0.05,
    "device": "cpu",
}


@pytest.fixture(scope="module")
def logged(tmp_path_factory):
    """One run logged to csv, TensorBoard and MLflow at once, and its result.json."""
    root = tmp_path_factory.mktemp("logged")
    uri = (root / "mlruns").as_uri()
    run_dir = root / "run"
    Experiment(
        **BASE,
        run_dir=run_dir,
        loggers=["csv", "tensorboard", {"name": "mlflow", "tracking_uri": uri}],
        tags={"who": "test"},
    ).run()
    return run_dir, uri, json.loads((run_dir / "result.json").read_text())


def read_csv(path):
    """The rows of a CSV file as dicts."""
    return list(csv.DictReader(path.read_text().splitlines()))


def final_figures(result):
    """``{name: value}`` of the test metrics and sparsity result.json holds."""
    figures = {
        f"test/{task}/{name}": value
        for task, values in result["metrics"].items()
        for name, value in values.items()
    }
    figures.update({f"final/sparsity/{k}": v for k, v in result["sparsity"].items()})
    return figures


def test_csv_holds_every_step_and_the_final_figures_of_result_json(logged):
    run_dir, _, result = logged
    rows = read_csv(run_dir / "metrics.csv")
    by_name = {}
    for row in rows:
        by_name.setdefault(row["name"], {})[int(row["step"])] = float(row["value"])
    total = result["config"]["steps"] + result["config"]["steps"] // 3  # with debiasing
    assert sorted(by_name["train/loss"]) == list(range(1, total + 1))
    assert set(by_name["train/segmentation/loss"]) == set(by_name["train/loss"])
    for row in result["profile"]:  # every evaluation: loss, validation loss, sparsity
        step = row["step"]
        assert by_name["train/loss"][step] == row["train_loss"]
        assert by_name["val/loss"][step] == row["val_loss"]
        assert by_name["sparsity/parameter"][step] == row["parameter"]
    last = result["profile"][-1]["step"]
    for name, value in final_figures(result).items():
        assert by_name[name][last] == value, name
    assert by_name["final/lam"][last] == 0.05


def test_tensorboard_events_read_back_with_tensorboards_reader(logged):
    run_dir, _, result = logged
    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0})
    events.Reload()
    tags = events.Tags()
    val_loss = {e.step: e.value for e in events.Scalars("val/loss")}
    for row in result["profile"]:
        assert val_loss[row["step"]] == pytest.approx(row["val_loss"], rel=1e-6)
    for name, value in final_figures(result).items():
        assert events.Scalars(name)[-1].value == pytest.approx(value, rel=1e-6, abs=1e-7)
    assert {"plots/sparsity_profile", "plots/active_channels"} <= set(tags["images"])
    assert "lr" in tags["scalars"] and "time/step_s" in tags["scalars"]


def test_mlflow_run_read_back_with_mlflow_client(logged):
    run_dir, uri, result = logged
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("sparsekit")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED" and run.info.run_name == run_dir.name
    assert run.data.tags["who"] == "test"
    assert run.data.params["lam"] == "0.05" and run.data.params["optimizer.lr"] == str(
        result["config"]["optimizer"]["lr"]
    )
    for name, value in final_figures(result).items():
        assert run.data.metrics[name] == pytest.approx(value, rel=1e-12), name
    history = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "val/loss")}
    assert history == {row["step"]: row["val_loss"] for row in result["profile"]}
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"sparsity_profile.png", "config.yaml"} <= artifacts


def test_a_failed_run_ends_its_mlflow_run_failed_and_keeps_its_csv_rows(tmp_path):
    uri = (tmp_path / "mlruns").as_uri()

    def crash(info):
        if info.step == 4:
            raise RuntimeError("stopped by the test")

    experiment = Experiment(
        **BASE, run_dir=tmp_path / "run", loggers=["csv", {"name": "mlflow", "tracking_uri": uri}]
    )
    with pytest.raises(RuntimeError, match="stopped by the test"):
        experiment.run(on_step=crash)
    client = MlflowClient(tracking_uri=uri)
    (run,) = client.search_runs([client.get_experiment_by_name("sparsekit").experiment_id])
    assert run.info.status == "FAILED"
    steps = {int(r["step"]) for r in read_csv(tmp_path / "run" / "metrics.csv")}
    assert steps == {1, 2, 3, 4}


def test_a_run_without_run_dir_logs_nothing_to_csv_and_tensorboard_refuses(tmp_path):
    from sparsekit.errors import ConfigError

    result = Experiment(**BASE, loggers=["csv"], debias_steps=0).run()
    assert math.isfinite(result.metrics["depth"]["mae"])
    with pytest.raises(ConfigError, match="set run_dir, or give the logger a log_dir"):
        Experiment(**BASE, loggers=["tensorboard"]).run()
    assert Experiment(**BASE, loggers=[]).config.loggers == []


class InlineExecutor(Executor):
    """Runs the sweep's calls one after another in this process."""

    name = "inline_logging"

    class Config(ComponentConfig):
        pass

    def map_unordered(self, fn, items, on_start, on_done):
        for index, item in enumerate(items):
            on_start(index)
            on_done(TaskOutcome(index, value=fn(item)))


def test_a_sweep_tags_each_logged_run_with_its_sweep_stage_and_seed(tmp_path):
    uri = (tmp_path / "mlruns").as_uri()
    base = {**BASE, "loggers": [{"name": "mlflow", "tracking_uri": uri}], "debias_steps": 0}
    directory = tmp_path / "my_sweep"
    sweep = Sweep(base=base, seeds=[0, 1], directory=directory, executor=InlineExecutor())
    assert len(sweep.run().finished) == 2
    client = MlflowClient(tracking_uri=uri)
    runs = client.search_runs([client.get_experiment_by_name("sparsekit").experiment_id])
    tags = sorted((r.data.tags["sweep"], r.data.tags["stage"], r.data.tags["seed"]) for r in runs)
    assert tags == [("my_sweep", "main", "0"), ("my_sweep", "main", "1")]
    # Loggers and tags are not part of a run's identity: the same sweep without them is done.
    again = Sweep(
        base={**base, "loggers": []}, seeds=[0, 1], directory=directory, executor=InlineExecutor()
    )
    summary = again.run()
    assert len(summary.skipped) == 2 and not summary.finished
