"""One runs folder as every session of a server sees it: scanned incrementally, rows read once per change.

:func:`shared_index` gives the :class:`RunsIndex` of a folder, one per folder and server process, so
eight open pages over one folder share one scan and one set of rows. Its :meth:`RunsIndex.catalog`
rescans at most every ``max_age_s`` (:func:`fnodiag.dashboard.catalog.scan` with a kept
:class:`~fnodiag.dashboard.folder.FolderWalk`: only folders whose mtime moved are listed again).
:meth:`RunsIndex.rows` gives the overview rows of runs: each run's row is read
(:func:`~fnodiag.dashboard.catalog.summarize`) when its folder or its ``status.json`` changed, and
kept otherwise; a running run's row is read again at most every :data:`LIVE_ROW_S` (its progress
and liveness move with time). Rows of runs that are not chosen read no store but a running run's
(its progress); chosen runs' rows also check the realised LR. Reading is limited per call by a time
budget: rows not read in time come back as :func:`~fnodiag.dashboard.catalog.quick_row` (state from
``status.json``) and are read by later calls, or ahead of any session by :meth:`RunsIndex.warm`
(started when the server starts).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from fnodiag.dashboard.catalog import Catalog, RunEntry, quick_row, scan, summarize
from fnodiag.dashboard.folder import FolderWalk, is_racy, stamp
from fnodiag.runs import states

LIVE_ROW_S = 1.0  # a running run's row is read again after this long (progress, heartbeat)
SCAN_EVERY_S = 0.5  # sessions share one scan this recent

_INDEXES: dict[Path, RunsIndex] = {}
_INDEXES_LOCK = threading.Lock()


class RunsIndex:
    """The catalog and overview rows of one runs folder, kept between reads (thread-safe).

    Parameters
    ----------
    root : the runs folder

    Attributes
    ----------
    reads : full rows read so far (each one a :func:`~fnodiag.dashboard.catalog.summarize`)
    """

    def __init__(self, root: str | Path):
        self.root = Path(root).resolve()
        self._walk = FolderWalk(self.root)
        self._memo: dict = {}
        self._lock = threading.RLock()
        self._catalog = Catalog(self.root)
        self._scanned_at: float | None = None
        self._rows: dict[tuple[Path, bool], tuple[tuple | None, float, dict]] = {}
        self.reads = 0

    def catalog(self, max_age_s: float = 0.0) -> Catalog:
        """The folder's :class:`~fnodiag.dashboard.catalog.Catalog`, rescanned when older than ``max_age_s``
        (the same object while nothing changed)."""
        with self._lock:
            now = time.monotonic()
            if self._scanned_at is None or now - self._scanned_at >= max_age_s:
                cat = scan(self.root, self._walk, self._memo)
                if cat is not self._catalog:
                    listed = {e.run.path for es in cat.sweeps.values() for e in es}
                    for key in [k for k in self._rows if k[0] not in listed]:
                        del self._rows[key]  # runs that are gone
                self._catalog, self._scanned_at = cat, now
            return self._catalog

    def _signature(self, entry: RunEntry) -> tuple | None:
        """What a row is read from changing shows here: the run folder's mtime (every record is replaced
        atomically in it) and ``status.json``'s; None for a run without a folder."""
        folder = self._walk.mtimes.get(entry.run.path)
        if folder is None:
            folder = stamp(entry.run.path)
            if folder is None:
                return None
            folder = folder[0]
        return folder, stamp(entry.run.status_path)

    def _fresh(self, key, sig) -> dict | None:
        """The kept row under ``key`` when ``sig`` still matches (a quick row included: ``pending``)."""
        hit = self._rows.get(key)
        if hit is None or sig is None or hit[0] != sig or is_racy(sig[0]):
            return None
        row = hit[2]
        if row.get("state") in states.LIVE and time.monotonic() - hit[1] > LIVE_ROW_S:
            return None
        return row

    def rows(self, entries: list[RunEntry], *, chosen=(), budget_s: float | None = None) -> tuple[list[dict], int]:
        """Overview rows of ``entries``, in order, and how many are still :func:`quick_row` s.

        Parameters
        ----------
        entries : runs of the catalog
        chosen : labels of the runs drawn (their rows check the realised LR from their store)
        budget_s : seconds this call may spend reading rows (None: no limit); rows not read in time
            are quick rows (``pending`` True), read by a later call

        Returns
        -------
        (rows, pending)
        """
        deadline = None if budget_s is None else time.monotonic() + budget_s
        chosen = set(chosen)
        out, pending = [], 0
        for e in entries:
            key = (e.run.path, e.label in chosen)
            sig = self._signature(e)
            with self._lock:
                row = self._fresh(key, sig)
            if (row is None or row.get("pending")) and (deadline is None or time.monotonic() < deadline):
                row = summarize(e, chosen=key[1])
                with self._lock:
                    self._rows[key] = (sig, time.monotonic(), row)
                    self.reads += 1
            elif row is None:  # out of time: the run's state now, its full row later
                row = quick_row(e)
                with self._lock:
                    self._rows[key] = (sig, time.monotonic(), row)
            pending += bool(row.get("pending"))
            out.append(row if row["label"] == e.label else {**row, "arm": e.arm, "seed": e.seed, "label": e.label})
        return out, pending

    def warm(self) -> None:
        """Scan and read every run's row now (the server starts this in a thread, before any page asks)."""
        cat = self.catalog()
        for entries in list(cat.sweeps.values()):
            self.rows(entries)


def shared_index(root: str | Path) -> RunsIndex:
    """The :class:`RunsIndex` of ``root`` shared by every session of this process."""
    root = Path(root).resolve()
    with _INDEXES_LOCK:
        index = _INDEXES.get(root)
        if index is None:
            index = _INDEXES[root] = RunsIndex(root)
        return index


def warm_in_background(root: str | Path) -> threading.Thread:
    """Start :meth:`RunsIndex.warm` of ``root``'s shared index in a daemon thread; returns the thread."""
    thread = threading.Thread(target=shared_index(root).warm, name="fnodiag-index-warm", daemon=True)
    thread.start()
    return thread
