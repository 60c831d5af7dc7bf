"""Running a sweep: expand it, skip what is finished, execute the rest, record every outcome.

Stages run in order; the runs of one stage are handed to the executor together, and each is
claimed in the database just before it starts (:mod:`sparsekit.sweep.claims`), so several
sweeps on one directory run each case once between them. Every outcome is written to the sweep
database in the calling process as soon as the executor reports it, so an interruption (Ctrl-C,
SIGTERM, SIGHUP) or a crash loses nothing that finished; interrupted runs are recorded
``interrupted``, and a run left ``running`` by a killed sweep is taken over by the next one. A
run that raises or diverges is recorded as ``failed`` with its error and the others go on; a
run whose ``{run_of: ...}`` dependency did not finish fails with that reason without being
started. Running the sweep again skips finished runs (re-running those whose run directory is
missing or incomplete, :mod:`sparsekit.sweep.rundirs`) and retries the failed, interrupted and
pending ones, each resuming from its last checkpoint.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from sparsekit.errors import ConfigError
from sparsekit.interfaces import TaskOutcome
from sparsekit.registry import create
from sparsekit.runs.directory import write_text
from sparsekit.sweep.claims import Owner
from sparsekit.sweep.guard import Heartbeat, interrupt_on_termination
from sparsekit.sweep.report import default_group_by, write_report
from sparsekit.sweep.rundirs import reopen_incomplete
from sparsekit.sweep.spec import RunSpec, SweepConfig, build_sweep_config, expand, load_sweep_config
from sparsekit.sweep.stage import StageRunner, SweepSummary
from sparsekit.sweep.store import ResultStore

DATABASE_FILE = "sweep.db"
SWEEP_FILE = "sweep.yaml"

__all__ = ["DATABASE_FILE", "SWEEP_FILE", "Sweep", "SweepInterrupted", "SweepSummary"]


class SweepInterrupted(KeyboardInterrupt):
    """The sweep was interrupted; finished runs are recorded and :attr:`summary` says the rest.

    Attributes:
        summary: what the call did before it stopped.
        signal_number: the signal that stopped it (SIGINT for Ctrl-C).
    """

    def __init__(self, summary: SweepSummary, signal_number: int = signal.SIGINT) -> None:
        super().__init__("sweep interrupted")
        self.summary, self.signal_number = summary, int(signal_number)

    @property
    def exit_status(self) -> int:
        """The shell's status for a process ended by the signal: 128 + its number."""
        return 128 + self.signal_number


class Sweep:
    """A grid of experiments over seeds, run by an executor and stored in SQLite.

    Example::

        Sweep(
            base={"dataset": "shapes", "steps": 200},
            grid={"lam": [0.1, 0.3], "penalty": ["group_lasso", "l1"]},
            seeds=[0, 1, 2],
            directory="runs/sweep",
        ).run()

    Args:
        config: a complete :class:`SweepConfig`; or leave it out and give its fields as keyword
            arguments (``base``, ``grid``, ``cases``, ``stages``, ``seeds``, ``directory``,
            ``executor``, ``group_by``).
    """

    def __init__(self, config: SweepConfig | None = None, **fields: Any) -> None:
        if config is not None and fields:
            staged = config.model_dump(exclude={"grid", "cases"})
            config = build_sweep_config({**staged, **fields})
        elif config is None:
            config = build_sweep_config(fields)
        self.config = config
        self.directory = Path(config.directory)

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: dict[str, Any] | None = None) -> Sweep:
        """A sweep from a YAML file of :class:`SweepConfig` fields."""
        return cls(load_sweep_config(path, overrides))

    @classmethod
    def from_directory(cls, directory: str | Path) -> Sweep:
        """The sweep whose directory this is (read from its ``sweep.yaml``).

        Raises:
            ConfigError: the directory holds no sweep (no ``sweep.yaml``).
        """
        path = Path(directory) / SWEEP_FILE
        if not path.is_file():
            raise ConfigError(f"no sweep in {str(directory)!r} (missing {SWEEP_FILE})")
        return cls(load_sweep_config(path, {"directory": str(directory)}))

    def to_dict(self) -> dict[str, Any]:
        """The sweep config as plain data, in its staged form (reloads to the same sweep)."""
        data = self.config.model_dump(mode="json", exclude={"grid", "cases", "executor"})
        executor = self.config.executor
        data["executor"] = executor.spec() if hasattr(executor, "spec") else executor
        return data

    def report(self, split: str = "test", plot_format: str = "png") -> str:
        """Write the report files into the sweep directory and return the Markdown table.

        Only the runs of the sweep as configured now are reported (a database may also hold
        runs of an earlier version of the config). ``split="val"`` reports the validation
        metrics of the same final models, the figures to choose settings on. ``plot_format``
        is the plot's file type: ``png``, ``pdf`` or ``svg``. Each file is replaced whole.

        Raises:
            ConfigError: the database is missing, unreadable, or holds none of the sweep's
                runs (existing report files are then left as they are).
        """
        current = {spec.run_id for spec in self.runs()}
        store = ResultStore(self.directory / DATABASE_FILE, create=False)
        store.settle_dead_claims()
        rows = store.rows()
        runs = [row for row in rows if row.run_id in current]
        if not runs:
            raise ConfigError(
                f"no results to report: {self.directory / DATABASE_FILE} holds none of the runs "
                f"of the sweep as configured now ({len(rows)} of another configuration)"
            )
        group_by = self.config.group_by or default_group_by(self.config.stages)
        hidden = {stage.name for stage in self.config.stages if not stage.report}
        return write_report(runs, self.directory, group_by, hidden, split, plot_format)

    @property
    def store(self) -> ResultStore:
        """The sweep's results database."""
        return ResultStore(self.directory / DATABASE_FILE)

    def runs(self) -> list[RunSpec]:
        """Every run of the sweep, in execution order."""
        return expand(self.config)

    def run(
        self,
        on_start: Callable[[RunSpec], None] | None = None,
        on_done: Callable[[RunSpec, TaskOutcome], None] | None = None,
    ) -> SweepSummary:
        """Run every unfinished run; returns what happened.

        Args:
            on_start: called with a run when it is handed to a worker.
            on_done: called with a run and its outcome when it ends here (progress reporting).

        Raises:
            SweepInterrupted: on Ctrl-C, SIGTERM or SIGHUP, after recording every finished run
                and marking the runs in flight ``interrupted``.
            ConfigError: an invalid run config, an unreadable database, or a finished run whose
                directory is missing while a later finished run used it (before anything runs).
        """
        started = time.perf_counter()
        specs = self.runs()
        self.directory.mkdir(parents=True, exist_ok=True)
        write_text(self.directory / SWEEP_FILE, yaml.safe_dump(self.to_dict(), sort_keys=False))
        store = self.store
        store.register_all(specs)
        store.settle_dead_claims()
        summary = SweepSummary(reopened=reopen_incomplete(specs, store))
        executor = create("executor", self.config.executor)
        runner = StageRunner(store, Owner.here(), executor, summary, on_start, on_done)
        with Heartbeat(store, runner.owner), interrupt_on_termination() as received:
            try:
                for stage in self.config.stages:
                    runner.run([spec for spec in specs if spec.stage == stage.name])
            except KeyboardInterrupt:
                for run_id in sorted(runner.in_flight):
                    store.release(run_id, runner.owner, "interrupted before it finished")
                    summary.interrupted.append(run_id)
                summary.wall_s = time.perf_counter() - started
                number = received[0] if received else signal.SIGINT
                raise SweepInterrupted(summary, number) from None
            except BaseException as exc:  # the sweep itself failed: its runs are not held on
                for run_id in sorted(runner.in_flight):
                    store.release(run_id, runner.owner, f"its sweep failed: {exc!r}")
                raise
        summary.wall_s = time.perf_counter() - started
        return summary
