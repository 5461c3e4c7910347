"""What changed in a runs folder since the last look: folders listed again only when their mtime moved.

:class:`FolderWalk` finds every run folder (one holding ``config.json``) and every sweep folder (one
holding ``sweep.json``) under a root, as ``root.rglob`` would (symbolic links to folders are not
followed), but keeps each folder's listing with the folder's modification time: a later
:meth:`FolderWalk.walk` stats every known folder and lists again only those whose time moved (a file
or folder was added, removed or atomically replaced in it). A folder changed so recently that a
second change could share its timestamp (:data:`RACY_S`) is listed again next time as well, so no
change is missed. :func:`stamp` is the same test for one file.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from fnodiag.sweeps.manifest import MANIFEST

CONFIG = "config.json"  # the file that makes a folder a run folder (fnodiag.runs.list_runs)
RACY_S = 2.0  # a timestamp this recent may hide a second change within the filesystem's clock tick


@dataclass(frozen=True)
class Listing:
    """One folder as last listed: its mtime, its sub-folders, and whether it holds a run / a sweep."""

    mtime_ns: int
    subdirs: tuple[str, ...]
    run: bool
    sweep: bool
    racy: bool


def stamp(path: str | Path) -> tuple[int, int] | None:
    """``(mtime_ns, size)`` of a file, or None when it is missing: what a cache keys a parsed file by."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size


def is_racy(mtime_ns: int, now_ns: int | None = None) -> bool:
    """True when ``mtime_ns`` is within :data:`RACY_S` of now: a change in the same clock tick would not show."""
    return (time.time_ns() if now_ns is None else now_ns) - mtime_ns < RACY_S * 1e9


class FolderWalk:
    """Incremental listing of the run and sweep folders under ``root``.

    Parameters
    ----------
    root : the runs folder (resolved; missing is fine: nothing is found until it exists)

    Attributes
    ----------
    mtimes : {folder: mtime_ns} of every folder seen by the last walk (run folders included)
    listed : how many folders the last walk listed (the others were unchanged)
    """

    def __init__(self, root: str | Path):
        self.root = Path(root).resolve()
        self._listings: dict[str, Listing] = {}
        self._found: tuple[list[Path], list[Path]] = ([], [])
        self._mtimes: dict[str, int] = {}
        self.mtimes: dict[Path, int] = {}
        self.listed = 0

    def _list(self, folder: str, now_ns: int) -> Listing | None:
        try:
            mtime = os.stat(folder).st_mtime_ns
        except OSError:
            return None
        old = self._listings.get(folder)
        if old is not None and old.mtime_ns == mtime and not old.racy:
            return old
        subdirs, run, sweep = [], False, False
        try:
            with os.scandir(folder) as entries:
                for entry in entries:
                    try:
                        if entry.is_dir(follow_symlinks=False):
                            subdirs.append(entry.name)
                        elif entry.name == CONFIG and entry.is_file():
                            run = True
                        elif entry.name == MANIFEST and entry.is_file():
                            sweep = True
                    except OSError:  # removed while listed
                        continue
        except (PermissionError, FileNotFoundError, NotADirectoryError):
            return None
        self.listed += 1
        listing = Listing(mtime, tuple(sorted(subdirs)), run, sweep, is_racy(mtime, now_ns))
        self._listings[folder] = listing
        return listing

    def walk(self) -> tuple[list[Path], list[Path]]:
        """``(run folders, sweep folders)`` under the root, each sorted as ``sorted(root.rglob(...))`` sorts.

        Only folders whose modification time changed since the previous walk (or that were too
        recent to trust) are listed again; the others cost one ``stat``. :attr:`listed` is 0 when
        nothing changed (the lists returned are then the previous ones).
        """
        self.listed = 0
        now = time.time_ns()
        runs, sweeps, seen = [], [], {}
        stack = [str(self.root)]
        while stack:
            folder = stack.pop()
            listing = self._list(folder, now)
            if listing is None:
                continue
            seen[folder] = listing.mtime_ns
            if listing.run:
                runs.append(folder)
            if listing.sweep:
                sweeps.append(folder)
            stack.extend(os.path.join(folder, name) for name in listing.subdirs)
        gone = set(self._listings) - set(seen)
        for folder in gone:
            del self._listings[folder]
        if self.listed or gone or seen != self._mtimes:
            self.listed += len(gone)
            self._mtimes = seen
            self.mtimes = {Path(k): v for k, v in seen.items()}
            self._found = (sorted(map(Path, runs)), sorted(map(Path, sweeps)))
        return self._found
