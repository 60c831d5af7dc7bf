"""Checkpoints of training loops, resuming from them, and stopping cleanly on SIGINT/SIGTERM.

A run with a run directory saves each training phase's state to ``checkpoints/<phase>.pt``
(phases: ``train``, ``dense`` and ``train`` of a scheduled run with a dense phase, ``second``
for the fine-tuning or debiasing stage): every object the loop tracks (model, loss combiner,
optimiser, batch stream, pruner, learned λ, the monitor with its history and early-stopping
state), the step, the run's data-order generator and the global random states of Python, NumPy
and torch. A resumed run restores every phase from its file and continues after the saved step,
so on the CPU with the same thread count it ends with bit-identical weights and metrics.

SIGINT and SIGTERM set a flag; the loop finishes its step, saves, and raises
:class:`~sparsekit.errors.RunInterrupted`. A second signal stops at once.
"""

from __future__ import annotations

import contextlib
import random
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sparsekit.errors import ConfigError, RunInterrupted
from sparsekit.interfaces import Checkpoint
from sparsekit.interfaces.learner import Stateful
from sparsekit.runs.directory import (
    checkpoint_path,
    read_state,
    torch_load,
    torch_save,
    write_state,
)

#: A finished phase's restore returns this, so that its loop does not run again.
PAST_THE_END = sys.maxsize - 1


class InterruptFlag:
    """Which signal asked the run to stop (None while none did)."""

    def __init__(self) -> None:
        self.signal: int | None = None


@contextlib.contextmanager
def stop_on_signals(flag: InterruptFlag) -> Iterator[None]:
    """SIGINT and SIGTERM set ``flag`` inside the block: the run stops after its step.

    A second SIGINT (Ctrl-C pressed again) stops it at once with :class:`RunInterrupted`
    (step None: the last checkpoint stands); a SIGTERM after the first signal is the same
    request again (a process group signalled, then each process) and changes nothing. A signal
    the process ignores (a sweep's worker ignores Ctrl-C, which its sweep handles) stays
    ignored. Outside the main thread, where Python cannot install handlers, nothing changes.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(number: int, frame: Any) -> None:
        if flag.signal is None:
            flag.signal = number
        elif number == signal.SIGINT:  # Ctrl-C again: stop now, mid-step
            raise RunInterrupted("stopped at once on a second Ctrl-C", number, None, None)

    previous = {
        number: signal.signal(number, handler)
        for number in (signal.SIGINT, signal.SIGTERM)
        if signal.getsignal(number) is not signal.SIG_IGN
    }
    try:
        yield
    finally:
        for number, old in previous.items():
            signal.signal(number, old)


def random_states() -> dict[str, Any]:
    """The global random states of Python, NumPy and torch (CPU and CUDA), as plain data."""
    kind, keys, position, has_gauss, cached = np.random.get_state()
    version, internal, gauss = random.getstate()
    states = {
        "python": [version, list(internal), gauss],
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, cached],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_random_states(states: dict[str, Any]) -> None:
    """Restore what :func:`random_states` returned."""
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, position, has_gauss, cached = states["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, cached))
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


class PhaseCheckpoint(Checkpoint):
    """The checkpoint of one training phase of a run.

    Args:
        run_dir: the run directory (None: nothing is saved, signals still stop the run).
        phase: the phase's name (its file is ``checkpoints/<phase>.pt``).
        every: steps between saves (also saved at every evaluation and when the loop is done).
        generator: the run's data-order generator, saved and restored with the state.
        flag: set by :func:`stop_on_signals` when the run is asked to stop.
        resume: restore from an existing file instead of starting fresh.
        offset: the run's steps before this phase (an interruption reports the run's step).
    """

    def __init__(
        self,
        run_dir: Path | None,
        phase: str,
        every: int,
        generator: torch.Generator,
        flag: InterruptFlag,
        resume: bool = False,
        offset: int = 0,
    ) -> None:
        self.path = checkpoint_path(run_dir, phase) if run_dir is not None else None
        self.run_dir, self.name, self.every = run_dir, phase, max(1, every)
        self.generator, self.flag, self.resume, self.offset = generator, flag, resume, offset
        self.objects: dict[str, Stateful] = {}
        self.last_saved: int | None = None

    def phase(self, name: str, offset: int = 0) -> PhaseCheckpoint:
        return PhaseCheckpoint(
            self.run_dir, name, self.every, self.generator, self.flag, self.resume, offset
        )

    def track(self, name: str, obj: Stateful) -> None:
        if name in self.objects:
            raise ValueError(f"checkpoint {self.name!r} already tracks {name!r}")
        self.objects[name] = obj

    def restore(self) -> int:
        if not self.resume or self.path is None or not self.path.is_file():
            return 0
        state = torch_load(self.path, "checkpoint")
        saved, tracked = set(state["objects"]), set(self.objects)
        if saved != tracked:
            raise ConfigError(
                f"{self.path} does not fit this run (it holds {sorted(saved)}, the run tracks "
                f"{sorted(tracked)}); start again with overwrite=True (--overwrite)"
            )
        for name, obj in self.objects.items():
            obj.load_state_dict(state["objects"][name])
        set_random_states(state["rng"])
        self.generator.set_state(state["generator"])
        self.last_saved = int(state["step"])
        if self.run_dir is not None:  # the run's state says where it continued from
            resumed = {**read_state(self.run_dir).get("resumed", {}), self.name: self.last_saved}
            write_state(self.run_dir, "running", resumed=resumed)
        return PAST_THE_END if state["done"] else int(state["step"])

    def after_step(self, step: int, evaluated: bool, done: bool) -> None:
        stopping = self.flag.signal is not None
        if self.path is not None and (evaluated or done or stopping or step % self.every == 0):
            self.save(step, done)
        if stopping and not done:
            assert self.flag.signal is not None
            where = f"; checkpoint in {self.path}" if self.path is not None else ""
            raise RunInterrupted(
                f"interrupted after step {self.offset + step}{where}",
                self.flag.signal,
                self.run_dir,
                self.offset + step,
            )

    def save(self, step: int, done: bool = False) -> None:
        """Write the phase's state after ``step`` (atomically)."""
        if self.path is None:
            return
        state = {
            "phase": self.name,
            "step": step,
            "done": done,
            "objects": {name: obj.state_dict() for name, obj in self.objects.items()},
            "rng": random_states(),
            "generator": self.generator.get_state(),
        }
        torch_save(state, self.path)
        self.last_saved = step


class RunControl:
    """How a run is checkpointed and stopped: its directory, whether it resumes, the signal flag.

    Args:
        run_dir: the run directory, or None.
        resume: restore each phase from its checkpoint.
        every: steps between checkpoints.
    """

    def __init__(self, run_dir: Path | None, resume: bool, every: int) -> None:
        self.run_dir, self.resume, self.every = run_dir, resume, every
        self.flag = InterruptFlag()

    def checkpoint(
        self, phase: str, generator: torch.Generator, offset: int = 0
    ) -> PhaseCheckpoint:
        """The checkpoint of ``phase`` (after ``offset`` steps of the run), saving
        ``generator`` with it."""
        return PhaseCheckpoint(
            self.run_dir, phase, self.every, generator, self.flag, self.resume, offset
        )
