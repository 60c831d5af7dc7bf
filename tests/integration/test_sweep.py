"""Sweeps end to end: idempotency, fault isolation, divergence, interruption, executors, CLI."""

import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sparsekit.cli import main
from sparsekit.engine.experiment import Experiment
from sparsekit.interfaces import ComponentConfig, Executor, TaskOutcome
from sparsekit.sweep import ResultStore, Sweep, SweepInterrupted

BASE = {
    "dataset": {"name": "shapes", "n_train": 16, "n_val": 8, "n_test": 8, "image_size": 16},
    "tasks": ["segmentation", "edges"],
    "steps": 4,
    "batch_size": 8,
    "eval_every": 2,
    "device": "cpu",
}

FAILING = {
    "penalty": None,
    "scheduler": "one_shot",
    "mask": "random",
    "target": {"from_run": "/nonexistent/run"},
}


class InlineExecutor(Executor):
    """Runs calls one after another in this process (so tests can patch what they run).

    ``interrupt_after`` raises KeyboardInterrupt once that many calls have been reported, as
    Ctrl-C would while the next call runs.
    """

    name = "inline"

    class Config(ComponentConfig):
        interrupt_after: int | None = None

    def map_unordered(self, fn, items, on_start, on_done):
        for index, item in enumerate(items):
            on_start(index)
            if self.config.interrupt_after is not None and index >= self.config.interrupt_after:
                raise KeyboardInterrupt
            try:
                on_done(TaskOutcome(index, value=fn(item)))
            except KeyboardInterrupt:
                raise
            except Exception as exc:  # noqa: BLE001
                on_done(TaskOutcome(index, error=f"{type(exc).__name__}: {exc}"))


def statuses(sweep):
    return {row.run_id: row for row in sweep.store.rows()}


def test_a_failing_run_is_recorded_and_a_second_call_skips_what_finished(tmp_path):
    sweep = Sweep(
        base=BASE,
        cases=[{"lam": 0.0}, {"lam": 0.2}, FAILING],
        seeds=[0],
        directory=tmp_path,
        executor=InlineExecutor(),
    )
    first = sweep.run()
    assert len(first.finished) == 2 and len(first.failed) == 1
    rows = statuses(sweep)
    failed = rows[first.failed[0]]
    assert failed.status == "failed" and "cannot read the parameter sparsity" in failed.error
    for run_id in first.finished:
        assert rows[run_id].status == "finished" and rows[run_id].metrics["edges"]["mae"] > 0
        assert math.isfinite(rows[run_id].sparsity["parameter"])
    second = sweep.run()
    assert sorted(second.skipped) == sorted(first.finished)
    assert second.failed == first.failed  # retried, and failing again
    rows = statuses(sweep)
    assert rows[first.failed[0]].attempts == 2
    assert all(rows[r].attempts == 1 for r in first.finished)
    assert len(rows) == 3


def test_a_diverged_run_fails_with_the_non_finite_metrics_named(tmp_path, monkeypatch):
    original = Experiment.run

    def diverging(self, on_step=None):
        result = original(self, on_step)
        if self.config.lam == 0.2:
            result.metrics["edges"]["mae"] = float("nan")
        return result

    monkeypatch.setattr(Experiment, "run", diverging)
    sweep = Sweep(
        base=BASE, grid={"lam": [0.0, 0.2]}, directory=tmp_path, executor=InlineExecutor()
    )
    summary = sweep.run()
    assert len(summary.finished) == 1 and len(summary.failed) == 1
    error = statuses(sweep)[summary.failed[0]].error
    assert "diverged" in error and "edges.mae" in error


def test_a_run_whose_dependency_failed_is_not_started(tmp_path):
    sweep = Sweep(
        base=BASE,
        stages=[
            {"name": "source", "set": FAILING},
            {
                "name": "after",
                "set": {**FAILING, "target": {"from_run": {"run_of": "source"}}},
            },
        ],
        directory=tmp_path,
        executor=InlineExecutor(),
    )
    summary = sweep.run()
    assert len(summary.failed) == 2 and not summary.finished
    after = next(r for r in sweep.store.rows() if r.stage == "after")
    assert "did not finish" in after.error and after.attempts == 0


def test_an_interrupted_sweep_keeps_what_finished_and_resumes(tmp_path):
    fields = dict(base=BASE, grid={"lam": [0.0, 0.1, 0.2]}, directory=tmp_path)
    sweep = Sweep(**fields, executor=InlineExecutor(interrupt_after=1))
    with pytest.raises(SweepInterrupted) as stop:
        sweep.run()
    assert len(stop.value.summary.finished) == 1 and len(stop.value.summary.interrupted) == 1
    by_status = sorted(r.status for r in sweep.store.rows())
    assert by_status == ["finished", "interrupted", "pending"]
    resumed = Sweep(**fields, executor=InlineExecutor()).run()
    assert len(resumed.skipped) == 1 and len(resumed.finished) == 2
    assert {r.status for r in sweep.store.rows()} == {"finished"}


def sweep_yaml(tmp_path, executor, steps=4, lams=(0.0, 0.2)):
    import yaml

    path = tmp_path / "sweep.yaml"
    data = {
        "directory": str(tmp_path / "out"),
        "base": {**BASE, "steps": steps},
        "grid": {"lam": list(lams)},
        "seeds": [0],
        "executor": executor,
    }
    path.write_text(yaml.safe_dump(data))
    return path


def test_cli_sweep_runs_in_local_workers_and_reports(tmp_path, capsys):
    path = sweep_yaml(tmp_path, {"name": "local", "workers": 2, "threads": 1})
    assert main(["sweep", str(path)]) == 0
    out = capsys.readouterr().out
    assert "segmentation miou ↑" in out and "2 finished, 0 failed" in out
    assert main(["sweep", str(path)]) == 0
    assert "0 finished, 0 failed, 2 already done" in capsys.readouterr().out
    assert main(["sweep", "report", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert out.count("| main |") == 2
    for name in ("report.md", "report.csv", "metrics_vs_sparsity.png", "sweep.db"):
        assert (tmp_path / "out" / name).is_file()


def test_ray_gives_the_same_results_as_local_for_the_same_seeds(tmp_path):
    results = {}
    for name, executor in (
        ("local", {"name": "local", "workers": 2, "threads": 1}),
        ("ray", {"name": "ray", "threads": 1, "num_cpus": 2}),
    ):
        sweep = Sweep(
            base=BASE,
            grid={"lam": [0.0, 0.3]},
            seeds=[0, 1],
            directory=tmp_path / name,
            executor=executor,
        )
        summary = sweep.run()
        assert len(summary.finished) == 4, [r.error for r in sweep.store.rows()]
        results[name] = {
            (r.config["lam"], r.seed): (r.metrics, r.sparsity) for r in sweep.store.rows()
        }
    assert results["ray"] == results["local"]


def test_ctrl_c_stops_the_cli_cleanly_and_keeps_finished_runs(tmp_path):
    path = sweep_yaml(
        tmp_path, {"name": "local", "workers": 1, "threads": 1}, steps=60, lams=(0.0, 0.1, 0.2)
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "sparsekit", "sweep", str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    db = tmp_path / "out" / "sweep.db"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        if db.exists() and ResultStore(db).rows("finished"):
            break
        assert process.poll() is None, process.communicate()
        time.sleep(0.5)
    else:
        process.kill()
        pytest.fail("no run finished in time")
    os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C sends to the terminal's process group
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    assert "interrupted" in err
    rows = ResultStore(db).rows()
    assert {r.status for r in rows} <= {"finished", "interrupted", "pending"}
    assert sum(r.status == "finished" for r in rows) >= 1


def test_the_report_on_the_validation_split_reads_each_runs_validation_metrics(tmp_path):
    import json
    import statistics

    sweep = Sweep(
        base=BASE,
        grid={"lam": [0.0, 0.2]},
        seeds=[0, 1],
        directory=tmp_path,
        executor=InlineExecutor(),
    )
    sweep.run()
    test_table, val_table = sweep.report(), sweep.report(split="val")
    assert (tmp_path / "report_val.md").read_text().strip() == val_table.strip()
    assert (tmp_path / "metrics_vs_sparsity_val.png").stat().st_size > 0
    assert (tmp_path / "report.md").read_text().strip() == test_table.strip()  # not overwritten
    rows = [r for r in sweep.store.rows() if r.overrides["lam"] == 0.2]
    val = [json.loads((Path(r.run_dir) / "result.json").read_text())["val_metrics"] for r in rows]
    mean = statistics.mean(v["edges"]["mae"] for v in val)
    test_mean = statistics.mean(r.metrics["edges"]["mae"] for r in rows)
    assert f"{mean:.4f}" in val_table and f"{mean:.4f}" not in test_table
    assert f"{test_mean:.4f}" in test_table
    with pytest.raises(ValueError, match="split"):
        sweep.report(split="train")
