"""The storage location of a cluster sweep: where the files that travel between nodes live.

Checkpoints, ``model.pt``, ``recon.png``, ``train.log``, the checkpoint captures and the dataset
cache are files a worker on one node writes and the driver (or a worker resuming the run on another
node) reads. They go through a :class:`Storage`: a folder every node sees at the same path (a shared
filesystem: files are fine there, unlike SQLite's WAL, :mod:`fnodiag.runs.filesystems`) or an
``fsspec`` URL (``s3://bucket/prefix``, ``gs://...``, ``file:///...``; fsspec comes with torch, the
protocol's own package, such as ``s3fs``, is needed for a remote store). Every file is written once,
to a temporary name beside it, then renamed (:meth:`Storage.put`), so no reader sees half a file.

Layout under the root: ``<run>/<path inside the run folder>`` (``control-s1/checkpoints/last.ckpt``),
``datasets/<key>/...``, and the marker :data:`MARKER` the sweep driver writes (:meth:`Storage.mark`) so
that a worker can prove it sees the same location (:meth:`Storage.check`) before it trains.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from pathlib import Path

import fsspec

from fnodiag.config import ConfigError

MARKER = ".fnodiag-storage.json"


def _temporary(name: str) -> str:
    """A temporary name beside ``name``: hidden, unique, ``.tmp`` (skipped by :meth:`Storage.files`)."""
    return f".{name}.{secrets.token_hex(4)}.tmp"


def _is_temporary(name: str) -> bool:
    return name.startswith(".") and name.endswith(".tmp")


class Storage:
    """Files under one root: a local or shared folder, or an ``fsspec`` URL.

    Parameters
    ----------
    root : str or Path
        A folder path or a URL such as ``s3://bucket/sweeps/stage-a``.
    """

    def __init__(self, root: str | Path):
        self.root = str(root)
        try:
            self.fs, base = fsspec.core.url_to_fs(self.root)
        except (ImportError, ValueError) as exc:  # an unknown protocol, or its package missing
            raise ConfigError(
                f"--storage {self.root!r} cannot be opened ({exc}); pass a folder or a URL fsspec knows"
            ) from None
        self.base = base.rstrip("/") or "/"
        self.local = "file" in ((self.fs.protocol,) if isinstance(self.fs.protocol, str) else self.fs.protocol)

    def __repr__(self) -> str:
        return f"Storage({self.root!r})"

    def path(self, rel: str) -> str:
        """The full path (in the filesystem's own terms) of ``rel`` under the root."""
        return f"{self.base.rstrip('/')}/{rel}" if rel else self.base

    def is_folder(self, folder: str | Path) -> bool:
        """True when this storage is the local folder ``folder`` itself (nothing to copy between them)."""
        return self.local and Path(self.base).resolve() == Path(folder).resolve()

    # -- single files ---------------------------------------------------------------------------
    def put(self, local: str | Path, rel: str) -> None:
        """Copy the local file ``local`` to ``rel``: written to a temporary name, then renamed."""
        dest = self.path(rel)
        parent, _, name = dest.rpartition("/")
        tmp = f"{parent}/{_temporary(name)}"
        self.fs.makedirs(parent or "/", exist_ok=True)
        try:
            self.fs.put_file(str(local), tmp)
            self.fs.mv(tmp, dest)
        except BaseException:
            if self.fs.exists(tmp):
                self.fs.rm(tmp)
            raise

    def get(self, rel: str, local: str | Path) -> bool:
        """Copy ``rel`` to the local file ``local`` (temporary name, then renamed); False when it does not exist."""
        src, local = self.path(rel), Path(local)
        if not self.fs.isfile(src):
            return False
        local.parent.mkdir(parents=True, exist_ok=True)
        tmp = local.with_name(_temporary(local.name))
        try:
            self.fs.get_file(src, str(tmp))
            os.replace(tmp, local)
        finally:
            tmp.unlink(missing_ok=True)
        return True

    def files(self, rel: str) -> list[str]:
        """Every file under ``rel`` (recursively) as a path relative to ``rel``, sorted; temporary files skipped."""
        top = self.path(rel)
        if not self.fs.isdir(top):
            return []
        found = []
        for full in self.fs.find(top):
            inner = str(full).lstrip("/")[len(top.lstrip("/")) :].lstrip("/")
            if inner and not any(_is_temporary(part) for part in inner.split("/")):
                found.append(inner)
        return sorted(found)

    # -- folders --------------------------------------------------------------------------------
    def push(self, folder: str | Path, rel: str, names: list[str] | None = None) -> list[str]:
        """Copy the files of the local ``folder`` (or only ``names``, relative to it) to ``rel``; returns them."""
        folder = Path(folder)
        if names is None:
            names = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
        for name in names:
            self.put(folder / name, f"{rel}/{name}")
        return names

    def pull(self, rel: str, folder: str | Path) -> list[str]:
        """Copy every file under ``rel`` into the local ``folder`` (each replacing its old copy); returns them."""
        names = self.files(rel)
        for name in names:
            self.get(f"{rel}/{name}", Path(folder) / name)
        return names

    def pull_folder(self, rel: str, folder: str | Path) -> bool:
        """Copy the folder ``rel`` to the local ``folder`` as a whole, unless ``folder`` already holds files.

        The files land in a temporary folder renamed into place, so two processes pulling the same
        folder (two runs on one node) never see half of it. False when ``rel`` holds no file.
        """
        folder = Path(folder)
        if folder.is_dir() and any(folder.iterdir()):
            return True
        tmp = folder.with_name(_temporary(folder.name))
        try:
            if not self.pull(rel, tmp):
                return False
            try:
                tmp.rename(folder)
            except OSError:  # another process put it there first
                if not (folder.is_dir() and any(folder.iterdir())):
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return True

    # -- the marker -----------------------------------------------------------------------------
    def mark(self, token: str, owner: dict) -> None:
        """Write :data:`MARKER` (``token`` and ``owner``: the sweep folder and host of the driver)."""
        self.fs.makedirs(self.base, exist_ok=True)
        dest = self.path(MARKER)
        tmp = self.path(_temporary(MARKER))
        with self.fs.open(tmp, "w") as fh:
            fh.write(json.dumps({"token": token, **owner}, sort_keys=True))
        self.fs.mv(tmp, dest)

    def marker(self) -> dict | None:
        """The marker's content, or None when this process cannot read one."""
        try:
            with self.fs.open(self.path(MARKER), "r") as fh:
                return json.loads(fh.read())
        except (OSError, ValueError):
            return None

    def check(self, token: str) -> None:
        """Prove this process sees the storage the driver marked with ``token``, or raise a one-line ConfigError."""
        found = self.marker()
        if not found or found.get("token") != token:
            why = "missing" if not found else "another sweep's"
            raise ConfigError(
                f"this node ({os.uname().nodename}) cannot see the sweep's storage location {self.root!r} "
                f"({MARKER} there is {why}); give "
                "--storage a shared folder every node mounts at the same path, or an fsspec URL such as "
                "s3://bucket/prefix"
            )
