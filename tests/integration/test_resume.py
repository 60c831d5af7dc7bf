"""A run interrupted by a signal and resumed ends exactly where an uninterrupted run ends.

Each case runs the same experiment twice on the CPU with one thread: once straight through,
once sent SIGINT (or SIGTERM) from its own step callback and then resumed with
``resume=True``. Weights, metrics, the profile and λ must be bit-identical.
"""

from __future__ import annotations

import json
import os
import signal

import pytest
import torch

from sparsekit import Experiment, Result
from sparsekit.errors import ConfigError, RunInterrupted

TINY = {"name": "shapes", "n_train": 32, "n_val": 8, "n_test": 8, "image_size": 16}
BASE = {
    "dataset": TINY,
    "tasks": ["segmentation", "depth"],
    "batch_size": 8,
    "eval_every": 3,
    "device": "cpu",
    "checkpoint_every": 2,
}
CASES = {
    # mtl with a penalty, then its debiasing stage (steps 9–10 are the second stage)
    "mtl": ({"steps": 8, "lam": 0.3}, [5, 9]),
    # early stopping that stops and restores the best weights
    "mtl-patience": ({"steps": 9, "lam": 0.1, "eval_every": 1, "patience": 1}, [2]),
    "maml": (
        {
            "steps": 6,
            "learner": {"name": "maml", "batch_size": 4, "inner_lr": 0.1},
            "lam": "learned",
            "eval_every": 2,
        },
        [3],
    ),
    # λ moved by the tolerance controller, whose averages and best values are checkpointed
    "maml-tolerance": (
        {
            "steps": 6,
            "learner": {
                "name": "maml",
                "batch_size": 4,
                "lam_update": "tolerance",
                "lam_window": 1,
                "lam_init": [0.01, 0.01],
            },
            "optimizer": {"name": "adam_prox", "lr": 0.01},
            "lam": "learned",
            "eval_every": 2,
        },
        [4],
    ),
    "fomaml": (
        {"steps": 4, "learner": {"name": "fomaml", "batch_size": 4}, "lam": "learned"},
        [3],
    ),
    "anil": (
        {"steps": 4, "learner": {"name": "anil", "batch_size": 4}, "lam": "learned"},
        [2],
    ),
    # a dense phase of 3 steps, then a progressive schedule with magnitude masks
    "scheduled": (
        {
            "steps": 8,
            "penalty": None,
            "scheduler": "progressive",
            "mask": "magnitude",
            "target": 0.5,
            "init": "dense",
            "dense_steps": 3,
        },
        [2, 6],
    ),
}


def interrupt_at(step: int, number: int = signal.SIGINT):
    def on_step(info):
        if info.step == step:
            os.kill(os.getpid(), number)

    return on_step


def assert_same(resumed: Result, full: Result) -> None:
    assert resumed.metrics == full.metrics and resumed.val_metrics == full.val_metrics
    assert resumed.sparsity == full.sparsity and resumed.layers == full.layers
    assert resumed.profile == full.profile and resumed.lam_history == full.lam_history
    assert resumed.best_step == full.best_step and resumed.stopped_early == full.stopped_early
    ours, theirs = resumed.model.state_dict(), full.model.state_dict()
    assert ours.keys() == theirs.keys()
    for name in ours:
        assert torch.equal(ours[name], theirs[name]), name


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    root = tmp_path_factory.mktemp("full")
    return {
        name: Experiment(**{**BASE, **fields}, run_dir=root / name).run()
        for name, (fields, _) in CASES.items()
    }


@pytest.mark.parametrize(
    ("case", "at"), [(name, at) for name, (_, steps) in CASES.items() for at in steps]
)
def test_a_resumed_run_is_bit_identical_to_an_uninterrupted_one(tmp_path, uninterrupted, case, at):
    fields, _ = CASES[case]
    run_dir = tmp_path / "run"
    with pytest.raises(RunInterrupted) as stop:
        Experiment(**{**BASE, **fields}, run_dir=run_dir).run(on_step=interrupt_at(at))
    assert stop.value.step == at and stop.value.exit_status == 130
    state = json.loads((run_dir / "state.json").read_text())
    assert state["status"] == "interrupted" and state["step"] == at
    assert not (run_dir / "result.json").exists() and list((run_dir / "checkpoints").glob("*.pt"))
    with pytest.raises(FileNotFoundError):
        Result.load(run_dir)  # nothing half-written counts as a result
    resumed = Experiment(**{**BASE, **fields}, run_dir=run_dir, resume=True).run()
    assert_same(resumed, uninterrupted[case])
    assert not (run_dir / "checkpoints").exists()
    state = json.loads((run_dir / "state.json").read_text())
    assert state["status"] == "complete" and state["resumed"]  # where it continued from
    assert_same(Result.load(run_dir), uninterrupted[case])


def test_a_second_ctrl_c_stops_at_once_and_the_last_checkpoint_stands(tmp_path, uninterrupted):
    fields, _ = CASES["mtl"]

    def twice(info):
        if info.step == 5:
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)  # mid-step: no checkpoint of step 5

    with pytest.raises(RunInterrupted, match="second Ctrl-C") as stop:
        Experiment(**BASE, **fields, run_dir=tmp_path).run(on_step=twice)
    assert stop.value.step is None and stop.value.exit_status == 130
    state = json.loads((tmp_path / "state.json").read_text())
    assert state["status"] == "interrupted" and not (tmp_path / "error.txt").exists()
    resumed = Experiment(**BASE, **fields, run_dir=tmp_path, resume=True).run()
    assert json.loads((tmp_path / "state.json").read_text())["resumed"] == {"train": 4}
    assert_same(resumed, uninterrupted["mtl"])


def test_run_files_are_readable_as_the_umask_says(tmp_path):
    fields = {**CASES["mtl"][0], "steps": 2, "debias_steps": 0}
    old = os.umask(0o022)
    try:
        Experiment(**BASE, **fields, run_dir=tmp_path).run()
    finally:
        os.umask(old)
    for name in ("config.yaml", "state.json", "result.json", "model.pt"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o644, name


def test_sigterm_stops_the_same_way_with_its_own_status(tmp_path):
    fields, _ = CASES["mtl"]
    with pytest.raises(RunInterrupted) as stop:
        Experiment(**BASE, **fields, run_dir=tmp_path).run(on_step=interrupt_at(4, signal.SIGTERM))
    assert stop.value.exit_status == 143


def test_an_existing_run_is_refused_untouched_unless_overwritten_or_resumed(tmp_path):
    fields = {**CASES["mtl"][0], "steps": 2, "debias_steps": 0}
    first = Experiment(**BASE, **fields, run_dir=tmp_path).run()
    before = {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()}
    with pytest.raises(ConfigError, match="already holds a run; pass overwrite=True"):
        Experiment(**BASE, **fields, run_dir=tmp_path).run()
    assert {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()} == before
    again = Experiment(**BASE, **fields, run_dir=tmp_path, resume=True).run()
    assert again.metrics == first.metrics  # a finished run is returned as it is
    (tmp_path / "compact.pt").write_bytes(b"stale")
    Experiment(**BASE, **{**fields, "lam": 0.0}, run_dir=tmp_path, overwrite=True).run()
    assert not (tmp_path / "compact.pt").exists()  # cleared first: nothing stale survives
    with pytest.raises(ConfigError, match="holds a run of another config"):
        Experiment(**BASE, **fields, run_dir=tmp_path, resume=True).run()


@pytest.mark.parametrize("failing", ["pretrain", "final"])
def test_a_failed_save_keeps_the_trained_state_and_resume_publishes_it(
    tmp_path, uninterrupted, monkeypatch, failing
):
    import errno
    from pathlib import Path

    fields, _ = CASES["mtl"]  # trains, saves pretrain/, debiases, saves the run
    save = Result.save

    def disk_full(self, run_dir):
        if (Path(run_dir).name == "pretrain") != (failing == "pretrain"):
            return save(self, run_dir)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Result, "save", disk_full)
    with pytest.raises(OSError, match=r"trained state is kept in .*checkpoints.*resume=True"):
        Experiment(**BASE, **fields, run_dir=tmp_path).run()
    assert list((tmp_path / "checkpoints").glob("*.pt")) and not (tmp_path / "result.json").exists()
    assert json.loads((tmp_path / "state.json").read_text())["status"] == "failed"
    assert (tmp_path / "error.txt").is_file()
    monkeypatch.setattr(Result, "save", save)
    resumed = Experiment(**BASE, **fields, run_dir=tmp_path, resume=True).run()
    assert_same(resumed, uninterrupted["mtl"])  # no step trained again, nothing lost
    assert_same(Result.load(tmp_path), uninterrupted["mtl"])
    assert not (tmp_path / "error.txt").exists()  # the failure it recovered from is over


def test_a_compact_model_made_from_another_model_is_refused_or_made_again(tmp_path):
    from sparsekit.engine.export import export_run
    from sparsekit.runs.store import compact_run, load_compact_run

    fields = {**CASES["mtl"][0], "steps": 2, "debias_steps": 0}
    run_dir, other = tmp_path / "run", tmp_path / "other"
    Experiment(**BASE, **fields, run_dir=run_dir).run()
    Experiment(**BASE, **{**fields, "seed": 1}, run_dir=other).run()
    compact_run(run_dir)
    for name in ("model.pt", "result.json"):  # the run's model replaced, consistently
        os.replace(other / name, run_dir / name)
    with pytest.raises(ConfigError, match="compact.pt was made from another model.pt"):
        load_compact_run(run_dir)
    import onnx

    path = export_run(run_dir, "onnx")
    metadata = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    from sparsekit.runs.directory import file_sha256

    assert file_sha256(run_dir / "model.pt") in json.dumps(metadata)
    assert load_compact_run(run_dir) is not None  # made again from the present model
