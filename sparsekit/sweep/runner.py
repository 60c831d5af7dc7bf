"""Running a sweep: expand it, skip what is finished, execute the rest, record every outcome.

Stages run in order; the runs of one stage are handed to the executor together. Every outcome
is written to the sweep database in the calling process as soon as the executor reports it, so
an interruption (Ctrl-C) or a crash loses nothing that finished. A run that raises or diverges
is recorded as ``failed`` with its error and the others go on; a run whose ``{run_of: ...}``
dependency did not finish fails with that reason without being started. Running the sweep again
skips finished runs and retries the failed, interrupted and pending ones.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from sparsekit.interfaces import TaskOutcome
from sparsekit.registry import create
from sparsekit.sweep.report import default_group_by, write_report
from sparsekit.sweep.spec import RunSpec, SweepConfig, build_sweep_config, expand, load_sweep_config
from sparsekit.sweep.store import ResultStore
from sparsekit.sweep.worker import WorkItem, run_one

DATABASE_FILE = "sweep.db"
SWEEP_FILE = "sweep.yaml"


@dataclass
class SweepSummary:
    """What a call of :meth:`Sweep.run` did.

    Attributes:
        finished: runs that finished in this call.
        failed: runs that failed in this call (their errors are in the database).
        skipped: runs already finished before this call.
        interrupted: runs stopped by an interruption.
        wall_s: wall-clock seconds of the call.
    """

    finished: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    interrupted: list[str] = field(default_factory=list)
    wall_s: float = 0.0


class SweepInterrupted(KeyboardInterrupt):
    """The sweep was interrupted; finished runs are recorded and :attr:`summary` says the rest."""

    def __init__(self, summary: SweepSummary) -> None:
        super().__init__("sweep interrupted")
        self.summary = summary


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
            FileNotFoundError: the directory holds no sweep.
        """
        path = Path(directory) / SWEEP_FILE
        if not path.is_file():
            raise FileNotFoundError(f"no sweep in {str(directory)!r} (missing {SWEEP_FILE})")
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
        is the plot's file type: ``png``, ``pdf`` or ``svg``.
        """
        current = {spec.run_id for spec in self.runs()}
        runs = [row for row in self.store.rows() if row.run_id in current]
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
            on_done: called with a run and its outcome when it ends (progress reporting).

        Raises:
            SweepInterrupted: on Ctrl-C, after recording every finished run.
            ConfigError: an invalid run config (before anything runs).
        """
        started = time.perf_counter()
        specs = self.runs()
        self.directory.mkdir(parents=True, exist_ok=True)
        (self.directory / SWEEP_FILE).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))
        store = self.store
        for spec in specs:
            store.register(spec)
        executor = create("executor", self.config.executor)
        summary = SweepSummary()
        in_flight: set[str] = set()
        try:
            for stage in self.config.stages:
                stage_specs = [s for s in specs if s.stage == stage.name]
                self._run_stage(stage_specs, store, executor, summary, in_flight, on_start, on_done)
        except KeyboardInterrupt:
            for run_id in sorted(in_flight):
                store.mark_failed(run_id, "interrupted before it finished", "interrupted")
                summary.interrupted.append(run_id)
            summary.wall_s = time.perf_counter() - started
            raise SweepInterrupted(summary) from None
        summary.wall_s = time.perf_counter() - started
        return summary

    def _run_stage(
        self,
        specs: list[RunSpec],
        store: ResultStore,
        executor: Any,
        summary: SweepSummary,
        in_flight: set[str],
        on_start: Callable[[RunSpec], None] | None,
        on_done: Callable[[RunSpec, TaskOutcome], None] | None,
    ) -> None:
        todo = []
        for spec in specs:
            row = store.get(spec.run_id)
            if row is not None and row.status == "finished":
                summary.skipped.append(spec.run_id)
                continue
            missing = [d for d in spec.depends_on if _status(store, d) != "finished"]
            if missing:
                store.mark_failed(
                    spec.run_id,
                    f"not started: it uses run(s) {', '.join(missing)} of an earlier stage, "
                    f"which did not finish",
                )
                summary.failed.append(spec.run_id)
                continue
            todo.append(spec)
        if not todo:
            return
        threads = executor.threads_per_call(len(todo))
        items = [WorkItem(spec.run_id, spec.config, threads) for spec in todo]

        def started(index: int) -> None:
            store.mark_running(todo[index].run_id)
            in_flight.add(todo[index].run_id)
            if on_start is not None:
                on_start(todo[index])

        def done(outcome: TaskOutcome) -> None:
            spec = todo[outcome.index]
            if outcome.ok:
                store.mark_finished(spec.run_id, outcome.value)
                summary.finished.append(spec.run_id)
            else:
                store.mark_failed(spec.run_id, outcome.error or "unknown error")
                summary.failed.append(spec.run_id)
            in_flight.discard(spec.run_id)
            if on_done is not None:
                on_done(spec, outcome)

        executor.map_unordered(run_one, items, started, done)


def _status(store: ResultStore, run_id: str) -> str | None:
    row = store.get(run_id)
    return None if row is None else row.status
