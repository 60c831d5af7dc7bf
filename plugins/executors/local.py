"""``local``: a pool of worker processes on this machine, sized so workers × threads fit its cores.

Workers are started with the ``spawn`` method (a forked copy of a process that already runs
torch's thread pool can deadlock) and ignore SIGINT, so Ctrl-C reaches only the sweep: it
cancels the calls not yet started, stops the workers (SIGTERM, so that a run can save its
checkpoint, then SIGKILL after :data:`STOP_GRACE_S`) and re-raises, and every outcome reported
before stands. A worker that dies (killed, out of memory) breaks the whole pool; the calls that
were running are run again one at a time, so only the call that kills its own worker fails
(with that reason), and a new pool takes the calls not yet started.

Workers die with the process that started them, even when it is killed outright (SIGKILL):
on Linux the kernel kills them (``PR_SET_PDEATHSIG``), and everywhere a watchdog thread in each
worker exits it once its parent is gone. So no orphaned worker keeps running, or keeps the
caller's pipes open (``sparsekit sweep ... | tee log`` ends when the sweep does).

By default the pool has ``min(calls, cores)`` workers and each call ``cores // workers`` torch
threads, ``cores`` being the CPUs this process may use.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import sys
import threading
import time
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


#: Seconds stopped workers get to end on SIGTERM (a run saves its checkpoint) before SIGKILL.
STOP_GRACE_S = 10.0

#: Seconds between a worker's checks that its parent is alive (where the kernel does not watch).
WATCHDOG_S = 1.0

#: ``prctl`` option: the signal a process gets when its parent dies (Linux).
PR_SET_PDEATHSIG = 1


def _init_worker(parent: int) -> None:
    """Worker set-up: ignore SIGINT, and die with ``parent`` (the process that started it)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the sweep, which stops workers
    if hasattr(signal, "SIGHUP"):  # so does a closed terminal's SIGHUP
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):  # no prctl: the watchdog alone
            pass
    if os.getppid() != parent:  # the parent died before the kernel was asked to watch it
        os._exit(1)
    threading.Thread(target=watch_parent, args=(parent,), daemon=True).start()


def watch_parent(parent: int, interval: float = WATCHDOG_S) -> None:
    """End this process at once when its parent is no longer ``parent`` (it died)."""
    while os.getppid() == parent:
        time.sleep(interval)
    os._exit(1)


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
        on_start: Callable[[int], bool | None],
        on_done: Callable[[TaskOutcome], None],
    ) -> None:
        """Run ``fn`` over ``items`` in the pool; see :class:`sparsekit.interfaces.Executor`.

        When a worker dies, every call then running in the pool fails with it, although only one
        of them killed it; each of those is run again alone, so only a call that kills its own
        worker fails, and a new pool takes the calls not yet started.
        """
        queue = list(range(len(items)))
        workers = self.workers_for(len(items))
        started: set[int] = set()
        while queue:
            suspects = _run_pool(fn, items, queue, workers, on_start, on_done, False, started)
            for index in suspects:
                _run_pool(fn, items, [index], 1, on_start, on_done, True, started)


def _run_pool(
    fn: Callable[[Any], Any],
    items: Sequence[Any],
    queue: list[int],
    workers: int,
    on_start: Callable[[int], bool | None],
    on_done: Callable[[TaskOutcome], None],
    isolated: bool,
    started: set[int],
) -> list[int]:
    """Run the calls of ``queue`` (consumed in order) until it is empty or a worker dies.

    ``on_start`` is called once per call before it is submitted (``started`` holds those it
    accepted that a broken pool kept from being submitted: they are not announced again).

    Returns:
        The calls that were running when a worker died (none when ``isolated``: then such a
        call is reported as failed).
    """
    pool = ProcessPoolExecutor(
        workers, mp_context=SPAWN, initializer=_init_worker, initargs=(os.getpid(),)
    )
    running: dict[Future[Any], int] = {}
    suspects: list[int] = []
    stopped = False
    try:
        while (queue or running) and not suspects:
            while queue and len(running) < workers:
                index = queue[0]
                if index not in started and on_start(index) is False:
                    queue.pop(0)  # the caller skips it
                    continue
                started.add(index)
                try:
                    future = pool.submit(fn, items[index])
                except BrokenProcessPool:
                    break
                queue.pop(0)
                started.discard(index)
                running[future] = index
            if not running:
                break
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
    except KeyboardInterrupt as exc:  # a signal stopped the call in its worker, not the caller
        error = f"interrupted in its worker process: {exc}\n{_format(exc)}"
        return TaskOutcome(index, error=error, interrupted=True)
    except Exception as exc:  # noqa: BLE001 - every failure of a call becomes its outcome
        return TaskOutcome(index, error=_format(exc))


def _format(exc: BaseException) -> str:
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    remote = getattr(exc.__cause__, "tb", None)  # the worker's traceback, from concurrent.futures
    return f"{remote}\n{text}" if remote else text


def _terminate(pool: ProcessPoolExecutor, grace: float = STOP_GRACE_S) -> None:
    """Stop every worker now (an interrupted sweep does not wait for running calls).

    Each gets SIGTERM, so that a run can save its checkpoint, and SIGKILL if it has not ended
    ``grace`` seconds later.
    """
    processes = [p for p in getattr(pool, "_processes", {}).values() if p.is_alive()]
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        process.terminate()
    deadline = time.monotonic() + grace
    for process in processes:
        process.join(max(0.0, deadline - time.monotonic()))
        if process.is_alive():
            process.kill()
            process.join(1.0)
