"""The run directory: contract paths, atomic JSON files (config, status, history, metrics), list_runs."""

from __future__ import annotations

import json
import operator
import os
import secrets
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from fnodiag.config import ConfigError, RunConfig
from fnodiag.files import write_json
from fnodiag.runs import states
from fnodiag.runs.damage import DamagedRecord
from fnodiag.runs.liveness import HOST, live_status
from fnodiag.runs.reader import StoreReader
from fnodiag.runs.states import STATES
from fnodiag.runs.store import RunStore

FOREIGN_KINDS = ("lightning", "torch")  # runs of someone else's model: config.json is {"kind": K, ...}, not a RunConfig
# The files a run writer creates: a folder holding only these (and an empty checkpoints/) and no
# training record may be used again (RunDir.training_record).
RUN_FILES = (
    "config.json",
    "effective_config.json",
    "status.json",
    "history.json",
    "run.sqlite",
    "run.sqlite-wal",
    "run.sqlite-shm",
    "train.log",
    "findings.json",  # written when a run ends, even one that never trained
)


def ensure_writable_dir(path: str | Path, what: str = "output folder") -> Path:
    """Create ``path`` if needed and prove a file can be written in it.

    Raises
    ------
    ConfigError
        One line naming the folder and the reason, before anything is computed or written.
    """
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-test-{secrets.token_hex(4)}"
        probe.touch()
        probe.unlink()
    except OSError as exc:
        raise ConfigError(f"{what} {str(path)!r} is not writable ({exc.strerror}); choose another folder") from None
    return path


def _config_diff(old: dict, new: dict) -> str:
    flat = lambda d: {f"{s}.{k}": v for s, sec in d.items() for k, v in (sec.items() if isinstance(sec, dict) else [])}
    a, b = flat(old), flat(new)
    diffs = [f"{k} ({a.get(k)!r} -> {b.get(k)!r})" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
    return ", ".join(diffs[:3]) + (f" and {len(diffs) - 3} more" if len(diffs) > 3 else "")


class RunDir:
    """One run directory (arm x seed) and the paths of the DESIGN.md contract.

    Parameters
    ----------
    path : str or Path
        The folder; it need not exist until something is written (see :meth:`create`).
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RunDir) and self.path.resolve() == other.path.resolve()

    def __hash__(self) -> int:
        return hash(self.path.resolve())

    def __fspath__(self) -> str:
        return str(self.path)

    @classmethod
    def create(
        cls, path: str | Path | RunDir, config: RunConfig, *, exist_ok: bool = False, resume: bool = False
    ) -> RunDir:
        """Make the run directory and write ``config.json``.

        Parameters
        ----------
        path : str, Path or RunDir
            The folder, or a run folder object to create (e.g. a
            :class:`~fnodiag.runs.remote.RemoteRunDir` whose records go to a sweep driver).
        config : RunConfig
        exist_ok : bool
            Accept a folder that already exists (empty, or holding a run with an equal config).
        resume : bool
            Also accept a run whose ``config.json`` differs, and overwrite it with ``config``
            (continuing a run under changed settings). Implies ``exist_ok``.

        Raises
        ------
        FileExistsError
            The folder is not empty / holds another run's different config and neither flag allows it.
        """
        run = path if isinstance(path, RunDir) else cls(path)
        if run.path.exists() and not run.path.is_dir():
            raise FileExistsError(f"run directory {str(run.path)!r} is a file; choose a folder path")
        if run.path.is_dir() and any(run.path.iterdir()) and not (exist_ok or resume):
            raise FileExistsError(
                f"run directory {str(run.path)!r} already exists and is not empty; "
                "pass exist_ok=True to reuse it or choose a new directory"
            )
        run.checkpoints_dir.mkdir(parents=True, exist_ok=True)
        run.write_config(config, resume=resume)
        return run

    # -- paths
    config_path = property(lambda self: self.path / "config.json", doc="The RunConfig, ``config.json``.")
    effective_config_path = property(lambda self: self.path / "effective_config.json", doc="What really trained.")
    status_path = property(lambda self: self.path / "status.json", doc="State, step, epoch, updated, message.")
    store_path = property(lambda self: self.path / "run.sqlite", doc="The SQLite store (:class:`RunStore`).")
    history_path = property(lambda self: self.path / "history.json", doc="Per-epoch series.")
    metrics_path = property(lambda self: self.path / "metrics.json", doc="``{'best': ..., 'last': ...}``.")
    checkpoints_dir = property(lambda self: self.path / "checkpoints", doc="Lightning checkpoints folder.")
    best_ckpt_path = property(lambda self: self.checkpoints_dir / "best.ckpt", doc="Best Lightning checkpoint.")
    last_ckpt_path = property(lambda self: self.checkpoints_dir / "last.ckpt", doc="Last Lightning checkpoint.")
    model_path = property(lambda self: self.path / "model.pt", doc="Generator-only state dict.")
    recon_path = property(lambda self: self.path / "recon.png", doc="Reconstruction beside ground truth.")
    collapse_path = property(lambda self: self.path / "collapse.json", doc="Collapse analysis report.")
    findings_path = property(lambda self: self.path / "findings.json", doc="Ranked findings (``fnodiag diagnose``).")
    imported_path = property(lambda self: self.path / "imported.json", doc="Provenance of an imported run.")
    capture_dir = property(
        lambda self: self.path / "capture", doc="Checkpoint captures (``<tag>.json``, ``error.txt``)."
    )
    capture_error_path = property(
        lambda self: self.capture_dir / "error.txt", doc="Why the checkpoint capture of a finished run failed."
    )

    def capture_path(self, tag: str) -> Path:
        """The capture report of checkpoint ``tag`` (``"best"``, ``"last"``): ``capture/<tag>.json``."""
        return self.capture_dir / f"{tag}.json"

    def read_capture(self, tag: str) -> dict:
        """The capture report of checkpoint ``tag`` ({} when there is none)."""
        return self.read_json(str(self.capture_path(tag).relative_to(self.path)), default={}) or {}

    def read_origin(self) -> dict | None:
        """Where the run came from: None for fnodiag's own training, else a dict with ``kind``.

        ``{"kind": "reference", ...}`` is ``imported.json`` (a run imported by ``fnodiag import``:
        source path, what was missing; read-only, no live per-layer captures); a run written by
        fnodiag's capture core for someone else's model has a ``config.json`` that is not a
        RunConfig but ``{"kind": K, "module": ..., ...}`` with ``K`` in :data:`FOREIGN_KINDS`:
        ``"lightning"`` (any LightningModule under ``fnodiag.LiveCapture``) or ``"torch"`` (any
        PyTorch loop under ``fnodiag.watch``). Older LiveCapture folders hold
        ``{"lightning": {"module": ..., "hparams": ...}}`` and read as ``kind = "lightning"``.
        """
        imported = self.read_json("imported.json")
        if isinstance(imported, dict):
            return {"kind": "reference", **imported}
        config = self.read_json("config.json")
        if isinstance(config, dict) and config.get("kind") in FOREIGN_KINDS:
            return dict(config)
        if isinstance(config, dict) and isinstance(config.get("lightning"), dict):
            return {"kind": "lightning", **config["lightning"]}
        return None

    def is_foreign(self) -> bool:
        """True for a run of someone else's model (no RunConfig in ``config.json``; see :meth:`read_origin`)."""
        origin = self.read_origin()
        return origin is not None and origin["kind"] in FOREIGN_KINDS

    def training_record(self) -> str | None:
        """Why this folder holds a training record (a sentence), or None when it holds none.

        A folder holds a training record when its store has a row (a per-step scalar or a layer
        statistic), its ``history.json`` has an epoch, or its status says a live process trains it
        now. A folder without one (absent, empty, or left by a start that failed before the first
        step) may be used again by a new run; files other than the run files of
        :data:`RUN_FILES` also count, so nothing of the user's is ever overwritten.
        """
        if not self.path.exists():
            return None
        if not self.path.is_dir():
            return f"{str(self.path)!r} is a file"
        other = sorted(
            p.name
            for p in self.path.iterdir()
            if p.name not in RUN_FILES and not (p == self.checkpoints_dir and p.is_dir() and not any(p.iterdir()))
        )
        if other:
            return f"{str(self.path)!r} already exists and is not empty (it holds {', '.join(other[:3])})"
        status = self.read_status()
        if status is not None and status.get("state") in states.LIVE:
            return f"{str(self.path)!r} is being trained now (pid {status.get('pid')} on {status.get('host')})"
        if self.store_path.is_file():
            with self.open_reader() as reader:
                last = reader.last_step()
            if last is not None:
                return f"{str(self.path)!r} already holds a training record (up to step {last})"
        if any(len(v) for v in (self.read_history() or {}).values() if isinstance(v, list)):
            return f"{str(self.path)!r} already holds a training record (history.json)"
        return None

    def clear_unused(self) -> None:
        """Delete the run files of a folder that holds no training record, so a new run starts clean.

        Raises
        ------
        FileExistsError
            The folder holds a training record (:meth:`training_record`); nothing is deleted.
        """
        reason = self.training_record()
        if reason is not None:
            raise FileExistsError(f"{reason}; choose a new folder for this run")
        if not self.path.is_dir():
            return
        for name in RUN_FILES:
            (self.path / name).unlink(missing_ok=True)
        if self.checkpoints_dir.is_dir():
            self.checkpoints_dir.rmdir()

    # -- JSON files
    def write_json(self, name: str, obj: Any) -> Path:
        """Write ``obj`` as JSON to ``name`` (relative to the run folder) atomically; returns the path."""
        rel = Path(name)
        if rel.is_absolute() or ".." in rel.parts:
            raise ValueError(f"JSON name {name!r} must be a path inside the run directory, e.g. 'collapse.json'")
        return write_json(self.path / rel, obj)

    def read_json(self, name: str, default: Any = None) -> Any:
        """Parsed JSON file ``name``, or ``default`` when it does not exist.

        Raises
        ------
        DamagedRecord
            The file is not UTF-8 text or not valid JSON (one line naming it).
        """
        p = self.path / name
        try:
            text = p.read_text(encoding="utf-8")
        except FileNotFoundError:
            return default
        except UnicodeDecodeError:
            raise DamagedRecord(
                f"{str(p)!r} is not UTF-8 text, so not JSON written by fnodiag.runs; delete or rewrite it", p
            ) from None
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise DamagedRecord(
                f"{str(p)!r} is not valid JSON ({exc.msg} at line {exc.lineno}); "
                "it was not written by fnodiag.runs, delete or rewrite it",
                p,
            ) from None

    def write_config(self, config: RunConfig, *, resume: bool = False) -> None:
        """Write ``config.json``; refuses to replace a different config unless ``resume=True``."""
        if not isinstance(config, RunConfig):
            raise TypeError(f"config must be a RunConfig, got {type(config).__name__}")
        old = self.read_json("config.json")
        if old is not None and old != config.to_dict() and not resume:
            raise FileExistsError(
                f"run directory {str(self.path)!r} holds another run's config (differs in "
                f"{_config_diff(old, config.to_dict())}); choose a new directory or pass resume=True"
            )
        if old != config.to_dict():
            self.write_json("config.json", config.to_dict())

    def read_config(self) -> RunConfig:
        """The RunConfig in ``config.json`` (not validated).

        Raises
        ------
        FileNotFoundError
            No ``config.json``.
        DamagedRecord
            A ``config.json`` that is not a RunConfig (unparsable, or sections this fnodiag does not know).
        """
        if not self.config_path.is_file():
            raise FileNotFoundError(
                f"{str(self.path)!r} has no config.json; it is not a run directory (create one with RunDir.create)"
            )
        config = self.read_json("config.json")
        try:
            return RunConfig.from_dict(config)
        except (ConfigError, TypeError) as exc:
            raise DamagedRecord(
                f"{str(self.config_path)!r} is not a run configuration ({str(exc).splitlines()[0]}); "
                "restore it or remove the run folder",
                self.config_path,
            ) from None

    def dataset_cache(self) -> Path:
        """The dataset cache folder this run trained on: the one rule every reader follows.

        ``effective_config.json`` ``data.cache_dir`` (recorded by training, so a run trained with
        ``--cache-dir`` is captured on its own data), else the runs folder's ``datasets/`` (the
        default of ``fnodiag train`` and of a sweep; also where the recorded folder is not on this
        machine: a run a cluster worker trained on its own copy of the sweep's dataset). The dataset
        itself is ``<cache>/<data.key>``.
        """
        effective = self.read_json("effective_config.json", default=None)
        data = effective.get("data") if isinstance(effective, dict) else None
        recorded = data.get("cache_dir") if isinstance(data, dict) else None
        beside = self.path.parent / "datasets"
        if recorded and (Path(recorded).is_dir() or not beside.is_dir()):
            return Path(recorded)
        return beside

    def write_status(self, state: str, *, step: int, epoch: int, message: str = "") -> dict:
        """Write ``status.json``: state, step, epoch, ISO-8601 UTC ``updated``, the writer's ``host`` and
        ``pid``, message; returns what was written. ``updated`` is the heartbeat
        (:mod:`fnodiag.runs.liveness`)."""
        if state not in STATES:
            raise ValueError(f"status state {state!r} is not valid; choose one of {', '.join(STATES)}")
        status = {
            "state": state,
            "step": operator.index(step),
            "epoch": operator.index(epoch),
            "updated": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "host": HOST,
            "pid": os.getpid(),
            "message": str(message),
        }
        self.write_json("status.json", status)
        return status

    def read_status(self, *, raw: bool = False) -> dict | None:
        """The ``status.json`` dict, or None before training wrote one.

        A ``running`` record whose writer is dead (gone pid on this host, or a stale heartbeat)
        reads as ``stopped`` with a message saying how to resume (:func:`~fnodiag.runs.liveness.live_status`);
        ``raw=True`` gives the file as written.
        """
        status = self.read_json("status.json")
        if status is not None and (not isinstance(status, dict) or status.get("state") not in STATES):
            got = status.get("state") if isinstance(status, dict) else status
            raise DamagedRecord(
                f"{str(self.status_path)!r} has state {got!r}; expected one of {', '.join(STATES)}", self.status_path
            )
        return status if raw else live_status(status, path=self.path)

    def write_history(self, history: Mapping[str, Any]) -> None:
        """Write ``history.json``: ``{series name: [one value per epoch]}`` (e.g. train_loss, val_loss, lr)."""
        bad = [
            k
            for k, v in history.items()
            if not isinstance(k, str) or isinstance(v, (str, bytes, Mapping)) or not hasattr(v, "__len__")
        ]
        if bad:
            raise TypeError(f"history series {bad!r} must map a name to a list of per-epoch values")
        self.write_json("history.json", {k: list(np.asarray(v, dtype=float).tolist()) for k, v in history.items()})

    def read_history(self) -> dict:
        """The ``history.json`` dict ({} before one was written)."""
        return self.read_json("history.json", {})

    def write_metrics(self, best: Mapping[str, float] | None, last: Mapping[str, float] | None) -> None:
        """Write ``metrics.json`` = ``{"best": best, "last": last}``; None where there are no such weights
        (a run that diverged before its first checkpoint)."""
        if not all(m is None or isinstance(m, Mapping) for m in (best, last)):
            raise TypeError("write_metrics(best, last) takes two dicts of metric name -> value (or None)")
        self.write_json(
            "metrics.json", {"best": None if best is None else dict(best), "last": None if last is None else dict(last)}
        )

    def read_metrics(self) -> dict:
        """The ``metrics.json`` dict ({} before one was written)."""
        return self.read_json("metrics.json", {})

    def open_store(self, *, enabled: bool = True, **kwargs) -> RunStore:
        """A :class:`RunStore` writing this run's ``run.sqlite``."""
        return RunStore(self.store_path, enabled=enabled, **kwargs)

    def open_reader(self) -> StoreReader:
        """A :class:`StoreReader` over this run's ``run.sqlite``."""
        return StoreReader(self.store_path)


def list_runs(root: str | Path) -> list[RunDir]:
    """Every run directory (a folder holding ``config.json``) under ``root``, recursively, sorted by path.

    Parameters
    ----------
    root : str or Path
        The folder training or a sweep wrote into; ``root`` itself counts when it holds a config.json.

    Returns
    -------
    list of RunDir
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"runs folder {str(root)!r} does not exist; pass the folder training wrote into")
    return [RunDir(p.parent) for p in sorted(root.rglob("config.json")) if p.is_file()]
