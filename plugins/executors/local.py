"""``local``: a pool of worker processes on this machine, sized so workers × threads fit its cores.

Workers are started with the ``spawn`` method (a forked copy of a process that already runs
torch's thread pool can deadlock) and ignore SIGINT, so Ctrl-C reaches only the sweep: it
cancels the calls not yet started, terminates the workers and re-raises, and every outcome
reported before stands. A worker that dies (killed, out of memory) breaks the whole pool; the
calls that were running are run again one at a time, so only the call that kills its own worker
fails (with that reason), and a new pool takes the calls not yet started.

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


#: Workers start fresh interpreters (a forked copy of a process running torch's threads can hang).
SPAWN = multiprocessing.get_context("spawn")


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class LocalExecutor(Executor):
    """A process pool on this machine."""

    name: ClassVar[str] = "local"
    is_default: ClassVar[bool] = True

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
        """Run ``fn`` over ``items`` in the pool; see :class:`sparsekit.interfaces.Executor`.

        When a worker dies, every call then running in the pool fails with it, although only one
        of them killed it; each of those is run again alone, so only a call that kills its own
        worker fails, and a new pool takes the calls not yet started.
        """
        queue = list(range(len(items)))
        workers = self.workers_for(len(items))
        while queue:
            suspects = _run_pool(fn, items, queue, workers, on_start, on_done, isolated=False)
            for index in suspects:
                _run_pool(fn, items, [index], 1, on_start, on_done, isolated=True)


def _run_pool(
    fn: Callable[[Any], Any],
    items: Sequence[Any],
    queue: list[int],
    workers: int,
    on_start: Callable[[int], None],
    on_done: Callable[[TaskOutcome], None],
    isolated: bool,
) -> list[int]:
    """Run the calls of ``queue`` (consumed in order) until it is empty or a worker dies.

    Returns:
        The calls that were running when a worker died (none when ``isolated``: then such a
        call is reported as failed).
    """
    pool = ProcessPoolExecutor(workers, mp_context=SPAWN, initializer=_ignore_sigint)
    running: dict[Future[Any], int] = {}
    suspects: list[int] = []
    stopped = False
    try:
        while (queue or running) and not suspects:
            while queue and len(running) < workers:
                index = queue[0]
                try:
                    future = pool.submit(fn, items[index])
                except BrokenProcessPool:
                    break
                queue.pop(0)
                on_start(index)
                running[future] = index
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            if any(_broke(f) for f in finished):
                finished, _ = wait(running)  # a broken pool fails every running call at once
            for future in finished:
                index = running.pop(future)
                if _broke(future) and not isolated:
                    suspects.append(index)
                else:
                    on_done(_outcome(index, future))
        return suspects
    except BaseException:
        stopped = True
        _terminate(pool)
        raise
    finally:
        if not stopped:
            pool.shutdown(wait=True, cancel_futures=True)


def _broke(future: Future[Any]) -> bool:
    return future.done() and isinstance(future.exception(), BrokenProcessPool)


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
