"""What keeps a running sweep's claims honest: a heartbeat, and termination signals that stop it
the way Ctrl-C does (in-flight runs recorded ``interrupted``, workers stopped)."""

from __future__ import annotations

import logging
import signal
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import TracebackType
from typing import Any

from sparsekit.sweep.claims import HEARTBEAT_S, Owner
from sparsekit.sweep.store import ResultStore

logger = logging.getLogger(__name__)

#: Signals that stop a sweep as Ctrl-C does, where nothing else handles them.
TERMINATING = tuple(
    getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name)
)


class Heartbeat:
    """A daemon thread that refreshes the heartbeat of ``owner``'s claims every ``interval`` s.

    Use it as a context manager around the sweep; the thread stops when the block ends.
    """

    def __init__(self, store: ResultStore, owner: Owner, interval: float = HEARTBEAT_S) -> None:
        self.store, self.owner, self.interval = store, owner, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="sweep-heartbeat", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join()

    def _beat(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.store.heartbeat(self.owner)
            except sqlite3.Error as exc:  # a missed beat is not fatal: the next one may land
                logger.warning("sweep heartbeat failed: %s", exc)


@contextmanager
def interrupt_on_termination() -> Iterator[list[int]]:
    """Inside the block SIGTERM and SIGHUP raise KeyboardInterrupt in the main thread, as Ctrl-C
    does, so that the sweep stops its workers and records its in-flight runs before it exits.

    Only signals whose handler is the default are taken (``nohup`` and an embedding program
    keep theirs), and only in the main thread. Yields the list the signals received are
    appended to; a second signal while the first is handled is ignored.
    """
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return

    def handler(number: int, frame: Any) -> None:
        received.append(number)
        if len(received) == 1:
            raise KeyboardInterrupt

    previous = {
        number: signal.signal(number, handler)
        for number in TERMINATING
        if signal.getsignal(number) is signal.SIG_DFL
    }
    try:
        yield received
    finally:
        for number, old in previous.items():
            signal.signal(number, old)
