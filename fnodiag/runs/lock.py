"""Ownership of a run folder: at most one process trains (writes the store of) a run at a time.

A run ``<out>/<name>`` is owned through an exclusive ``flock`` on ``<out>/.locks/<name>.lock``
(beside the run folder, so an empty run folder stays empty until training creates it). The lock
file holds its owner (host, pid, Ray node, since) so a refused process can say who has the run.
The kernel releases the lock when its holder dies (also SIGKILL), so a run whose worker was killed
can be taken over at once; on NFS the lock lives on the server and is released when the dead
client's lease expires (about a minute and a half by default).
"""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path

_HELD: set[Path] = set()  # lock files this process holds (a second flock of the same file here would refuse itself)


class RunBusy(RuntimeError):
    """Another live process owns the run folder."""


class RunLock:
    """Exclusive, non-blocking ownership of one run folder.

    Parameters
    ----------
    run_path : str or Path
        The run folder ``<out>/<name>`` (need not exist yet).

    Examples
    --------
    >>> with RunLock(out / "control-s1").acquire({"host": "a", "pid": 1}):  # doctest: +SKIP
    ...     train(...)
    """

    def __init__(self, run_path: str | Path):
        run_path = Path(run_path)
        self.path = run_path.parent / ".locks" / f"{run_path.name}.lock"
        self._fd: int | None = None

    def acquire(self, owner: dict) -> RunLock:
        """Take the lock and record ``owner`` in it.

        Raises
        ------
        RunBusy
            One line naming the process that holds the run.
        """
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise RunBusy(
                f"run {self.path.stem!r} is being trained by {_describe(self.holder())}; "
                "wait for that process to end (or stop it) and run the same command again"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(owner, sort_keys=True, default=str) + "\n").encode(), 0)
        os.fsync(fd)
        self._fd = fd
        _HELD.add(self.path.resolve())
        return self

    def release(self) -> None:
        """Give the run up (a no-op when not held)."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            _HELD.discard(self.path.resolve())
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def holder(self) -> dict | None:
        """The owner written by the last process that took the lock ({} if unreadable, None if no file)."""
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return None
        try:
            return json.loads(text) if text.strip() else {}
        except json.JSONDecodeError:
            return {}

    def held_here(self) -> bool:
        """True when this process already owns the run (e.g. a sweep task that then calls ``train``)."""
        return self.path.resolve() in _HELD

    def is_held(self) -> bool:
        """True while some live process (this one included) holds the lock."""
        if self._fd is not None:
            return True
        if not self.path.is_file():
            return False
        fd = os.open(self.path, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)  # closing drops a lock taken here
        return False

    def __enter__(self) -> RunLock:
        if self._fd is None:
            raise RuntimeError("use `with RunLock(path).acquire(owner):`")
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _describe(owner: dict | None) -> str:
    if not owner:
        return "another process"
    where = f"pid {owner.get('pid', '?')} on {owner.get('host', '?')}"
    return where + (f" (Ray node {str(owner['node'])[:12]})" if owner.get("node") else "")
