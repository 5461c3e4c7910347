"""Run directories and their SQLite store: the only reader/writer of run records.

A run directory (one per arm x seed) holds the files of the DESIGN.md contract; :class:`RunDir`
names them and writes every JSON file atomically (temporary file in the same folder, fsync,
``os.replace``), so a reader or a killed process never sees half a file. :class:`RunStore` appends
per-step scalars and per-layer statistics to ``run.sqlite`` (WAL mode) in buffered transactions;
:class:`StoreReader` tails it read-only from another process.

Store schema (``PRAGMA user_version = 1``)::

    names(id INTEGER PRIMARY KEY, kind TEXT, text TEXT, UNIQUE(kind, text))
        kind in 'scalar' | 'source' | 'layer' | 'stat'
    scalars(id INTEGER PRIMARY KEY, step INT, epoch INT, scope INT, name_id INT, value REAL, wall REAL)
        scope 0 = 'step', 1 = 'epoch'; NaN is stored as NULL and read back as NaN
        INDEX scalars_name(name_id, id)
    layer_stats(id INTEGER PRIMARY KEY, step INT, epoch INT, source_id INT, stat_id INT,
                layer_ids BLOB, vals BLOB)
        one row per (step, source, stat): layer_ids '<i4' and vals '<f8' packed arrays, (LAYER,)
        INDEX layer_stats_stat(stat_id, source_id, id)
    layer_index(source_id, stat_id, layer_id) PRIMARY KEY: which series exist

Packing the layers of one (step, source, stat) into a row measured 14x faster to write, 3x smaller
and 20x faster to read than one row per value (50 layers x 10 stats x 10,000 steps).
"""
from __future__ import annotations

import json
import math
import operator
import os
import secrets
import sqlite3
import threading
import time
import urllib.parse
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from fnodiag.config import RunConfig

__all__ = ["atomic_write_text", "STATES", "SOURCES", "SCOPES", "RunDir", "list_runs", "RunStore", "StoreReader",
           "ScalarRecords", "LayerRecords", "LayerMatrix"]

STATES = ("running", "finished", "diverged", "failed", "interrupted")
SOURCES = ("activation", "grad", "param")
SCOPES = ("step", "epoch")
SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS names(id INTEGER PRIMARY KEY, kind TEXT NOT NULL, text TEXT NOT NULL,
                                 UNIQUE(kind, text));
CREATE TABLE IF NOT EXISTS scalars(id INTEGER PRIMARY KEY, step INTEGER NOT NULL, epoch INTEGER NOT NULL,
                                   scope INTEGER NOT NULL, name_id INTEGER NOT NULL, value REAL, wall REAL);
CREATE INDEX IF NOT EXISTS scalars_name ON scalars(name_id, id);
CREATE TABLE IF NOT EXISTS layer_stats(id INTEGER PRIMARY KEY, step INTEGER NOT NULL, epoch INTEGER NOT NULL,
                                       source_id INTEGER NOT NULL, stat_id INTEGER NOT NULL,
                                       layer_ids BLOB NOT NULL, vals BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS layer_stats_stat ON layer_stats(stat_id, source_id, id);
CREATE TABLE IF NOT EXISTS layer_index(source_id INTEGER, stat_id INTEGER, layer_id INTEGER,
                                       PRIMARY KEY(source_id, stat_id, layer_id)) WITHOUT ROWID;
"""


# ----------------------------------------------------------------------------- JSON files
def _json_default(obj: Any) -> Any:
    if hasattr(obj, "tolist"):  # numpy scalars/arrays, torch tensors
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable; convert it to a number, string, list or dict")


def atomic_write_text(path: str | Path, text: str) -> None:
    """Replace ``path`` with ``text`` atomically: a crash leaves the old file or the new one, never half."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    try:  # make the rename itself durable; not every filesystem allows fsync on a folder
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


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
    def create(cls, path: str | Path, config: RunConfig, *, exist_ok: bool = False, resume: bool = False) -> "RunDir":
        """Make the run directory and write ``config.json``.

        Parameters
        ----------
        path : str or Path
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
        run = cls(path)
        if run.path.exists() and not run.path.is_dir():
            raise FileExistsError(f"run directory {str(run.path)!r} is a file; choose a folder path")
        if run.path.is_dir() and any(run.path.iterdir()) and not (exist_ok or resume):
            raise FileExistsError(f"run directory {str(run.path)!r} already exists and is not empty; "
                                  "pass exist_ok=True to reuse it or choose a new directory")
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

    # -- JSON files
    def write_json(self, name: str, obj: Any) -> Path:
        """Write ``obj`` as JSON to ``name`` (relative to the run folder) atomically; returns the path."""
        rel = Path(name)
        if rel.is_absolute() or ".." in rel.parts:
            raise ValueError(f"JSON name {name!r} must be a path inside the run directory, e.g. 'collapse.json'")
        text = json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n"
        target = self.path / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(target, text)
        return target

    def read_json(self, name: str, default: Any = None) -> Any:
        """Parsed JSON file ``name``, or ``default`` when it does not exist."""
        p = self.path / name
        try:
            text = p.read_text(encoding="utf-8")
        except FileNotFoundError:
            return default
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{str(p)!r} is not valid JSON ({exc.msg} at line {exc.lineno}); "
                             "it was not written by fnodiag.runs, delete or rewrite it") from None

    def write_config(self, config: RunConfig, *, resume: bool = False) -> None:
        """Write ``config.json``; refuses to replace a different config unless ``resume=True``."""
        if not isinstance(config, RunConfig):
            raise TypeError(f"config must be a RunConfig, got {type(config).__name__}")
        old = self.read_json("config.json")
        if old is not None and old != config.to_dict() and not resume:
            raise FileExistsError(f"run directory {str(self.path)!r} holds another run's config (differs in "
                                  f"{_config_diff(old, config.to_dict())}); choose a new directory or pass resume=True")
        if old != config.to_dict():
            self.write_json("config.json", config.to_dict())

    def read_config(self) -> RunConfig:
        """The RunConfig in ``config.json`` (not validated)."""
        if not self.config_path.is_file():
            raise FileNotFoundError(f"{str(self.path)!r} has no config.json; it is not a run directory "
                                    "(create one with RunDir.create)")
        return RunConfig.load(self.config_path)

    def write_status(self, state: str, *, step: int, epoch: int, message: str = "") -> dict:
        """Write ``status.json`` with an ISO-8601 UTC ``updated`` timestamp; returns what was written."""
        if state not in STATES:
            raise ValueError(f"status state {state!r} is not valid; choose one of {', '.join(STATES)}")
        status = {"state": state, "step": operator.index(step), "epoch": operator.index(epoch),
                  "updated": datetime.now(timezone.utc).isoformat(timespec="milliseconds"), "message": str(message)}
        self.write_json("status.json", status)
        return status

    def read_status(self) -> dict | None:
        """The ``status.json`` dict, or None before training wrote one."""
        status = self.read_json("status.json")
        if status is not None and (not isinstance(status, dict) or status.get("state") not in STATES):
            got = status.get("state") if isinstance(status, dict) else status
            raise ValueError(f"{str(self.status_path)!r} has state {got!r}; expected one of {', '.join(STATES)}")
        return status

    def write_history(self, history: Mapping[str, Any]) -> None:
        """Write ``history.json``: ``{series name: [one value per epoch]}`` (e.g. train_loss, val_loss, lr)."""
        bad = [k for k, v in history.items() if not isinstance(k, str) or isinstance(v, (str, bytes, Mapping))
               or not hasattr(v, "__len__")]
        if bad:
            raise TypeError(f"history series {bad!r} must map a name to a list of per-epoch values")
        self.write_json("history.json", {k: list(np.asarray(v, dtype=float).tolist()) for k, v in history.items()})

    def read_history(self) -> dict:
        """The ``history.json`` dict ({} before one was written)."""
        return self.read_json("history.json", {})

    def write_metrics(self, best: Mapping[str, float], last: Mapping[str, float]) -> None:
        """Write ``metrics.json`` = ``{"best": best, "last": last}``."""
        if not isinstance(best, Mapping) or not isinstance(last, Mapping):
            raise TypeError("write_metrics(best, last) takes two dicts of metric name -> value")
        self.write_json("metrics.json", {"best": dict(best), "last": dict(last)})

    def read_metrics(self) -> dict:
        """The ``metrics.json`` dict ({} before one was written)."""
        return self.read_json("metrics.json", {})

    def open_store(self, *, enabled: bool = True, **kwargs) -> "RunStore":
        """A :class:`RunStore` writing this run's ``run.sqlite``."""
        return RunStore(self.store_path, enabled=enabled, **kwargs)

    def open_reader(self) -> "StoreReader":
        """A :class:`StoreReader` over this run's ``run.sqlite``."""
        return StoreReader(self.store_path)


def list_runs(root: str | Path) -> list[RunDir]:
    """Every run directory (a folder holding ``config.json``) under ``root``, recursively, sorted by path."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"runs folder {str(root)!r} does not exist; pass the folder training wrote into")
    return [RunDir(p.parent) for p in sorted(root.rglob("config.json")) if p.is_file()]


# ----------------------------------------------------------------------------- store writer
class RunStore:
    """Buffered writer of ``run.sqlite`` (WAL, synchronous=NORMAL); rank 0 only.

    Rows are kept in memory and committed in one transaction by :meth:`flush`, which also runs at
    the next append once ``flush_every`` seconds have passed or ``max_buffer`` values are buffered,
    and on :meth:`close` / context exit. A killed writer loses only the unflushed rows.

    Parameters
    ----------
    path : str or Path
        The store file; created (with parent folders) if missing, appended to if it exists.
    enabled : bool
        False makes every method a no-op and touches no file (DDP ranks > 0).
    flush_every : float or None
        Seconds between automatic flushes (checked at each append); None: only by size or by hand.
    max_buffer : int
        Buffered values (scalars + layer values) that trigger a flush.
    """

    def __init__(self, path: str | Path, *, enabled: bool = True, flush_every: float | None = 0.5,
                 max_buffer: int = 200_000):
        self.path, self.enabled = Path(path), bool(enabled)
        self.flush_every, self.max_buffer = flush_every, int(max_buffer)
        self._lock = threading.RLock()
        self._scalars: list[tuple] = []
        self._layers: list[tuple] = []
        self._new_names: list[tuple] = []
        self._new_index: list[tuple] = []
        self._buffered = 0
        self._last_flush = time.monotonic()
        self._conn = None
        if not self.enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=10)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version not in (0, SCHEMA_VERSION):
                raise ValueError(f"store {str(self.path)!r} has schema version {version}; this fnodiag writes "
                                 f"version {SCHEMA_VERSION}; write the run into a new directory")
            conn.executescript(f"BEGIN; {_SCHEMA} PRAGMA user_version={SCHEMA_VERSION}; COMMIT;")
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise ValueError(f"{str(self.path)!r} is not a usable run store ({exc}); delete it or pick another path") from None
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        self._ids = {(k, t): i for i, k, t in conn.execute("SELECT id, kind, text FROM names")}
        self._next_id = max(self._ids.values(), default=0) + 1
        self._index = set(conn.execute("SELECT source_id, stat_id, layer_id FROM layer_index"))

    def __enter__(self) -> "RunStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        """True after :meth:`close` (always False for a disabled store)."""
        return self.enabled and self._conn is None

    def _id(self, kind: str, text: str) -> int:
        key = (kind, text)
        i = self._ids.get(key)
        if i is None:
            if not isinstance(text, str) or not text:
                raise ValueError(f"{kind} name {text!r} must be a non-empty string")
            i = self._ids[key] = self._next_id
            self._next_id += 1
            self._new_names.append((i, kind, text))
        return i

    def _check_open(self) -> None:
        if self._conn is None:
            raise RuntimeError(f"RunStore for {str(self.path)!r} is closed; open a new RunStore to append")

    def log_scalars(self, step: int, epoch: int, values: Mapping[str, float], *, scope: str = "step") -> None:
        """Append scalars ``{name: value}`` (e.g. 'train/loss', 'lr', 'grad/norm_preclip') at ``step``.

        ``scope`` is 'step' (per optimizer step) or 'epoch' (per-epoch aggregates).
        """
        if not self.enabled:
            return
        if scope not in SCOPES:
            raise ValueError(f"scalar scope {scope!r} is not valid; choose one of {', '.join(SCOPES)}")
        step, epoch, wall, code = operator.index(step), operator.index(epoch), time.time(), SCOPES.index(scope)
        with self._lock:
            self._check_open()
            self._scalars.extend((step, epoch, code, self._id("scalar", n), float(v), wall) for n, v in values.items())
            self._buffered += len(values)
            self._maybe_flush()

    def log_layer_stats(self, step: int, epoch: int, source: str, values: Mapping[tuple[str, str], float]) -> None:
        """Append per-layer statistics ``{(layer, stat): value}`` from ``source`` at ``step``.

        ``source`` is one of :data:`SOURCES` ('activation', 'grad', 'param').
        """
        if not self.enabled:
            return
        if source not in SOURCES:
            raise ValueError(f"layer-stat source {source!r} is not valid; choose one of {', '.join(SOURCES)}")
        step, epoch = operator.index(step), operator.index(epoch)
        with self._lock:
            self._check_open()
            src = self._id("source", source)
            by_stat: dict[int, tuple[list, list]] = {}
            for (layer, stat), v in values.items():
                ids, vals = by_stat.setdefault(self._id("stat", stat), ([], []))
                ids.append(self._id("layer", layer))
                vals.append(float(v))
            for st, (ids, vals) in by_stat.items():
                self._layers.append((step, epoch, src, st, np.asarray(ids, "<i4").tobytes(),
                                     np.asarray(vals, "<f8").tobytes()))
                for lid in ids:
                    if (src, st, lid) not in self._index:
                        self._index.add((src, st, lid))
                        self._new_index.append((src, st, lid))
            self._buffered += len(values)
            self._maybe_flush()

    def _maybe_flush(self) -> None:
        if self._buffered >= self.max_buffer or (
                self.flush_every is not None and time.monotonic() - self._last_flush >= self.flush_every):
            self.flush()

    def flush(self) -> None:
        """Commit everything buffered in one transaction (a reader sees all of it or none)."""
        if not self.enabled:
            return
        with self._lock:
            self._check_open()
            self._last_flush = time.monotonic()
            if not (self._scalars or self._layers or self._new_names):
                return
            c = self._conn
            c.execute("BEGIN IMMEDIATE")
            try:
                c.executemany("INSERT INTO names(id, kind, text) VALUES (?, ?, ?)", self._new_names)
                c.executemany("INSERT OR IGNORE INTO layer_index VALUES (?, ?, ?)", self._new_index)
                c.executemany("INSERT INTO scalars(step, epoch, scope, name_id, value, wall) VALUES (?, ?, ?, ?, ?, ?)",
                              self._scalars)
                c.executemany("INSERT INTO layer_stats(step, epoch, source_id, stat_id, layer_ids, vals) "
                              "VALUES (?, ?, ?, ?, ?, ?)", self._layers)
                c.execute("COMMIT")
            except BaseException:
                c.execute("ROLLBACK")  # buffers stay intact: the next flush retries them
                raise
            self._scalars, self._layers, self._new_names, self._new_index = [], [], [], []
            self._buffered = 0

    def close(self) -> None:
        """Flush and close the connection; calling it again does nothing."""
        with self._lock:
            if self._conn is None:
                return
            try:
                self.flush()
            finally:
                self._conn.close()
                self._conn = None


# ----------------------------------------------------------------------------- store reader
@dataclass(frozen=True)
class ScalarRecords:
    """Scalar rows, in write order: arrays of shape (ROW,); ``position`` is the last row id seen."""

    step: np.ndarray   # (ROW,) int64
    epoch: np.ndarray  # (ROW,) int64
    value: np.ndarray  # (ROW,) float64, NaN / ±inf preserved
    wall: np.ndarray   # (ROW,) float64 unix time
    name: np.ndarray   # (ROW,) str
    scope: np.ndarray  # (ROW,) str, 'step' | 'epoch'
    position: int

    def __len__(self) -> int:
        return len(self.step)


@dataclass(frozen=True)
class LayerRecords:
    """Per-layer values, in write order: arrays of shape (ROW,); ``position`` is the last row id seen."""

    step: np.ndarray    # (ROW,) int64
    epoch: np.ndarray   # (ROW,) int64
    layer: np.ndarray   # (ROW,) str
    stat: np.ndarray    # (ROW,) str
    source: np.ndarray  # (ROW,) str
    value: np.ndarray   # (ROW,) float64
    position: int

    def __len__(self) -> int:
        return len(self.step)


class LayerMatrix(tuple):
    """``(layers, steps, values)`` pivot from :meth:`StoreReader.layer_matrix`, plus ``.position``."""

    def __new__(cls, layers: list[str], steps: np.ndarray, values: np.ndarray, position: int):
        obj = super().__new__(cls, (layers, steps, values))
        obj.position = position
        return obj

    layers = property(lambda self: self[0], doc="Layer names, list of LAYER str, in first-logged order.")
    steps = property(lambda self: self[1], doc="(STEP,) int64, sorted.")
    values = property(lambda self: self[2], doc="(LAYER, STEP) float64; NaN where nothing was logged.")


_EMPTY_I, _EMPTY_F, _EMPTY_S = np.zeros(0, np.int64), np.zeros(0, np.float64), np.zeros(0, dtype="<U1")


class StoreReader:
    """Read-only view of a ``run.sqlite`` that another process may be writing.

    Every query sees the rows committed so far; pass a result's ``position`` back as ``after``
    to fetch only newer rows (a live tail).

    Parameters
    ----------
    path : str or Path
        The store file; it must exist (the writer creates it when training starts).
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"run store {str(self.path)!r} does not exist; start training for this run "
                                    "or check the run directory path")
        uri = f"file:{urllib.parse.quote(str(self.path.resolve()))}?mode=ro"
        self._conn = sqlite3.connect(uri, uri=True, check_same_thread=False, timeout=10)
        self._lock = threading.RLock()
        self._ready = False
        self._names: dict[int, tuple[str, str]] = {}
        self._ids: dict[tuple[str, str], int] = {}

    def __enter__(self) -> "StoreReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection."""
        self._conn.close()

    def _query(self, sql: str, args=()) -> list[tuple]:
        with self._lock:
            if not self._ready:  # the writer may not have committed the schema yet
                version = self._conn.execute("PRAGMA user_version").fetchone()[0]
                if version == 0:
                    return []
                if version != SCHEMA_VERSION:
                    raise ValueError(f"store {str(self.path)!r} has schema version {version}; this fnodiag reads "
                                     f"version {SCHEMA_VERSION}; upgrade fnodiag")
                self._ready = True
            return self._conn.execute(sql, args).fetchall()

    def _refresh(self) -> None:
        last = max(self._names, default=0)
        for i, kind, text in self._query("SELECT id, kind, text FROM names WHERE id > ?", (last,)):
            self._names[i], self._ids[(kind, text)] = (kind, text), i

    def _lookup(self, kind: str, text: str | None) -> int | None:
        """Id of a name, None for 'any' (text None), -1 when not logged yet."""
        if text is None:
            return None
        if (kind, text) not in self._ids:
            self._refresh()
        return self._ids.get((kind, text), -1)

    def _texts(self, ids: np.ndarray) -> np.ndarray:
        if len(ids) == 0:
            return _EMPTY_S
        uniq, inverse = np.unique(ids, return_inverse=True)
        if any(int(u) not in self._names for u in uniq):
            self._refresh()
        return np.array([self._names[int(u)][1] for u in uniq])[inverse]

    def _kind(self, kind: str, sql: str = "SELECT id FROM names WHERE kind = ? ORDER BY id", args=None) -> list[str]:
        self._refresh()
        return [self._names[i][1] for (i,) in self._query(sql, args or (kind,))]

    def scalar_names(self) -> list[str]:
        """Names of the logged scalars, in first-logged order."""
        return self._kind("scalar")

    def layers(self, source: str | None = None) -> list[str]:
        """Layer names (of ``source``, or of any), in first-logged order."""
        if source is None:
            return self._kind("layer")
        return self._kind("layer", "SELECT DISTINCT layer_id FROM layer_index WHERE source_id = ? ORDER BY layer_id",
                          (self._lookup("source", source),))

    def stats(self, source: str | None = None) -> list[str]:
        """Statistic names (of ``source``, or of any), in first-logged order."""
        if source is None:
            return self._kind("stat")
        return self._kind("stat", "SELECT DISTINCT stat_id FROM layer_index WHERE source_id = ? ORDER BY stat_id",
                          (self._lookup("source", source),))

    def last_step(self) -> int | None:
        """Step of the most recently written row (scalar or layer stat); None for an empty store."""
        rows = [r for t in ("scalars", "layer_stats")
                for r in self._query(f"SELECT step FROM {t} ORDER BY id DESC LIMIT 1")]
        return max((r[0] for r in rows), default=None)

    def scalars(self, name: str | None = None, *, after: int = 0, scope: str | None = None) -> ScalarRecords:
        """Scalar rows with id > ``after`` (of one ``name`` / ``scope`` when given), in write order."""
        if scope is not None and scope not in SCOPES:
            raise ValueError(f"scalar scope {scope!r} is not valid; choose one of {', '.join(SCOPES)} or None")
        where, args = ["id > ?"], [int(after)]
        if name is not None:
            where.append("name_id = ?"); args.append(self._lookup("scalar", name))
        if scope is not None:
            where.append("scope = ?"); args.append(SCOPES.index(scope))
        rows = self._query(f"SELECT id, step, epoch, scope, name_id, value, wall FROM scalars "
                           f"WHERE {' AND '.join(where)} ORDER BY id", args)
        if not rows:
            return ScalarRecords(_EMPTY_I, _EMPTY_I, _EMPTY_F, _EMPTY_F, _EMPTY_S, _EMPTY_S, int(after))
        a = np.array(rows, dtype=np.float64)  # NULL (stored NaN) -> nan
        ints = a[:, :5].astype(np.int64)
        return ScalarRecords(ints[:, 1], ints[:, 2], a[:, 5], a[:, 6], self._texts(ints[:, 4]),
                             np.array(SCOPES)[ints[:, 3]], int(ints[-1, 0]))

    def _layer_rows(self, source, stat, after) -> tuple[list[tuple], int]:
        where, args = ["id > ?"], [int(after)]
        for kind, text in (("stat", stat), ("source", source)):
            if text is not None:
                where.append(f"{kind}_id = ?"); args.append(self._lookup(kind, text))
        rows = self._query(f"SELECT id, step, epoch, source_id, stat_id, layer_ids, vals FROM layer_stats "
                           f"WHERE {' AND '.join(where)} ORDER BY id", args)
        return rows, (rows[-1][0] if rows else int(after))

    @staticmethod
    def _unpack(rows: list[tuple]):
        counts = np.fromiter((len(r[5]) // 4 for r in rows), np.int64, len(rows))
        head = np.array([r[:5] for r in rows], dtype=np.int64).reshape(-1, 5)
        layer = np.frombuffer(b"".join(r[5] for r in rows), "<i4").astype(np.int64)
        value = np.frombuffer(b"".join(r[6] for r in rows), "<f8").copy()
        return np.repeat(head, counts, axis=0), layer, value

    def layer_stats(self, *, source: str | None = None, stat: str | None = None, layer: str | None = None,
                    after: int = 0) -> LayerRecords:
        """Per-layer values from rows with id > ``after``, filtered by source / stat / layer when given."""
        rows, position = self._layer_rows(source, stat, after)
        head, layer_ids, value = self._unpack(rows)
        if layer is not None:
            keep = layer_ids == self._lookup("layer", layer)
            head, layer_ids, value = head[keep], layer_ids[keep], value[keep]
        if len(value) == 0:
            return LayerRecords(_EMPTY_I, _EMPTY_I, _EMPTY_S, _EMPTY_S, _EMPTY_S, _EMPTY_F, position)
        return LayerRecords(head[:, 1], head[:, 2], self._texts(layer_ids), self._texts(head[:, 4]),
                            self._texts(head[:, 3]), value, position)

    def layer_matrix(self, source: str, stat: str, after: int = 0) -> LayerMatrix:
        """Heatmap pivot of one (source, stat) over rows with id > ``after``.

        Returns
        -------
        LayerMatrix
            ``(layers, steps, values)``: list of LAYER names in first-logged order, steps (STEP,) int64
            sorted, values (LAYER, STEP) float64 with NaN where nothing was logged (the last write
            wins for a repeated step); ``.position`` to pass back as ``after``.
        """
        rows, position = self._layer_rows(source, stat, after)
        if not rows:
            return LayerMatrix([], _EMPTY_I, np.zeros((0, 0)), position)
        head, layer_ids, value = self._unpack(rows)
        steps, col = np.unique(head[:, 1], return_inverse=True)
        lids, row = np.unique(layer_ids, return_inverse=True)
        if len(steps) != len(rows):  # a step written twice (e.g. after a resume): keep the last write
            key = row * len(steps) + col
            _, first_from_end = np.unique(key[::-1], return_index=True)
            keep = len(key) - 1 - first_from_end
            row, col, value = row[keep], col[keep], value[keep]
        values = np.full((len(lids), len(steps)), np.nan)
        values[row, col] = value
        return LayerMatrix(self._texts(lids).tolist(), steps, values, position)
