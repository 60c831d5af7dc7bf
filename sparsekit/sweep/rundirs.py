"""Finished runs whose run directory is gone: run them again, unless a later run used them.

A ``finished`` row is trusted only while its run directory holds a complete ``result.json``
(``"status": "complete"``; one written before runs recorded a status counts as complete). A
missing directory or ``result.json``, or one that is not complete, puts the run back to
``pending`` so the sweep runs it again (resuming from its checkpoint if one is left). When a
finished run of a later stage was built from it (``{run_of: ...}``) and is kept, running it
again would change that run's inputs behind its back: the sweep refuses, naming both.
"""

from __future__ import annotations

import json
from pathlib import Path

from sparsekit.errors import ConfigError
from sparsekit.runs.directory import COMPLETE, RESULT_FILE
from sparsekit.sweep.spec import RunSpec
from sparsekit.sweep.store import ResultStore


def run_dir_complete(run_dir: str | Path | None) -> bool:
    """Whether ``run_dir`` holds a complete result (True for a run without a directory)."""
    if run_dir is None:
        return True
    try:
        result = json.loads((Path(run_dir) / RESULT_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(result, dict) and result.get("status", COMPLETE) == COMPLETE


def reopen_incomplete(specs: list[RunSpec], store: ResultStore) -> list[str]:
    """Put every finished run whose run directory is not complete back to ``pending``.

    Returns:
        The run ids reopened.

    Raises:
        ConfigError: a finished run that is kept was built from one of them (before anything
            is changed).
    """
    rows = {row.run_id: row for row in store.rows()}
    incomplete = {
        spec.run_id: spec
        for spec in specs
        if rows[spec.run_id].status == "finished"
        and not run_dir_complete(spec.config.get("run_dir"))
    }
    for spec in specs:
        used = [incomplete[d] for d in spec.depends_on if d in incomplete]
        if used and spec.run_id not in incomplete and rows[spec.run_id].status == "finished":
            source = used[0]
            raise ConfigError(
                f"run {source.run_id} (stage {source.stage}, seed {source.seed}) is finished in "
                f"sweep.db but its run directory {source.config['run_dir']} is missing or "
                f"incomplete, and finished run {spec.run_id} (stage {spec.stage}) was built from "
                f"it; restore that directory, or delete {spec.config['run_dir']} too to run both "
                "again"
            )
    return [
        run_id
        for run_id, spec in incomplete.items()
        if store.reopen(
            run_id,
            rows[run_id].finished_at,
            f"its run directory {spec.config['run_dir']} was missing or incomplete; run again",
        )
    ]
