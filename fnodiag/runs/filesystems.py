"""Where a run store may live: SQLite's WAL needs one host's shared memory, so never a network filesystem.

A run store (``run.sqlite``, WAL mode) is written by one process and tailed by others through the
``-shm`` shared-memory index, which only works when "all processes using a database [are] on the
same host computer; WAL does not work over a network filesystem" (SQLite's documentation). On NFS,
Lustre, GPFS or BeeGFS it shows up as locking-protocol or disk I/O errors, or as readers that
silently miss commits. :func:`check_store_folder` refuses such a folder in one line, found two ways:

* the filesystem type of the folder's mount (:func:`filesystem_type`, the longest mount point of
  :data:`MOUNTS` above it) is one of :data:`NETWORK_FILESYSTEMS`;
* the probe: SQLite refuses WAL mode on the file (:func:`enable_wal`).

The fix the message names: keep the sweep folder (``--out``) on a disk local to the sweep driver,
which owns every run store (under ``--executor ray`` workers stream their records to it), and put the
files that travel (checkpoints, datasets) on the shared filesystem with ``--storage``.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from fnodiag.config import ConfigError

MOUNTS = "/proc/mounts"  # the mount table read by filesystem_type (a test points it at a fake one)
NETWORK_FILESYSTEMS = frozenset(
    {
        "nfs",
        "nfs4",
        "lustre",
        "gpfs",
        "cifs",
        "smb3",
        "smbfs",
        "beegfs",
        "ceph",
        "fuse.ceph",
        "glusterfs",
        "fuse.glusterfs",
        "fuse.sshfs",
        "fuse.s3fs",
        "fuse.gcsfuse",
        "fuse.juicefs",
        "afs",
        "panfs",
        "wekafs",
        "9p",
    }
)
FIX = (
    "keep the sweep folder (--out) on a disk local to the sweep driver, which owns every run store "
    "(under --executor ray workers stream their records to it), and put checkpoints and datasets on the "
    "shared filesystem with --storage PATH_OR_URL"
)


def _unescape(field: str) -> str:
    """A mount table field with its octal escapes (``\\040`` for a space) decoded."""
    return field.encode("latin-1").decode("unicode_escape") if "\\" in field else field


def filesystem_type(path: str | Path, mounts: str | Path | None = None) -> tuple[str, str] | None:
    """``(type, mount point)`` of the mount holding ``path`` (its nearest existing folder), or None unknown.

    Parameters
    ----------
    path : str or Path
    mounts : str or Path, optional
        The mount table to read (lines ``device mount-point type options ...``); default :data:`MOUNTS`
        (``/proc/mounts`` on Linux; None is returned where there is none).
    """
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    path = path.resolve()
    try:
        lines = Path(mounts or MOUNTS).read_text().splitlines()
    except OSError:
        return None
    best: tuple[str, str] | None = None
    for line in lines:
        fields = line.split()
        if len(fields) < 3:
            continue
        mount, kind = Path(_unescape(fields[1])), fields[2]
        if (mount == path or mount in path.parents) and (best is None or len(str(mount)) >= len(best[1])):
            best = (kind, str(mount))
    return best


def check_store_folder(folder: str | Path, what: str = "run store folder", mounts: str | Path | None = None) -> None:
    """Refuse ``folder`` for run stores when its filesystem is a network one (one-line :class:`ConfigError`).

    ``mounts`` is the mount table to read (default :data:`MOUNTS`), as in :func:`filesystem_type`.
    """
    found = filesystem_type(folder, mounts)
    if found is not None and found[0].lower() in NETWORK_FILESYSTEMS:
        raise ConfigError(
            f"{what} {str(folder)!r} is on a {found[0]} filesystem ({found[1]}), where SQLite's WAL cannot work "
            f"(its shared-memory index needs one host); {FIX}"
        )


def enable_wal(conn: sqlite3.Connection, path: str | Path) -> None:
    """Put ``conn`` in WAL mode, or raise a one-line :class:`ConfigError` when the filesystem refuses it."""
    try:
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
    except sqlite3.OperationalError as exc:  # "locking protocol", "disk I/O error": no shared memory here
        mode = f"an error ({exc})"
    if str(mode).lower() != "wal":
        raise ConfigError(
            f"run store {str(path)!r} cannot use SQLite's WAL mode here (the filesystem gave {mode}; its "
            f"shared-memory index needs a local disk); {FIX}"
        )
