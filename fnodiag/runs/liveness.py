"""Is a ``running`` run still alive? The heartbeat that proves it, and the one rule every reader applies.

A training process keeps ``status.json`` fresh: the writer stamps ``updated`` (UTC), ``host`` and
``pid`` on every status, and :class:`Heartbeat` (a daemon thread owned by the recorder callback)
rewrites the current ``running`` status every :data:`HEARTBEAT_S` seconds, also during validation
and evaluation, when no training step reports. A process that dies without writing a final
state (``kill -9``, out of memory, a lost node) stops the heartbeat; :func:`live_status` then reads
its ``running`` as ``stopped``:

* at once when the writer's host is this host and its pid is gone (or a zombie);
* otherwise once the heartbeat is older than :data:`STALE_AFTER_S` (12 heartbeats).

:meth:`fnodiag.runs.RunDir.read_status` applies :func:`live_status`, so the dashboard, the sweep
summary and sweep resume all see the same state. ``stopped`` is never written; the run's own
``status.json`` keeps the last ``running`` record.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

from fnodiag.runs import states

HEARTBEAT_S = 5.0
STALE_AFTER_S = 60.0
HOST = socket.gethostname()


def pid_alive(pid: int) -> bool:
    """True when process ``pid`` exists on this host and is not a zombie (Linux ``/proc``; else ``kill 0``)."""
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    except (OverflowError, ValueError):
        return False
    try:
        stat = Path(f"/proc/{int(pid)}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return True


def heartbeat_age_s(status: dict, now: datetime | None = None) -> float | None:
    """Seconds since ``status["updated"]`` (None when it is missing or not an ISO-8601 time)."""
    try:
        updated = datetime.fromisoformat(str(status["updated"]))
    except (KeyError, ValueError):
        return None
    if updated.tzinfo is None:
        updated = updated.replace(tzinfo=UTC)
    return ((now or datetime.now(UTC)) - updated).total_seconds()


def live_status(
    status: dict | None,
    *,
    path: str | Path | None = None,
    now: datetime | None = None,
    stale_after_s: float = STALE_AFTER_S,
) -> dict | None:
    """The status a reader should show: a ``running`` record of a dead process becomes ``stopped``.

    Parameters
    ----------
    status : dict or None
        ``status.json`` as written (``state``, ``step``, ``epoch``, ``updated``, ``host``, ``pid``,
        ``message``); None (no status yet) and every state other than ``running`` pass unchanged.
    path : str or Path, optional
        The run directory, named in the message that says how to resume.
    now : datetime, optional
        The reader's clock (UTC; default: now).
    stale_after_s : float
        A heartbeat older than this is stale (default :data:`STALE_AFTER_S`).

    Returns
    -------
    dict or None
        A copy with ``state = "stopped"``, the last ``running`` message under ``last_message`` and
        a ``message`` that says why and how to resume; otherwise ``status`` itself.
    """
    if not status or status.get("state") != states.RUNNING:
        return status
    age = heartbeat_age_s(status, now)
    host, pid = status.get("host"), status.get("pid")
    if host == HOST and pid is not None and not pid_alive(pid):
        why = f"its process (pid {pid} on {host}) is gone"
    elif age is None or age > stale_after_s:
        why = (
            f"its heartbeat is {'missing' if age is None else f'{age:.0f} s old'} "
            f"(process pid {pid} on {host or 'an unknown host'})"
        )
    else:
        return status
    where = str(path) if path is not None else "RUN_DIR"
    return {
        **status,
        "state": states.STOPPED,
        "last_message": status.get("message", ""),
        "message": f"stopped without a final state at step {status.get('step')}: {why}; resume with "
        f"`fnodiag train --resume {where}` (a sweep run: run the same fnodiag sweep command again)",
    }


class Heartbeat:
    """Rewrites the current ``running`` status every ``period`` seconds from a daemon thread.

    Parameters
    ----------
    write : callable
        ``write(step=..., epoch=..., message=...)`` writing a ``running`` status (stamps ``updated``).
    period : float
        Seconds between heartbeats when nothing else wrote the status.

    :meth:`beat` writes now and remembers the fields; :meth:`stop` ends the thread before the
    final state is written, so no heartbeat can overwrite it.
    """

    def __init__(self, write, period: float = HEARTBEAT_S):
        self._write, self.period = write, period
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._fields: dict | None = None
        self._last = 0.0
        self._thread: threading.Thread | None = None

    def beat(self, **fields) -> None:
        """Write a ``running`` status with ``fields`` (step, epoch, message) now."""
        with self._lock:
            if self._stopped.is_set():
                return
            self._fields = fields
            self._write(**fields)
            self._last = time.monotonic()
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="fnodiag-heartbeat", daemon=True)
            self._thread.start()

    def _loop(self) -> None:
        while not self._stopped.wait(self.period / 2):
            with self._lock:
                if self._stopped.is_set():
                    return
                if time.monotonic() - self._last >= self.period:
                    try:
                        self._write(**self._fields)
                    except OSError:  # a full disk must not kill training; the next beat retries
                        pass
                    self._last = time.monotonic()

    def stop(self) -> None:
        """Stop heartbeats (idempotent); waits for the thread to finish its last write."""
        with self._lock:
            self._stopped.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=10)
