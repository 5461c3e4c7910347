"""Both ends of a run trained on another node of a cluster sweep (``--executor ray``): the driver owns the stores.

The driver (the ``fnodiag sweep`` process) keeps the sweep folder on its own disk and writes every
run's records into it (:mod:`fnodiag.runs.remote`: a receiver on the driver's node, a link from each
worker); the files that travel go through the storage location (:mod:`fnodiag.runs.storage`:
``--storage PATH_OR_URL``, by default the sweep folder itself, which then must be shared).

Driver side: :func:`prepare` marks the storage location and copies the datasets there before any run
is submitted; :func:`collect` copies a run's files back into its folder when the run ends and writes
its ``collapse.json`` from the driver's store.

Worker side: :class:`RemotePlace` is where :func:`fnodiag.sweeps.task.run_one` trains when its spec
names a records transport. :meth:`RemotePlace.own` begins the attempt (the driver takes the run and
sends its JSON records), proves the storage location is the driver's (its marker), pulls the run's
files (checkpoints, ``train.log``) into a scratch folder on this node's disk and the dataset into a
node-local cache. While training, every checkpoint is copied to storage as soon as it is written,
after every record before it reached the driver (:class:`~fnodiag.training.checkpoint_mirror.CheckpointMirror`),
so a retry on another node resumes from it with no step lost or stored twice. Leaving the place
copies the other files the attempt wrote (``model.pt``, ``recon.png``, captures, ``train.log``),
waits for the driver to write every record and removes the scratch folder.
"""

from __future__ import annotations

import hashlib
import secrets
import shutil
import tempfile
from functools import partial
from pathlib import Path

from fnodiag.config import ConfigError, RunConfig
from fnodiag.diagnostics.collapse import write_collapse
from fnodiag.files import write_json
from fnodiag.ptycho.simulate import dataset_key
from fnodiag.runs import RunDir
from fnodiag.runs.liveness import HOST
from fnodiag.runs.remote import RecordLink, RemoteRunDir
from fnodiag.runs.storage import Storage
from fnodiag.sweeps.executors import load_task
from fnodiag.training.checkpoint_mirror import CheckpointMirror

SCRATCH = Path(tempfile.gettempdir()) / "fnodiag-worker"  # this node's scratch run folders and dataset copies


def _is_record(rel: str) -> bool:
    """A path inside a run folder that travels as a record, never as a file: top-level JSON, the store."""
    return ("/" not in rel and rel.endswith(".json")) or rel.startswith("run.sqlite")


# -- the driver's side ----------------------------------------------------------------------------
def prepare(out: Path, storage: str | None, keys) -> dict:
    """Mark the storage location for this sweep command and copy the datasets ``keys`` there.

    Returns the spec fields a worker needs: ``storage`` (the root) and ``storage_token`` (the marker's).

    Raises
    ------
    ConfigError
        The location cannot be written, or holds another sweep's files.
    """
    where = Storage(storage or out)
    owner = {"out": str(Path(out).resolve()), "host": HOST}
    try:
        found = where.marker()
        if found and found.get("out") not in (None, owner["out"]):
            raise ConfigError(
                f"--storage {where.root!r} holds the files of the sweep in {found['out']!r}; give each sweep "
                "its own storage location"
            )
        token = secrets.token_hex(8)
        where.mark(token, owner)
        if not where.is_folder(out):
            for key in sorted(set(keys)):
                if not where.files(f"datasets/{key}"):
                    where.push(Path(out) / "datasets" / key, f"datasets/{key}")
    except OSError as exc:
        raise ConfigError(
            f"--storage {where.root!r} cannot be written ({exc}); pass a folder or URL you can write"
        ) from None
    return {"storage": where.root, "storage_token": token}


def collect(out: Path, name: str, storage: str | None) -> None:
    """A run's files from the storage location into ``out / name``, then its ``collapse.json`` (from the store)."""
    run, where = RunDir(Path(out) / name), Storage(storage or out)
    if not where.is_folder(out):
        for rel in where.files(name):
            if not _is_record(rel):
                where.get(f"{name}/{rel}", run.path / rel)
    if run.metrics_path.is_file():  # trained to the end: the analysis the worker could not make without the store
        write_collapse(run)


# -- the worker's side ----------------------------------------------------------------------------
class RemotePlace:
    """Where a worker trains run ``spec["name"]`` in the driver-owned layout (see the module docstring).

    Attributes
    ----------
    run : RemoteRunDir
        The scratch run folder (records go to the driver).
    out, cache : Path
        The folder ``train`` gets (the scratch folder's parent) and the dataset cache.
    folder : callable
        ``folder(path)``: the run folder object ``train`` writes through.
    callbacks : list
        Lightning callbacks training needs here (the checkpoint mirror).
    """

    def __init__(self, spec: dict):
        self.spec, self.name = spec, spec["name"]
        self.storage = Storage(spec.get("storage") or spec["out"])
        self.link = RecordLink(load_task(spec["records"]["transport"])(spec["records"]), self.name)
        SCRATCH.mkdir(parents=True, exist_ok=True)
        self.out = Path(tempfile.mkdtemp(prefix=f"{self.name}-", dir=SCRATCH))
        self.run = RemoteRunDir(self.out / self.name, self.link)
        self.folder = partial(RemoteRunDir, link=self.link)
        self.cache = self.out / "datasets"
        self.callbacks = [CheckpointMirror(self._saved)]
        self._sent: dict[str, tuple] = {}

    def own(self, attempt: dict) -> RemotePlace:  # noqa: ARG002 - the driver's process owns the run, not this one
        """Begin the attempt and fill the scratch folder (see the module docstring); the place is the lock.

        Raises
        ------
        RunBusy
            Another live process owns the run on the driver.
        ConfigError
            This node cannot see the storage location (the run is marked ``failed`` on the driver).
        """
        try:
            files = self.link.begin()
        except BaseException:
            shutil.rmtree(self.out, ignore_errors=True)
            raise
        try:
            self.run.path.mkdir(parents=True)
            for name, obj in files.items():  # the driver's records, read back by training (not sent again)
                write_json(self.run.path / name, obj)
            self.storage.check(self.spec["storage_token"])
            for rel in self.storage.files(self.name):
                if not _is_record(rel):
                    self.storage.get(f"{self.name}/{rel}", self.run.path / rel)
            self._sent = self._snapshot()
            self.cache = self._dataset()
        except BaseException as exc:
            if isinstance(exc, Exception):
                status = (self.run.read_status(raw=True) or {}) if self.run.status_path.is_file() else {}
                self.run.write_status(
                    "failed", step=int(status.get("step", 0)), epoch=int(status.get("epoch", 0)), message=str(exc)[:500]
                )
            self._close(push=False, failed=True)
            raise
        return self

    def _dataset(self) -> Path:
        """The dataset cache training reads: the sweep's own when it is the storage, else this node's copy."""
        if self.storage.is_folder(self.spec["out"]):
            return Path(self.spec["out"]) / "datasets"
        node = SCRATCH / f"datasets-{hashlib.sha256(self.storage.root.encode()).hexdigest()[:12]}"
        key = dataset_key(RunConfig.from_dict(self.spec["config"]).data)
        self.storage.pull_folder(f"datasets/{key}", node / key)  # simulated here if the driver had none
        return node

    def _snapshot(self) -> dict[str, tuple]:
        found = {}
        for p in self.run.path.rglob("*"):
            rel = p.relative_to(self.run.path).as_posix()
            if p.is_file() and not _is_record(rel) and not p.name.startswith("."):
                st = p.stat()
                found[rel] = (st.st_size, st.st_mtime_ns)
        return found

    def _push(self, rel: str, state: tuple) -> None:
        self.storage.put(self.run.path / rel, f"{self.name}/{rel}")
        self._sent[rel] = state

    def _saved(self, path: Path) -> None:
        """A checkpoint was written: the records before it reach the driver, then it goes to storage."""
        self.link.drain()
        rel = path.relative_to(self.run.path).as_posix()
        st = path.stat()
        self._push(rel, (st.st_size, st.st_mtime_ns))

    def __enter__(self) -> RemotePlace:
        return self

    def __exit__(self, kind, exc, tb) -> None:
        """Copy the files the attempt wrote to storage, wait for the driver to write every record, clean up."""
        self._close(push=True, failed=kind is not None)

    def _close(self, *, push: bool, failed: bool) -> None:
        try:
            if push and self.run.path.is_dir():
                for rel, state in self._snapshot().items():
                    if self._sent.get(rel) != state:
                        self._push(rel, state)
            self.link.end()
        except Exception:
            if not failed:
                raise
            # the attempt already failed: its own error is the one to report
        finally:
            shutil.rmtree(self.out, ignore_errors=True)
