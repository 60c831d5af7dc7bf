"""``local``: a pool of worker processes on this machine, sized so workers × threads fit its cores.

Workers are started with the ``spawn`` method (a forked copy of a process that already runs
torch's thread pool can deadlock) and ignore SIGINT, so Ctrl-C reaches only the sweep: it
cancels the calls not yet started, terminates the workers and re-raises, and every outcome
reported before stands. A worker that dies (killed, out of memory) fails the calls it held with
that reason, and a new pool takes the calls not yet started.

By default the pool has ``min(calls, cores)`` workers and each call ``cores // workers`` torch
threads, ``cores`` being the CPUs this process may use.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import traceback
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any, ClassVar

from pydantic import Field

from sparsekit.interfaces import ComponentConfig, Executor, TaskOutcome


def available_cores() -> int:
    """CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class LocalExecutor(Executor):
    """A process pool on this machine."""

    name: ClassVar[str] = "local"

    class Config(ComponentConfig):
        """Configuration of :class:`LocalExecutor`.

        Attributes:
            workers: worker processes (default: one per core, at most one per call).
            threads: torch threads per call (default: cores // workers, at least 1).
        """

        workers: int | None = Field(None, ge=1)
        threads: int | None = Field(None, ge=1)

    config: Config

    def workers_for(self, count: int) -> int:
        """Worker processes for ``count`` calls."""
        if self.config.workers is not None:
            return self.config.workers
        return max(1, min(count, available_cores()))

    def threads_per_call(self, count: int) -> int:
        """``threads``, or the cores shared among the workers."""
        if self.config.threads is not None:
            return self.config.threads
        return max(1, available_cores() // self.workers_for(count))

    def describe(self) -> str:
        return f"local: {self.config.workers or 'one per core'} workers"

    def map_unordered(
        self,
        fn: Callable[[Any], Any],
        items: Sequence[Any],
        on_start: Callable[[int], None],
        on_done: Callable[[TaskOutcome], None],
    ) -> None:
        """Run ``fn`` over ``items`` in the pool; see :class:`sparsekit.interfaces.Executor`."""
        pending = list(range(len(items)))
        workers = self.workers_for(len(items))
        context = multiprocessing.get_context("spawn")
        while pending:
            pool = ProcessPoolExecutor(workers, mp_context=context, initializer=_ignore_sigint)
            running: dict[Future[Any], int] = {}
            stopped = False
            try:
                while pending or running:
                    while pending and len(running) < workers:
                        index = pending.pop(0)
                        on_start(index)
                        running[pool.submit(fn, items[index])] = index
                    finished, _ = wait(running, return_when=FIRST_COMPLETED)
                    for future in finished:
                        on_done(_outcome(running.pop(future), future))
            except BrokenProcessPool:
                for future, index in running.items():
                    on_done(_outcome(index, future))
                continue
            except BaseException:
                stopped = True
                _terminate(pool)
                raise
            finally:
                if not stopped:
                    pool.shutdown(wait=True, cancel_futures=True)


def _outcome(index: int, future: Future[Any]) -> TaskOutcome:
    try:
        return TaskOutcome(index, value=future.result(timeout=0))
    except BrokenProcessPool:
        return TaskOutcome(index, error="its worker process died (killed or out of memory)")
    except Exception as exc:  # noqa: BLE001 - every failure of a call becomes its outcome
        return TaskOutcome(index, error=_format(exc))


def _format(exc: BaseException) -> str:
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    remote = getattr(exc.__cause__, "tb", None)  # the worker's traceback, from concurrent.futures
    return f"{remote}\n{text}" if remote else text


def _terminate(pool: ProcessPoolExecutor) -> None:
    """Stop every worker now (an interrupted sweep does not wait for running calls)."""
    for process in list(getattr(pool, "_processes", {}).values()):
        if process.is_alive():
            process.terminate()
    pool.shutdown(wait=False, cancel_futures=True)
