"""The files of a run directory: their names, atomic writes, the run's state and checkpoints.

Every file a run publishes is written to a temporary file in the same directory and moved into
place with ``os.replace``, so a reader sees the old file or the new one, never half of one.
``result.json`` is written last and carries ``"status": "complete"`` and the SHA-256 of the
``model.pt`` it belongs to; a directory without it holds no finished run. ``state.json`` says
what the run is doing (``running``, ``interrupted``, ``failed``, ``complete``) and where it
stopped. See docs/reliability.md.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from sparsekit.errors import ConfigError

RESULT_FILE = "result.json"
CHECKPOINT_FILE = "model.pt"
CONFIG_FILE = "config.yaml"
COMPACT_FILE = "compact.pt"
ERROR_FILE = "error.txt"
STATE_FILE = "state.json"
METRICS_FILE = "metrics.csv"
#: Sub-directory of a run directory holding the pre-trained result of a two-stage experiment.
PRETRAIN_DIR = "pretrain"
#: Sub-directory of a run directory holding the training checkpoints of an unfinished run.
CHECKPOINTS_DIR = "checkpoints"
#: The value of ``result.json``'s ``status`` for a run whose every file is in place.
COMPLETE = "complete"


def _umask() -> int:
    """The process's umask, read without changing it where the system allows (Linux)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # elsewhere: set and restore at once
    os.umask(mask)
    return mask


def _atomic(path: Path, write: Callable[[Path], None]) -> Path:
    """Write ``path`` through ``write(temporary path)`` and move it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.fchmod(handle, 0o666 & ~_umask())  # as open() would create it, not mkstemp's 0600
    os.close(handle)
    temporary = Path(name)
    try:
        write(temporary)
        with temporary.open("rb") as stream:
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return path


def write_text(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (UTF-8)."""
    return _atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_json(path: Path, data: Any) -> Path:
    """Write ``data`` as indented JSON to ``path`` atomically."""
    return write_text(path, json.dumps(data, indent=2))


def torch_save(obj: Any, path: Path) -> Path:
    """``torch.save`` to ``path`` atomically."""
    return _atomic(path, lambda tmp: torch.save(obj, tmp))


def torch_load(path: Path, what: str = "checkpoint", map_location: Any = "cpu") -> Any:
    """``torch.load(path, weights_only=True)``, with a one-line error for a file that is not one.

    Raises:
        ConfigError: the file is empty, truncated or not a torch file of tensors and plain
            data (the message names the file; it never suggests loading it unsafely).
    """
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as exc:  # noqa: BLE001 - torch raises many kinds for a bad file
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if "weights_only" in reason or "WeightsUnpickler" in reason:
            reason = "not a torch file of tensors and plain data: damaged, or other objects"
        raise ConfigError(f"{path} is not a readable sparsekit {what} ({reason})") from None


def file_sha256(path: Path) -> str:
    """The SHA-256 of a file's bytes, as hex."""
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_state(directory: Path, status: str, **details: Any) -> None:
    """Record what the run is doing in ``state.json`` (``running``, ``interrupted``, …).

    ``resumed`` (each phase a resumed run continued from a checkpoint, with its step) is kept
    from the state before unless ``details`` gives it.
    """
    kept = {k: v for k, v in read_state(directory).items() if k == "resumed"}
    state = {"status": status, "pid": os.getpid(), "updated": time.time(), **kept, **details}
    write_json(directory / STATE_FILE, state)


def read_state(directory: Path) -> dict[str, Any]:
    """``state.json`` of a run directory, or ``{}`` when there is none or it is unreadable."""
    try:
        state = json.loads((directory / STATE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return state if isinstance(state, dict) else {}


def check_run_dir(directory: Path) -> None:
    """Raise a :class:`ConfigError` when ``directory`` exists and is not a directory."""
    if directory.exists() and not directory.is_dir():
        raise ConfigError(f"run_dir {str(directory)!r} is a file, not a directory")


def prepare_run_dir(
    directory: Path, overwrite: bool = False, resume: bool = False, resumable: bool = True
) -> None:
    """Make ``directory`` ready for a run: refuse, clear or keep what is there.

    An empty or missing directory is used as it is. A directory with files is cleared first
    with ``overwrite``, kept as it is with ``resume`` (the run continues from its checkpoints),
    and otherwise refused, untouched.

    Raises:
        ConfigError: the directory holds files and neither ``overwrite`` nor ``resume`` is set,
            or it is a file (the message offers resuming when the run is ``resumable``).
    """
    check_run_dir(directory)
    if not directory.is_dir() or not any(directory.iterdir()):
        directory.mkdir(parents=True, exist_ok=True)
        return
    if resume:
        return
    if overwrite:
        for entry in directory.iterdir():
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        return
    again = " or resume=True (--resume) to continue it" if resumable else ""
    raise ConfigError(
        f"run directory {str(directory)!r} already holds a run; pass overwrite=True "
        f"(--overwrite) to replace it{again}"
    )


def checkpoint_path(directory: Path, phase: str) -> Path:
    """The checkpoint file of one training phase of a run (``checkpoints/<phase>.pt``)."""
    return directory / CHECKPOINTS_DIR / f"{phase}.pt"
