"""The results database of a sweep: one SQLite row per run, and the claims on running ones.

SQLite is the embedded default: one file (``sweep.db`` in the sweep directory), no server, safe
for many writers. The database is in WAL mode, every write is one short transaction, and a
writer that finds the database locked waits (``busy_timeout``) and retries, so concurrent
writers — the worker processes of several sweeps, or a sweep and a report — lose no row.

A run is *claimed* before it starts: one ``BEGIN IMMEDIATE`` transaction reads its row and, if
no live sweep holds it, marks it ``running`` with the claimant's host, pid and claim token and
a heartbeat time. The claimant refreshes the heartbeat while the run is in flight; a claim whose
owner is dead (same host, pid gone) or whose heartbeat is older than the stale timeout may be
taken over. So two sweeps on one directory run each case once between them.

Columns: ``run_id`` (the config hash, primary key), ``stage``, ``label``, ``seed``,
``overrides``, ``config`` (JSON), ``status`` (``pending``, ``running``, ``finished``,
``failed``, ``interrupted``), ``metrics``, ``directions`` (per metric, whether higher is
better), ``sparsity``, ``efficiency``, ``timings`` (JSON),
``error`` (the traceback or the reason of a failure), ``run_dir``, ``attempts``,
``started_at`` and ``finished_at`` (Unix seconds), and the claim: ``owner_host``,
``owner_pid``, ``owner_started`` (when that process started, to tell a reused pid),
``claim`` (a token per sweep call) and ``heartbeat_at`` (Unix seconds).
A database written before the claim columns existed gets them when it is opened.
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

from sparsekit.errors import ConfigError
from sparsekit.sweep.claims import STALE_AFTER_S, Owner, claim_is_live, claimable

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
    finished_at REAL,
    owner_host TEXT,
    owner_pid INTEGER,
    owner_started INTEGER,
    claim TEXT,
    heartbeat_at REAL
)
"""

#: Columns added after the first schema, with their types: added to an older database on open.
ADDED_COLUMNS = {
    "owner_host": "TEXT",
    "owner_pid": "INTEGER",
    "owner_started": "INTEGER",
    "claim": "TEXT",
    "heartbeat_at": "REAL",
}

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
    owner_host: str | None = None
    owner_pid: int | None = None
    owner_started: int | None = None
    claim: str | None = None
    heartbeat_at: float | None = None


class ResultStore:
    """The ``runs`` table of one sweep database; each call opens its own connection.

    Args:
        path: the SQLite file.
        create: create the file (and its directory) when missing, and add the columns an older
            database lacks; with False the database is read as it is and must hold runs.

    Raises:
        ConfigError: the file is not a readable SQLite database; with ``create=False`` also
            when it is missing or holds no runs.
    """

    def __init__(self, path: str | Path, create: bool = True) -> None:
        self.path = Path(path)
        try:
            if create:
                self._create()
            else:
                self._check_readable()
        except sqlite3.DatabaseError as exc:
            raise ConfigError(
                f"{str(self.path)!r} is not a readable sweep database ({exc}); move it away to "
                "start the sweep afresh"
            ) from None

    def _create(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(SCHEMA)
            present = {row[1] for row in db.execute("PRAGMA table_info(runs)")}
            for name, kind in ADDED_COLUMNS.items():
                if name not in present:
                    try:
                        db.execute(f"ALTER TABLE runs ADD COLUMN {name} {kind}")
                    except sqlite3.OperationalError:  # another process added it meanwhile
                        pass

    def _check_readable(self) -> None:
        if not self.path.is_file():
            raise ConfigError(f"no sweep results: {str(self.path)!r} is missing")
        with self._connect() as db:
            tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
            count = db.execute("SELECT count(*) FROM runs").fetchone()[0] if "runs" in tables else 0
        if not count:
            raise ConfigError(f"no sweep results: {str(self.path)!r} holds no runs")

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        try:
            db.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")
            yield db
        finally:
            db.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One ``BEGIN IMMEDIATE`` transaction: committed when the block ends, else rolled back."""
        with self._connect() as db:
            db.row_factory = sqlite3.Row
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    def _write(self, sql: str, params: tuple[Any, ...]) -> int:
        with self._transaction() as db:
            return db.execute(sql, params).rowcount

    def register(self, spec: Any) -> None:
        """Add a run as ``pending`` unless it is already there (its row is then left as is)."""
        self.register_all([spec])

    def register_all(self, specs: list[Any]) -> None:
        """:meth:`register` every spec, in one transaction."""
        rows = [
            (
                spec.run_id,
                spec.stage,
                spec.label,
                spec.seed,
                json.dumps(spec.overrides, default=str),
                json.dumps(spec.config, default=str),
                spec.config.get("run_dir"),
            )
            for spec in specs
        ]
        with self._transaction() as db:
            db.executemany(
                "INSERT OR IGNORE INTO runs (run_id, stage, label, seed, overrides, config, "
                "status, run_dir) VALUES (?, ?, ?, ?, ?, ?, 'pending', ?)",
                rows,
            )

    def claim(self, run_id: str, owner: Owner, stale_after: float = STALE_AFTER_S) -> bool:
        """Mark the run ``running`` for ``owner`` (one attempt more) if it may run it now.

        The read and the write are one transaction, so of several sweeps claiming a run at
        once exactly one gets it. Returns whether ``owner`` got it (see :func:`claimable`).
        """
        with self._transaction() as db:
            found = db.execute("SELECT * FROM runs WHERE run_id=?", (run_id,)).fetchone()
            now = time.time()
            if found is None or not claimable(self._decode(found), owner, now, stale_after):
                return False
            db.execute(
                "UPDATE runs SET status='running', attempts=attempts+1, started_at=?, error=NULL, "
                "owner_host=?, owner_pid=?, owner_started=?, claim=?, heartbeat_at=? "
                "WHERE run_id=?",
                (now, owner.host, owner.pid, owner.started, owner.token, now, run_id),
            )
            return True

    def heartbeat(self, owner: Owner) -> int:
        """Refresh the heartbeat of every run ``owner`` holds; returns how many it holds."""
        return self._write(
            "UPDATE runs SET heartbeat_at=? WHERE status='running' AND claim=?",
            (time.time(), owner.token),
        )

    def mark_finished(self, run_id: str, outcome: dict[str, Any], claim: str | None = None) -> bool:
        """Store a finished run's metrics, sparsity, efficiency and timings.

        With ``claim``, only while that claim holds the run (a sweep whose claim was taken
        over records nothing). Returns whether the row was written.
        """
        return (
            self._write(
                "UPDATE runs SET status='finished', metrics=?, directions=?, sparsity=?, "
                "efficiency=?, timings=?, error=NULL, finished_at=? "
                "WHERE run_id=? AND (? IS NULL OR claim=?)",
                (
                    json.dumps(outcome.get("metrics")),
                    json.dumps(outcome.get("directions")),
                    json.dumps(outcome.get("sparsity")),
                    json.dumps(outcome.get("efficiency")),
                    json.dumps(outcome.get("timings")),
                    time.time(),
                    run_id,
                    claim,
                    claim,
                ),
            )
            > 0
        )

    def mark_failed(
        self, run_id: str, error: str, status: str = "failed", claim: str | None = None
    ) -> bool:
        """Store why a run failed (``failed``), or that it was stopped (``interrupted``).

        With ``claim``, only while that claim holds the run. Returns whether it was written.
        """
        return (
            self._write(
                "UPDATE runs SET status=?, error=?, finished_at=? "
                "WHERE run_id=? AND (? IS NULL OR claim=?)",
                (status, error, time.time(), run_id, claim, claim),
            )
            > 0
        )

    def release(self, run_id: str, owner: Owner, error: str) -> None:
        """``owner`` stopped the run before it finished: ``interrupted``, if it still holds it."""
        self._write(
            "UPDATE runs SET status='interrupted', error=?, finished_at=? "
            "WHERE run_id=? AND status='running' AND claim=?",
            (error, time.time(), run_id, owner.token),
        )

    def mark_not_started(self, run_id: str, error: str) -> None:
        """The run cannot start (a dependency did not finish): ``failed``, unless it is running
        or finished (another sweep's)."""
        self._write(
            "UPDATE runs SET status='failed', error=?, finished_at=? "
            "WHERE run_id=? AND status NOT IN ('running', 'finished')",
            (error, time.time(), run_id),
        )

    def reopen(self, run_id: str, finished_at: float | None, reason: str) -> bool:
        """A finished run is to run again: ``pending`` with ``reason``, if it is still the
        finished row read (same ``finished_at``: not re-run meanwhile by another sweep)."""
        return bool(
            self._write(
                "UPDATE runs SET status='pending', error=? "
                "WHERE run_id=? AND status='finished' AND finished_at IS ?",
                (reason, run_id, finished_at),
            )
        )

    def settle_dead_claims(self, stale_after: float = STALE_AFTER_S) -> list[str]:
        """Mark ``interrupted`` every ``running`` row whose sweep is gone (killed outright,
        SIGKILL, so that it could record nothing): the status then says what happened, and
        the next sweep resumes the run. Returns the run ids settled."""
        settled = []
        with self._transaction() as db:
            now = time.time()
            for found in db.execute("SELECT * FROM runs WHERE status='running'").fetchall():
                row = self._decode(found)
                if claim_is_live(row, now, stale_after):
                    continue
                owner = f"pid {row.owner_pid} on {row.owner_host}" if row.owner_pid else "unknown"
                db.execute(
                    "UPDATE runs SET status='interrupted', error=?, finished_at=? "
                    "WHERE run_id=? AND status='running' AND claim IS ?",
                    (
                        f"its sweep ({owner}) ended before the run finished",
                        now,
                        row.run_id,
                        row.claim,
                    ),
                )
                settled.append(row.run_id)
        return settled

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
        known = RunRow.__dataclass_fields__
        data = {key: value for key, value in dict(row).items() if key in known}  # newer columns
        for key in JSON_COLUMNS:
            if data[key] is not None:
                data[key] = json.loads(data[key])
        return RunRow(**data)
