"""Sweep executors: where the independent runs of a sweep execute."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sparsekit.interfaces.base import Component

__all__ = ["Executor", "TaskOutcome"]


@dataclass(frozen=True)
class TaskOutcome:
    """What became of one call of an executed function.

    Attributes:
        index: the position of the call's item in the batch.
        value: the function's return value (None when it failed).
        error: None on success; otherwise the traceback text of the exception it raised, or why
            its worker was lost (a crashed process, a lost node).
        interrupted: the call was stopped by a signal in its worker (it raised
            KeyboardInterrupt, e.g. a run that saved its checkpoint on SIGTERM), not failed.
    """

    index: int
    value: Any = None
    error: str | None = None
    interrupted: bool = False

    @property
    def ok(self) -> bool:
        """Whether the call returned."""
        return self.error is None


class Executor(Component):
    """Runs a batch of independent calls, in parallel where it can, and reports each one.

    The sweep hands an executor one batch at a time; the calls of a batch do not depend on each
    other. Outcomes are reported in the calling process, so the caller alone writes results
    even when the calls ran on other machines. ``map_unordered(fn, items, on_start, on_done)``
    asks ``on_start`` before it starts each item (False: skip it; a sweep claims the run there,
    and another sweep may hold it), calls a module-level function on every item it starts and
    reports each outcome (value or error text) exactly once; on Ctrl-C it cancels what has not
    finished, stops its workers and re-raises. Workers must not outlive the calling process.
    ``threads_per_call(count)`` is the torch thread count each call gets.

    Kind ``executor`` (hook ``sparsekit_register_executors``).
    """

    @abstractmethod
    def map_unordered(
        self,
        fn: Callable[[Any], Any],
        items: Sequence[Any],
        on_start: Callable[[int], bool | None],
        on_done: Callable[[TaskOutcome], None],
    ) -> None:
        """Call ``fn(item)`` for every item and report every outcome as soon as it is known.

        Args:
            fn: a module-level function (it is pickled by reference and may run in another
                process or on another machine).
            items: its arguments, each picklable.
            on_start: called with an item's index just before the item is handed to a worker
                (once per item, and again when an item is run again after its worker died);
                if it returns False the item is skipped: not run, and no outcome reported.
            on_done: called exactly once per item started with its :class:`TaskOutcome` (in
                any order), in the calling thread; an exception raised by ``fn`` becomes an
                error outcome.

        Raises:
            KeyboardInterrupt: on interruption (also when raised by ``on_start`` or
                ``on_done``), after unfinished calls are cancelled and workers stopped;
                outcomes already reported stand.
            ExecutorUnavailable: an optional dependency of the executor is missing.
        """

    def threads_per_call(self, count: int) -> int:
        """Torch intra-op threads each call may use when ``count`` calls are to run (default 1).

        The sweep passes this number to every run, so results do not depend on where it ran.
        """
        return 1

    def describe(self) -> str:
        """A short human-readable description, e.g. ``"local: 2 workers × 1 thread"``."""
        return self.name
