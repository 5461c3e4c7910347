"""The driver-owned layout: a worker on another node streams its run's records to the driver, which writes them.

SQLite's WAL works on one host only (:mod:`fnodiag.runs.filesystems`), so a cluster worker never opens
a run store on a shared path. It trains in a scratch folder on its own disk through a
:class:`RemoteRunDir`, whose records go to the sweep driver instead:

* JSON records (``config.json``, ``status.json`` with its heartbeats, ``effective_config.json``,
  ``history.json``, ``metrics.json``, ``execution.json``) are written to the scratch folder (the worker
  reads them back) and sent as they are written;
* store rows (per-step scalars, layer statistics, frames) are buffered and packed by a
  :class:`RemoteStore` exactly as :class:`~fnodiag.runs.store.RunStore` packs them (it is one, with
  the driver store's name ids); each flush is sent as one batch and committed by the driver in one
  transaction (:meth:`RunStore.write_rows`); ``truncate`` on resume runs on the driver's store.

Everything goes through one :class:`RecordLink` per attempt, in order, to a :class:`RecordReceiver` on
the driver's node (under Ray an actor pinned there, :mod:`fnodiag.sweeps.ray`). The link numbers its
batches and keeps at most ``max_in_flight`` unacknowledged (back-pressure: a worker producing faster
than the driver writes waits); the receiver applies them in order, exactly once: each attempt gets a
token at :meth:`RecordReceiver.begin`, and a batch of an earlier attempt (a worker presumed dead) is
dropped, while the new attempt's resume truncates the store from its checkpoint step, as a local
resume does. The receiver owns the run while an attempt runs (:class:`~fnodiag.runs.lock.RunLock`
on the driver's disk) and until :meth:`RecordReceiver.release`.

Files that travel (checkpoints, ``model.pt``, captures) are not records: :mod:`fnodiag.runs.storage`.
A transport is anything with ``submit(method, *args) -> handle`` and ``wait(handle) -> value`` calling
the receiver's methods (:class:`LocalTransport` calls it in this process).
"""

from __future__ import annotations

import os
import secrets
import threading
from collections import deque
from pathlib import Path
from typing import Any, Protocol

from fnodiag.files import jsonable
from fnodiag.runs.frames import CHANNELS
from fnodiag.runs.liveness import HOST
from fnodiag.runs.lock import RunBusy, RunLock
from fnodiag.runs.rundir import RunDir
from fnodiag.runs.store import RunStore

MAX_IN_FLIGHT = 8  # batches sent and not yet written by the driver before a worker waits
FROM_STORE = ("collapse.json",)  # computed from the run store: written by the driver, never sent


class Transport(Protocol):
    """How a :class:`RecordLink` reaches a :class:`RecordReceiver` (a Ray actor, or this process)."""

    def submit(self, method: str, *args) -> Any: ...

    def wait(self, handle: Any) -> Any: ...


class LocalTransport:
    """A transport to a receiver in this process: every call runs at once (tests, one-process use)."""

    def __init__(self, receiver: RecordReceiver):
        self.receiver = receiver

    def submit(self, method: str, *args) -> Any:
        return getattr(self.receiver, method)(*args)

    def wait(self, handle: Any) -> Any:
        return handle


class Superseded(RuntimeError):
    """The driver started another attempt of this run: this attempt's records are no longer written."""


# -- the worker's end -----------------------------------------------------------------------------
class RecordLink:
    """One attempt's records of run ``name``, in order, to the driver's receiver (thread-safe).

    Parameters
    ----------
    transport : Transport
    name : str
        The run folder's name in the driver's sweep folder.
    max_in_flight : int
        Batches sent and not yet acknowledged before :meth:`send` waits for the oldest.
    """

    def __init__(self, transport: Transport, name: str, *, max_in_flight: int = MAX_IN_FLIGHT):
        self.transport, self.name, self.max_in_flight = transport, name, int(max_in_flight)
        self.token: str | None = None
        self.known: tuple[list, list] = ([], [])
        self.sent = 0
        self._seq = 0
        self._in_flight: deque = deque()
        self._lock = threading.RLock()

    def begin(self) -> dict[str, Any]:
        """Start an attempt: the driver takes the run; returns its JSON records ``{file name: object}``.

        Raises
        ------
        RunBusy
            Another live process owns the run on the driver.
        """
        seed = self.transport.wait(self.transport.submit("begin", self.name))
        if "busy" in seed:
            raise RunBusy(seed["busy"])
        self.token, self.known, self._seq = seed["token"], (seed["names"], seed["index"]), 0
        return seed["files"]

    def send(self, ops: list[tuple]) -> None:
        """Send one batch of operations (``("json", name, obj)``, ``("rows", rows)``).

        Waits for the oldest batch while more than ``max_in_flight`` are unacknowledged (back-pressure).
        """
        with self._lock:
            self._in_flight.append(self.transport.submit("apply", self.name, self.token, self._seq, ops))
            self._seq += 1
            self.sent += 1
            while len(self._in_flight) > self.max_in_flight:
                self._acknowledged(self._in_flight.popleft())

    def _acknowledged(self, handle) -> None:
        if not self.transport.wait(handle):
            raise Superseded(f"run {self.name!r}: the sweep driver started another attempt; this one stops writing")

    def drain(self) -> None:
        """Wait until the driver has written every batch sent so far (raises what writing one raised)."""
        with self._lock:
            while self._in_flight:
                self._acknowledged(self._in_flight.popleft())

    def truncate(self, from_step: int) -> int:
        """Delete the driver store's records of steps ``>= from_step`` (after every batch sent before); rows deleted."""
        with self._lock:
            self.drain()
            deleted = int(self.transport.wait(self.transport.submit("truncate", self.name, self.token, int(from_step))))
        if deleted < 0:
            raise Superseded(f"run {self.name!r}: the sweep driver started another attempt; this one stops writing")
        return deleted

    def end(self) -> None:
        """Wait for every batch; the attempt is over (the driver keeps the run until it releases it)."""
        with self._lock:
            self.drain()


class RemoteStore(RunStore):
    """A :class:`RunStore` whose flushes are committed by the driver (see the module docstring).

    Buffering, packing and validation are the store's own; only the commit differs. Errors the
    driver meets while writing surface at a later flush, :meth:`close` or :meth:`RecordLink.drain`.
    """

    def __init__(
        self,
        link: RecordLink,
        path: str | Path,
        *,
        flush_every: float | None = 0.25,
        max_buffer: int = 200_000,
        frame_channels: tuple[str, ...] | None = CHANNELS,
    ):
        super().__init__(
            path, enabled=False, flush_every=flush_every, max_buffer=max_buffer, frame_channels=frame_channels
        )
        self.enabled, self.link, self._open = True, link, True
        self._seed(*link.known)

    @property
    def closed(self) -> bool:
        return not self._open

    def _check_open(self) -> None:
        if not self._open:
            raise RuntimeError(f"RemoteStore of run {self.link.name!r} is closed; open a new one to append")

    def _commit(self, rows: dict[str, list[tuple]]) -> None:
        self.link.send([("rows", rows)])

    def truncate(self, from_step: int) -> int:
        with self._lock:
            self.flush()
            return self.link.truncate(from_step)

    def close(self) -> None:
        with self._lock:
            if not self._open:
                return
            try:
                self.flush()
            finally:
                self._open = False


class RemoteRunDir(RunDir):
    """A scratch run folder whose records are sent to the driver (JSON files and the store; see the module docstring).

    Parameters
    ----------
    path : str or Path
        The scratch folder on this node (holding what :meth:`RecordLink.begin` returned and the
        files pulled from the storage location).
    link : RecordLink
    """

    def __init__(self, path: str | Path, link: RecordLink):
        super().__init__(path)
        self.link = link

    def write_json(self, name: str, obj: Any) -> Path:
        obj = jsonable(obj, unknown="error")
        path = super().write_json(name, obj)
        if str(name) not in FROM_STORE:
            self.link.send([("json", str(name), obj)])
        return path

    def open_store(self, *, enabled: bool = True, **kwargs) -> RunStore:
        """A :class:`RemoteStore` for this run (a disabled local one on DDP ranks > 0)."""
        if not enabled:
            return RunStore(self.store_path, enabled=False)
        return RemoteStore(self.link, self.store_path, **kwargs)


# -- the driver's end -----------------------------------------------------------------------------
class _Held:
    """A run the receiver owns: its lock, its open store and the current attempt."""

    def __init__(self, lock: RunLock, store: RunStore):
        self.lock, self.store = lock, store
        self.token, self.seq, self.batches = None, 0, 0


class RecordReceiver:
    """Writes the records streamed by workers into the run folders of ``out`` (on the driver's own disk).

    Parameters
    ----------
    out : str or Path
        The sweep folder; run ``name`` is ``out / name``.
    """

    def __init__(self, out: str | Path):
        self.out = Path(out)
        self._runs: dict[str, _Held] = {}

    def begin(self, name: str) -> dict:
        """Own run ``name`` for a new attempt: ``{"token", "files", "names", "index"}``, or ``{"busy": why}``."""
        held = self._runs.get(name)
        run = RunDir(self.out / name)
        if held is None:
            lock = RunLock(run.path)
            try:
                lock.acquire({"host": HOST, "pid": os.getpid(), "role": "sweep driver (writes its workers' records)"})
            except RunBusy as exc:
                return {"busy": str(exc)}
            try:
                held = self._runs[name] = _Held(lock, run.open_store(frame_channels=None, flush_every=None))
            except BaseException:
                lock.release()
                raise
        held.token, held.seq = secrets.token_hex(8), 0
        names, index = held.store.known()
        files = {p.name: run.read_json(p.name) for p in sorted(run.path.glob("*.json"))}
        return {"token": held.token, "files": files, "names": names, "index": index}

    def _current(self, name: str, token: str) -> _Held | None:
        held = self._runs.get(name)
        return held if held is not None and held.token == token else None

    def apply(self, name: str, token: str, seq: int, ops: list[tuple]) -> bool:
        """Write one batch in order; False (nothing written) for a batch of a superseded attempt."""
        held = self._current(name, token)
        if held is None:
            return False
        if seq != held.seq:
            raise RuntimeError(
                f"run {name!r}: batch {seq} arrived, batch {held.seq} was expected; records were lost on the way"
            )
        run = RunDir(self.out / name)
        for op in ops:
            if op[0] == "json":
                run.write_json(op[1], op[2])
            elif op[0] == "rows":
                held.store.write_rows(op[1])
            else:
                raise ValueError(f"unknown record operation {op[0]!r}")
        held.seq += 1
        held.batches += 1
        return True

    def truncate(self, name: str, token: str, from_step: int) -> int:
        """:meth:`RunStore.truncate` of run ``name``'s store (a resume); -1 for a superseded attempt."""
        held = self._current(name, token)
        return -1 if held is None else held.store.truncate(from_step)

    def release(self, name: str) -> int:
        """Close run ``name``'s store and give up its lock (its attempt ended); returns the batches written."""
        held = self._runs.pop(name, None)
        if held is None:
            return 0
        try:
            held.store.close()
        finally:
            held.lock.release()
        return held.batches

    def close(self) -> None:
        """Release every run."""
        for name in list(self._runs):
            self.release(name)
