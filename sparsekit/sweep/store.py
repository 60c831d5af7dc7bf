"""The results database of a sweep: one SQLite row per run.

SQLite is the embedded default: one file (``sweep.db`` in the sweep directory), no server, safe
for many writers. The database is in WAL mode, every write is one short transaction, and a
writer that finds the database locked waits (``busy_timeout``) and retries, so concurrent
writers — the worker processes of several sweeps, or a sweep and a report — lose no row.

Columns: ``run_id`` (the config hash, primary key), ``stage``, ``label``, ``seed``,
``overrides``, ``config`` (JSON), ``status`` (``pending``, ``running``, ``finished``,
``failed``, ``interrupted``), ``metrics``, ``directions`` (per metric, whether higher is
better), ``sparsity``, ``efficiency``, ``timings`` (JSON),
``error`` (the traceback or the reason of a failure), ``run_dir``, ``attempts``,
``started_at`` and ``finished_at`` (Unix seconds).
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    stage TEXT NOT NULL,
    label TEXT NOT NULL,
    seed INTEGER NOT NULL,
    overrides TEXT NOT NULL,
    config TEXT NOT NULL,
    status TEXT NOT NULL,
    metrics TEXT,
    directions TEXT,
    sparsity TEXT,
    efficiency TEXT,
    timings TEXT,
    error TEXT,
    run_dir TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    started_at REAL,
    finished_at REAL
)
"""

JSON_COLUMNS = ("overrides", "config", "metrics", "directions", "sparsity", "efficiency", "timings")

#: Seconds a writer waits for a lock before giving up (generous: runs take minutes).
BUSY_TIMEOUT_S = 60.0


@dataclass
class RunRow:
    """A row of the ``runs`` table, JSON columns decoded."""

    run_id: str
    stage: str
    label: str
    seed: int
    overrides: dict[str, Any]
    config: dict[str, Any]
    status: str
    metrics: dict[str, dict[str, float]] | None
    directions: dict[str, dict[str, bool]] | None
    sparsity: dict[str, float] | None
    efficiency: dict[str, Any] | None
    timings: dict[str, float] | None
    error: str | None
    run_dir: str | None
    attempts: int
    started_at: float | None
    finished_at: float | None


class ResultStore:
    """The ``runs`` table of one sweep database; each call opens its own connection.

    Args:
        path: the SQLite file (created with its directory when missing).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(SCHEMA)

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        try:
            db.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")
            yield db
        finally:
            db.close()

    def _write(self, sql: str, params: tuple[Any, ...]) -> None:
        with self._connect() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                db.execute(sql, params)
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    def register(self, spec: Any) -> None:
        """Add a run as ``pending`` unless it is already there (its row is then left as is)."""
        self._write(
            "INSERT OR IGNORE INTO runs (run_id, stage, label, seed, overrides, config, status, "
            "run_dir) VALUES (?, ?, ?, ?, ?, ?, 'pending', ?)",
            (
                spec.run_id,
                spec.stage,
                spec.label,
                spec.seed,
                json.dumps(spec.overrides, default=str),
                json.dumps(spec.config, default=str),
                spec.config.get("run_dir"),
            ),
        )

    def mark_running(self, run_id: str) -> None:
        """The run was handed to a worker: ``running``, one attempt more."""
        self._write(
            "UPDATE runs SET status='running', attempts=attempts+1, started_at=?, error=NULL "
            "WHERE run_id=?",
            (time.time(), run_id),
        )

    def mark_finished(self, run_id: str, outcome: dict[str, Any]) -> None:
        """Store a finished run's metrics, sparsity, efficiency and timings."""
        self._write(
            "UPDATE runs SET status='finished', metrics=?, directions=?, sparsity=?, efficiency=?, "
            "timings=?, error=NULL, finished_at=? WHERE run_id=?",
            (
                json.dumps(outcome.get("metrics")),
                json.dumps(outcome.get("directions")),
                json.dumps(outcome.get("sparsity")),
                json.dumps(outcome.get("efficiency")),
                json.dumps(outcome.get("timings")),
                time.time(),
                run_id,
            ),
        )

    def mark_failed(self, run_id: str, error: str, status: str = "failed") -> None:
        """Store why a run failed (``failed``), or that it was stopped (``interrupted``)."""
        self._write(
            "UPDATE runs SET status=?, error=?, finished_at=? WHERE run_id=?",
            (status, error, time.time(), run_id),
        )

    def rows(self, status: str | None = None) -> list[RunRow]:
        """Every row (or those with ``status``), in the order the runs were registered."""
        with self._connect() as db:
            db.row_factory = sqlite3.Row
            query = "SELECT * FROM runs" + (" WHERE status=?" if status else "") + " ORDER BY rowid"
            fetched = db.execute(query, (status,) if status else ()).fetchall()
        return [self._decode(row) for row in fetched]

    def get(self, run_id: str) -> RunRow | None:
        """The row of ``run_id``, or None."""
        with self._connect() as db:
            db.row_factory = sqlite3.Row
            row = db.execute("SELECT * FROM runs WHERE run_id=?", (run_id,)).fetchone()
        return None if row is None else self._decode(row)

    @staticmethod
    def _decode(row: sqlite3.Row) -> RunRow:
        data = dict(row)
        for key in JSON_COLUMNS:
            if data[key] is not None:
                data[key] = json.loads(data[key])
        return RunRow(**data)
