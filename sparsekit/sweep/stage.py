"""Running one stage of a sweep: claim each run, execute the claimed ones, wait for the others.

A run is claimed in the database just before the executor starts it (``on_start``); a run that
another sweep holds is skipped and waited for. When the other sweep finishes it, it counts as
done here; when that sweep fails it during this call, as failed; when it leaves it (stopped, or
dead: its process gone on this host, or no heartbeat for the stale timeout from another host),
this sweep runs it. An outcome is recorded only while this sweep's claim holds the run.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sparsekit.interfaces import Executor, TaskOutcome
from sparsekit.sweep.claims import Owner, claimable
from sparsekit.sweep.spec import RunSpec
from sparsekit.sweep.store import ResultStore
from sparsekit.sweep.worker import WorkItem, run_one

logger = logging.getLogger(__name__)

#: Seconds between looks at runs another sweep holds.
POLL_S = 1.0


@dataclass
class SweepSummary:
    """What a call of :meth:`Sweep.run` did.

    Attributes:
        finished: runs that finished in this call.
        failed: runs that failed in this call (their errors are in the database), here or in
            another sweep on the same directory.
        skipped: runs already finished before this call, or finished by another sweep during it.
        interrupted: runs stopped by an interruption.
        reopened: finished runs run again because their run directory was missing or incomplete.
        wall_s: wall-clock seconds of the call.
    """

    finished: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    interrupted: list[str] = field(default_factory=list)
    reopened: list[str] = field(default_factory=list)
    wall_s: float = 0.0


@dataclass
class StageRunner:
    """Runs the stages of one sweep call for ``owner``; ``in_flight`` holds the runs it started
    that have not ended (what an interruption marks ``interrupted``)."""

    store: ResultStore
    owner: Owner
    executor: Executor
    summary: SweepSummary
    on_start: Callable[[RunSpec], None] | None = None
    on_done: Callable[[RunSpec, TaskOutcome], None] | None = None
    in_flight: set[str] = field(default_factory=set)
    poll_s: float = POLL_S

    def run(self, specs: list[RunSpec]) -> None:
        """Run one stage's runs; returns when each is finished or failed, here or elsewhere."""
        todo = self._startable(specs)
        while todo:
            held = self._execute(todo)
            todo = self._await(held)

    def _startable(self, specs: list[RunSpec]) -> list[RunSpec]:
        todo = []
        for spec in specs:
            row = self.store.get(spec.run_id)
            if row is not None and row.status == "finished":
                self.summary.skipped.append(spec.run_id)
                continue
            missing = [d for d in spec.depends_on if _status(self.store, d) != "finished"]
            if missing:
                self.store.mark_not_started(
                    spec.run_id,
                    f"not started: it uses run(s) {', '.join(missing)} of an earlier stage, "
                    f"which did not finish",
                )
                self.summary.failed.append(spec.run_id)
                continue
            todo.append(spec)
        return todo

    def _execute(self, todo: list[RunSpec]) -> list[RunSpec]:
        """Hand ``todo`` to the executor; returns the runs skipped because another sweep held
        them."""
        threads = self.executor.threads_per_call(len(todo))
        items = [WorkItem(spec.run_id, spec.config, threads) for spec in todo]
        held: dict[int, RunSpec] = {}

        def started(index: int) -> bool:
            spec = todo[index]
            if not self.store.claim(spec.run_id, self.owner):
                held[index] = spec
                return False
            self.in_flight.add(spec.run_id)
            if self.on_start is not None:
                self.on_start(spec)
            return True

        def done(outcome: TaskOutcome) -> None:
            if outcome.index in held:  # an executor that ran it anyway: its holder records it
                return
            spec, token = todo[outcome.index], self.owner.token
            if outcome.ok:
                kept = self.store.mark_finished(spec.run_id, outcome.value, claim=token)
                self.summary.finished.append(spec.run_id)
            elif outcome.interrupted:  # stopped cleanly in its worker: resumed by the next call
                error = outcome.error or "interrupted"
                kept = self.store.mark_failed(spec.run_id, error, "interrupted", claim=token)
                self.summary.interrupted.append(spec.run_id)
            else:
                error = outcome.error or "unknown error"
                kept = self.store.mark_failed(spec.run_id, error, claim=token)
                self.summary.failed.append(spec.run_id)
            if not kept:
                logger.warning(
                    "run %s was taken over by another sweep; its outcome here is not recorded",
                    spec.run_id,
                )
            self.in_flight.discard(spec.run_id)
            if self.on_done is not None:
                self.on_done(spec, outcome)

        self.executor.map_unordered(run_one, items, started, done)
        return list(held.values())

    def _await(self, held: list[RunSpec]) -> list[RunSpec]:
        """Wait until another sweep ends or leaves one of ``held``; returns those still to run
        (handed to the executor again, which skips any still held)."""
        while held:
            waiting, ready = [], False
            for spec in held:
                row = self.store.get(spec.run_id)
                if row is None or row.status == "finished":
                    self.summary.skipped.append(spec.run_id)
                elif row.status == "failed" and not claimable(row, self.owner, time.time()):
                    self.summary.failed.append(spec.run_id)
                else:
                    waiting.append(spec)
                    ready = ready or claimable(row, self.owner, time.time())
            if ready:
                return waiting
            held = waiting
            if held:
                time.sleep(self.poll_s)
        return []


def _status(store: ResultStore, run_id: str) -> Any:
    row = store.get(run_id)
    return None if row is None else row.status
