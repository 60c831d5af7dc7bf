"""Who may run a run of a sweep: claims, their owners, and when a claim is dead.

A sweep claims a run in the database before it starts it (:meth:`ResultStore.claim`); the
claim records the owner's host, pid and process start time, a token of the claiming call and a
heartbeat time that the owner refreshes while the run is in flight. Another sweep skips a run
held by a live claim and takes over a dead one. An owner on this host is alive exactly while
its process is (the same pid, started at the same time: not a pid reused since), however long
it has not beaten (a laptop asleep, a sweep stopped with Ctrl-Z); an owner on another host is
alive while its heartbeat is younger than :data:`STALE_AFTER_S`.
"""

from __future__ import annotations

import os
import socket
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sparsekit.sweep.store import RunRow

#: Seconds without a heartbeat after which a claim is stale and may be taken over.
STALE_AFTER_S = 120.0

#: Seconds between heartbeats of a sweep's claims (well under :data:`STALE_AFTER_S`).
HEARTBEAT_S = 10.0


@dataclass(frozen=True)
class Owner:
    """Who claims runs: a host, a process and a token of one sweep call.

    Attributes:
        host: the host name.
        pid: the process id.
        started: when the process started (:func:`process_start`), None where unknown.
        token: unique to one call of :meth:`Sweep.run`.
        since: when that call began (Unix seconds): a run that failed before it is retried,
            one that failed after it (in another sweep on the same directory) is not.
    """

    host: str
    pid: int
    started: int | None = None
    token: str = field(default_factory=lambda: uuid.uuid4().hex)
    since: float = field(default_factory=time.time)

    @classmethod
    def here(cls) -> Owner:
        """This process, with a fresh token."""
        return cls(socket.gethostname(), os.getpid(), process_start(os.getpid()))


def process_start(pid: int) -> int | None:
    """When process ``pid`` started, in clock ticks since boot (Linux), else None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return int(stat.rsplit(")", 1)[-1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists on this host and is not a zombie."""
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):
        return False
    except PermissionError:  # it exists, under another user
        return True
    if sys.platform.startswith("linux"):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return False
        return stat.rsplit(")", 1)[-1].split()[0] not in ("Z", "X")
    return True


def claim_is_live(row: RunRow, now: float, stale_after: float = STALE_AFTER_S) -> bool:
    """Whether a ``running`` row is held by a sweep that is alive.

    An owner on this host: while its pid is alive and started when the claim says (a pid
    reused since is dead). Any other owner (another host, or a row written by an older
    version): while its heartbeat (its start time when it has none) is younger than
    ``stale_after`` seconds.
    """
    if row.owner_pid is not None and row.owner_host == socket.gethostname():
        if not pid_alive(row.owner_pid):
            return False
        started = process_start(row.owner_pid)
        return row.owner_started is None or started is None or started == row.owner_started
    beat = row.heartbeat_at if row.heartbeat_at is not None else row.started_at
    return beat is not None and now - beat <= stale_after


def claimable(row: RunRow, owner: Owner, now: float, stale_after: float = STALE_AFTER_S) -> bool:
    """Whether ``owner`` may run ``row`` now.

    Pending and interrupted runs are claimable; failed ones when they failed before
    ``owner.since`` (one failing during this call, in another sweep, is not retried); running
    ones when the claim is ``owner``'s own or not live (:func:`claim_is_live`); finished ones
    never (a finished run to re-run is first reopened, :meth:`ResultStore.reopen`).
    """
    if row.status in ("pending", "interrupted"):
        return True
    if row.status == "failed":
        return row.finished_at is None or row.finished_at < owner.since
    if row.status == "running":
        return row.claim == owner.token or not claim_is_live(row, now, stale_after)
    return False
