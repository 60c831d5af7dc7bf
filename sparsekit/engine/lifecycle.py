"""A run directory's life: claimed at the start, marked as the run goes, published at the end.

:func:`open_run` refuses a directory that holds another run (unless told to overwrite or
resume it), checks that a resumed run is the same experiment, and records the config and the
``running`` state; :func:`publish` saves the result (``result.json`` last) and removes the
checkpoints; :func:`mark_stopped` records why a run stopped. See docs/reliability.md.
"""

from __future__ import annotations

import logging
import shutil
import traceback
from pathlib import Path
from typing import Any

import yaml

from sparsekit.errors import ConfigError, RunInterrupted
from sparsekit.runs.directory import (
    CHECKPOINTS_DIR,
    CONFIG_FILE,
    ERROR_FILE,
    RESULT_FILE,
    prepare_run_dir,
    read_state,
    write_state,
)
from sparsekit.runs.store import Result, write_config, write_error

logger = logging.getLogger(__name__)

#: Config fields that say where and how a run reports, not what it computes: a resumed run may
#: change them.
NOT_IDENTITY = frozenset({"run_dir", "loggers", "tags", "threads", "checkpoint_every"})


def _identity(config: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in config.items() if k not in NOT_IDENTITY}


def open_run(run_dir: Path, config: dict[str, Any], overwrite: bool, resume: bool) -> Result | None:
    """Make ``run_dir`` ready for the run of ``config``.

    Returns:
        With ``resume``, the saved result when the run had finished already; otherwise None.

    Raises:
        ConfigError: the directory holds another run and neither ``overwrite`` nor ``resume``
            is set, is a file, or, with ``resume``, holds a run of another config.
    """
    prepare_run_dir(run_dir, overwrite=overwrite, resume=resume)
    if resume and (run_dir / CONFIG_FILE).is_file():
        try:
            saved = yaml.safe_load((run_dir / CONFIG_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError, yaml.YAMLError) as exc:
            raise ConfigError(f"resume: cannot read {run_dir / CONFIG_FILE} ({exc})") from None
        if not isinstance(saved, dict) or _identity(saved) != _identity(config):
            raise ConfigError(
                f"resume: {run_dir} holds a run of another config; resume it with its own "
                f"config ({run_dir / CONFIG_FILE}) or start again with overwrite=True "
                "(--overwrite)"
            )
        if read_state(run_dir).get("status") == "complete":
            try:
                return Result.load(run_dir)
            except (ConfigError, FileNotFoundError) as exc:  # damaged since: run it again
                logger.warning("resume: %s; the run starts again", exc)
                (run_dir / RESULT_FILE).unlink(missing_ok=True)  # not complete until it is
    write_config(run_dir, config)
    write_state(run_dir, "running")
    return None


def save_result(result: Result, directory: Path, run_dir: Path) -> None:
    """Save ``result`` into ``directory`` (the run's, or its ``pretrain/``).

    Raises:
        OSError: the save failed; the message says where the trained state is kept.
    """
    try:
        result.save(directory)
    except OSError as exc:
        checkpoints = run_dir / CHECKPOINTS_DIR
        raise OSError(
            exc.errno,
            f"saving the run into {directory} failed ({exc.strerror or exc}); the trained state "
            f"is kept in {checkpoints}: fix the cause and run again with resume=True (--resume)",
        ) from exc


def publish(result: Result, run_dir: Path) -> None:
    """Save the finished run (``result.json`` last), then drop its checkpoints and the
    ``error.txt`` of an earlier attempt that a resume recovered from.

    Raises:
        OSError: the save failed; the message says where the trained state is kept.
    """
    save_result(result, run_dir, run_dir)
    write_state(run_dir, "complete")
    (run_dir / ERROR_FILE).unlink(missing_ok=True)
    shutil.rmtree(run_dir / CHECKPOINTS_DIR, ignore_errors=True)


def mark_stopped(run_dir: Path, error: BaseException) -> None:
    """Record why a run stopped: ``interrupted`` with its step, or ``failed`` with the error."""
    try:
        if isinstance(error, RunInterrupted):
            write_state(run_dir, "interrupted", step=error.step, signal=error.signal_number)
            return
        write_error(run_dir, traceback.format_exc())
        write_state(run_dir, "failed", error=f"{type(error).__name__}: {error}")
    except OSError:
        pass  # the directory itself is what failed; the error being raised says more
