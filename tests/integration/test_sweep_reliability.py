"""Sweeps that trust the disk: runs claimed once between two sweep processes, no orphaned
worker after SIGTERM or SIGKILL, interrupted runs resumed from their checkpoints, finished runs
whose directory is gone run again, and reports that refuse a missing or corrupt database."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml
from test_sweep import BASE  # the same tiny run

from sparsekit import ConfigError
from sparsekit.cli import main
from sparsekit.interfaces import Executor, TaskOutcome
from sparsekit.sweep import ResultStore, RunSpec, Sweep, SweepInterrupted
from sparsekit.sweep.claims import Owner, pid_alive


class InlineExecutor(Executor):
    """Runs calls one after another in this process, asking ``on_start`` first."""

    name = "inline"

    def map_unordered(self, fn, items, on_start, on_done):
        for index, item in enumerate(items):
            if on_start(index) is False:
                continue
            try:
                on_done(TaskOutcome(index, value=fn(item)))
            except Exception as exc:  # noqa: BLE001
                on_done(TaskOutcome(index, error=f"{type(exc).__name__}: {exc}"))


def write_sweep(tmp_path, lams, steps=4, **base):
    path = tmp_path / "sweep.yaml"
    data = {
        "directory": str(tmp_path / "out"),
        "base": {**BASE, "steps": steps, **base},
        "grid": {"lam": list(lams)},
        "seeds": [0],
        "executor": {"name": "local", "workers": 1, "threads": 1},
    }
    path.write_text(yaml.safe_dump(data))
    return path


def sweep_command(path, *extra):
    return [sys.executable, "-m", "sparsekit", "sweep", str(path), "--quiet", *extra]


# -- claims ---------------------------------------------------------------------------------


def spec(run_id):
    return RunSpec(run_id, "main", "main", 0, {}, {"run_dir": None})


def dead_pid():
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_a_claim_is_taken_once_and_a_dead_owners_claim_is_taken_over(tmp_path):
    store = ResultStore(tmp_path / "sweep.db")
    store.register(spec("a"))
    mine, other = Owner.here(), Owner.here()
    assert store.claim("a", mine)
    assert not store.claim("a", other)  # live: this process holds it
    assert store.claim("a", mine)  # its own claim (the run handed out again)
    assert store.get("a").attempts == 2 and store.get("a").owner_pid == os.getpid()

    gone = Owner(socket.gethostname(), dead_pid())
    store.register(spec("b"))
    assert store.claim("b", gone)
    assert store.claim("b", other)  # same host, its pid is gone: dead
    assert store.get("b").claim == other.token

    asleep = Owner.here()  # alive, but its heartbeat stopped (a laptop asleep, Ctrl-Z)
    store.register(spec("d"))
    assert store.claim("d", asleep)
    assert not store.claim("d", other, stale_after=-1.0)  # its process is alive: live

    reused = Owner(socket.gethostname(), os.getpid(), started=1)  # this pid, another process
    store.register(spec("e"))
    assert store.claim("e", reused)
    assert store.claim("e", other)

    far = Owner("another-host", 1)
    store.register(spec("c"))
    assert store.claim("c", far)
    assert not store.claim("c", other)  # another host: alive while it beats
    assert store.claim("c", other, stale_after=-1.0)  # no heartbeat for the stale time


def test_a_row_left_running_by_a_killed_sweep_is_settled_as_interrupted(tmp_path):
    store = ResultStore(tmp_path / "sweep.db")
    for run_id in ("killed", "alive"):
        store.register(spec(run_id))
    assert store.claim("killed", Owner(socket.gethostname(), dead_pid()))
    assert store.claim("alive", Owner.here())
    assert store.settle_dead_claims() == ["killed"]
    killed = store.get("killed")
    assert killed.status == "interrupted" and "ended before the run finished" in killed.error
    assert store.get("alive").status == "running"


def test_two_sweep_processes_on_one_directory_run_each_case_once(tmp_path):
    path = write_sweep(tmp_path, lams=(0.0, 0.1, 0.2, 0.3), steps=40)
    processes = [
        subprocess.Popen(sweep_command(path), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for _ in range(2)
    ]
    outputs = [process.communicate(timeout=600) for process in processes]  # closes the pipes
    for process, (_, err) in zip(processes, outputs, strict=True):
        assert process.returncode == 0, err.decode()
    rows = ResultStore(tmp_path / "out" / "sweep.db").rows()
    assert len(rows) == 4 and {row.status for row in rows} == {"finished"}
    assert [row.attempts for row in rows] == [1, 1, 1, 1]
    # Both processes ran cases, and between them each case once.
    assert {row.owner_pid for row in rows} == {process.pid for process in processes}
    finished = [int(out.decode().split(" finished,")[0].split()[-1]) for out, _ in outputs]
    assert sum(finished) == 4


# -- killed sweeps --------------------------------------------------------------------------


def children(pid):
    """Pids of the live processes whose parent is ``pid``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid and pid_alive(int(entry.name)):
                found.append(int(entry.name))
    return found


def read_to_end(stream, timeout):
    """All of ``stream`` (a pipe), or None when it is still open after ``timeout`` seconds."""
    chunks = []
    reader = threading.Thread(target=lambda: chunks.append(stream.read()), daemon=True)
    reader.start()
    reader.join(timeout)
    return None if reader.is_alive() else chunks[0]


def training(row):
    """Whether the run of a ``running`` row is past its start (its state.json says running)."""
    try:
        return json.loads((Path(row.run_dir) / "state.json").read_text())["status"] == "running"
    except (OSError, ValueError, KeyError):
        return False


def wait_for_a_training_worker(process, db, timeout=300):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, "the sweep ended before it was killed"
        workers = children(process.pid)
        running = ResultStore(db).rows("running") if db.exists() else []
        if workers and running and training(running[0]):
            return workers
        time.sleep(0.2)
    process.kill()
    pytest.fail("no run started in time")


@pytest.mark.parametrize(
    ("sig", "group"),
    [
        (signal.SIGTERM, False),  # `kill PID`
        (signal.SIGKILL, False),  # `kill -9 PID`, the out-of-memory killer
        (signal.SIGINT, True),  # Ctrl-C at a terminal: the whole process group
        (signal.SIGTERM, True),  # a batch scheduler stopping the job's process group
    ],
    ids=["SIGTERM", "SIGKILL", "Ctrl-C", "SIGTERM-group"],
)
def test_a_killed_sweep_leaves_no_worker_and_no_running_row(tmp_path, sig, group):
    path = write_sweep(tmp_path, lams=(0.0, 0.1), steps=3000, eval_every=1000)
    db = tmp_path / "out" / "sweep.db"
    # The sweep writes into a pipe read here, as `sparsekit sweep ... | tee log` would.
    with subprocess.Popen(
        sweep_command(path),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group, as a job at a terminal has
    ) as process:
        workers = wait_for_a_training_worker(process, db)
        time.sleep(1.0)
        (os.killpg if group else os.kill)(process.pid, sig)
        output = read_to_end(process.stdout, timeout=60)
        assert output is not None, "the pipe stayed open after the sweep was killed: an orphan"
        assert process.wait(timeout=30) == (-sig if sig == signal.SIGKILL else 128 + sig)
    deadline = time.monotonic() + 10
    while any(pid_alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(pid_alive(pid) for pid in workers)

    # What a user sees afterwards: no run is `running`; the stopped one is `interrupted`.
    assert main(["sweep", "report", str(tmp_path / "out")]) == 0
    statuses = sorted(row.status for row in ResultStore(db).rows())
    assert statuses == ["interrupted", "pending"]
    if sig != signal.SIGKILL:  # the worker finished its step and saved a checkpoint
        run_dir = Path(ResultStore(db).rows("interrupted")[0].run_dir)
        state = json.loads((run_dir / "state.json").read_text())
        assert state["status"] == "interrupted" and state["step"] > 0, state
        assert state["signal"] == signal.SIGTERM  # from its sweep, once, however signalled
        assert list((run_dir / "checkpoints").glob("*.pt")) and not (run_dir / "error.txt").exists()


def test_a_run_stopped_in_its_worker_alone_is_interrupted_not_failed(tmp_path):
    """SIGTERM to one worker (an administrator, a memory limiter): that run checkpoints and is
    recorded ``interrupted``; the sweep goes on with the others and resumes it next time."""
    path = write_sweep(tmp_path, lams=(0.0, 0.1), steps=1500, eval_every=500)
    db = tmp_path / "out" / "sweep.db"
    with subprocess.Popen(
        sweep_command(path), stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    ) as process:
        wait_for_a_training_worker(process, db)
        time.sleep(1.0)
        run_dir = Path(ResultStore(db).rows("running")[0].run_dir)
        worker = json.loads((run_dir / "state.json").read_text())["pid"]  # the run's process
        assert worker in children(process.pid)
        os.kill(worker, signal.SIGTERM)
        output = read_to_end(process.stdout, timeout=300)
        assert process.wait(timeout=30) == 1, output
    assert b"1 finished, 0 failed, 1 interrupted" in output
    rows = {row.status: row for row in ResultStore(db).rows()}
    assert sorted(rows) == ["finished", "interrupted"]
    assert "interrupted after step" in rows["interrupted"].error


def test_a_sweep_resumes_an_interrupted_run_from_its_checkpoint(tmp_path, monkeypatch):
    """A run stopped at step k is continued from k by the next sweep, not started again."""
    from sparsekit.engine import checkpoints

    stop_at = 12
    original = checkpoints.PhaseCheckpoint.after_step

    def interrupt_once(self, step, evaluated, done):
        if step == stop_at and not (tmp_path / "stopped").exists():
            (tmp_path / "stopped").touch()
            self.flag.signal = signal.SIGTERM  # as the SIGTERM handler sets it
        original(self, step, evaluated, done)

    monkeypatch.setattr(checkpoints.PhaseCheckpoint, "after_step", interrupt_once)
    fields = dict(base={**BASE, "steps": 20}, grid={"lam": [0.1]}, directory=tmp_path / "out")
    sweep = Sweep(**fields, executor=InlineExecutor())
    with pytest.raises(SweepInterrupted):
        sweep.run()
    assert sweep.store.rows()[0].status == "interrupted"
    second = Sweep(**fields, executor=InlineExecutor()).run()
    assert len(second.finished) == 1
    row = sweep.store.rows()[0]
    assert row.status == "finished" and row.attempts == 2
    state = json.loads((Path(row.run_dir) / "state.json").read_text())
    assert state["status"] == "complete" and state["resumed"] == {"train": stop_at}

    # The same metrics as a sweep never interrupted.
    monkeypatch.setattr(checkpoints.PhaseCheckpoint, "after_step", original)
    clean = Sweep(**{**fields, "directory": tmp_path / "clean"}, executor=InlineExecutor())
    clean.run()
    assert clean.store.rows()[0].metrics == row.metrics


# -- finished runs whose directory is gone --------------------------------------------------


def test_a_finished_run_whose_directory_was_deleted_runs_again(tmp_path):
    fields = dict(base=BASE, grid={"lam": [0.0, 0.2]}, directory=tmp_path)
    sweep = Sweep(**fields, executor=InlineExecutor())
    assert len(sweep.run().finished) == 2
    first, second = sweep.store.rows()
    shutil.rmtree(first.run_dir)
    (Path(second.run_dir) / "result.json").write_text('{"status": "running"}')
    again = Sweep(**fields, executor=InlineExecutor()).run()
    assert sorted(again.reopened) == sorted([first.run_id, second.run_id])
    assert sorted(again.finished) == sorted([first.run_id, second.run_id])
    rows = {row.run_id: row for row in sweep.store.rows()}
    assert rows[first.run_id].metrics == first.metrics  # the same seed, the same run
    assert (Path(first.run_dir) / "result.json").is_file()
    assert not Sweep(**fields, executor=InlineExecutor()).run().reopened


def test_a_deleted_run_that_a_later_stage_used_is_refused_naming_both(tmp_path):
    fields = dict(
        base=BASE,
        stages=[
            {"name": "dense", "set": {"penalty": None}},
            {
                "name": "pruned",
                "set": {
                    "penalty": None,
                    "scheduler": "one_shot",
                    "mask": "magnitude",
                    "target": 0.5,
                    "init": "dense",
                    "init_from": {"run_of": "dense"},
                },
            },
        ],
        directory=tmp_path,
    )
    sweep = Sweep(**fields, executor=InlineExecutor())
    assert len(sweep.run().finished) == 2
    dense = next(row for row in sweep.store.rows() if row.stage == "dense")
    shutil.rmtree(dense.run_dir)
    before = {row.run_id: row.status for row in sweep.store.rows()}
    with pytest.raises(ConfigError, match=f"run {dense.run_id} .*finished run .*pruned"):
        Sweep(**fields, executor=InlineExecutor()).run()
    assert {row.run_id: row.status for row in sweep.store.rows()} == before


# -- reports on a bad database --------------------------------------------------------------


@pytest.mark.parametrize(
    ("database", "message"),
    [
        (None, "sweep.db' is missing"),
        (b"", "holds no runs"),
        (b"SQLite format 3\x00" + os.urandom(2000), "is not a readable sweep database"),
        (b"not a database at all, just text\n" * 40, "is not a readable sweep database"),
    ],
    ids=["missing", "empty", "corrupt-header", "text"],
)
def test_a_report_on_a_bad_database_is_one_line_and_keeps_the_old_report(
    tmp_path, capsys, database, message
):
    path = write_sweep(tmp_path, lams=(0.0,))
    out = tmp_path / "out"
    out.mkdir()
    shutil.copy(path, out / "sweep.yaml")
    if database is not None:
        (out / "sweep.db").write_bytes(database)
    (out / "report.md").write_text("the report of an earlier call\n")
    (out / "report.csv").write_text("run,finished\n")
    assert main(["sweep", "report", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("sparsekit: error: ") and message in err
    assert (out / "report.md").read_text() == "the report of an earlier call\n"
    assert (out / "report.csv").read_text() == "run,finished\n"
    assert not (out / "metrics_vs_sparsity.png").exists()
    if database is None:
        assert not (out / "sweep.db").exists()


def test_a_report_of_a_directory_without_a_sweep_is_one_line(tmp_path, capsys):
    assert main(["sweep", "report", str(tmp_path)]) == 2
    assert "no sweep in" in capsys.readouterr().err
