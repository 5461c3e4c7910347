"""The read-only run-store reader: numpy records and a position to tail a store another process writes."""

from __future__ import annotations

import sqlite3
import threading
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fnodiag.runs.damage import DamagedRecord
from fnodiag.runs.frames import decode
from fnodiag.runs.names import TRAIN_LOSS
from fnodiag.runs.store import READABLE_VERSIONS, SCHEMA_VERSION, SCOPES, TRUTH_STEP


@dataclass(frozen=True)
class ScalarRecords:
    """Scalar rows, in write order: arrays of shape (ROW,); ``position`` is the last row id seen."""

    step: np.ndarray  # (ROW,) int64
    epoch: np.ndarray  # (ROW,) int64
    value: np.ndarray  # (ROW,) float64, NaN / ±inf preserved
    wall: np.ndarray  # (ROW,) float64 unix time
    name: np.ndarray  # (ROW,) object array of str
    scope: np.ndarray  # (ROW,) object array of str, 'step' | 'epoch'
    position: int

    def __len__(self) -> int:
        return len(self.step)


@dataclass(frozen=True)
class LayerRecords:
    """Per-layer values, in write order: arrays of shape (ROW,); ``position`` is the last row id seen."""

    step: np.ndarray  # (ROW,) int64
    epoch: np.ndarray  # (ROW,) int64
    layer: np.ndarray  # (ROW,) object array of str
    stat: np.ndarray  # (ROW,) object array of str
    source: np.ndarray  # (ROW,) object array of str
    value: np.ndarray  # (ROW,) float64
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


_NO_IMAGES = np.zeros((0, 0, 0, 0), np.float32)


@dataclass(frozen=True)
class FrameRecords:
    """Live images of the probe batch, by step; ``position`` is the last row id seen.

    ``channels`` maps each image name to its decoded values (within 1/255 of each image's range):
    ``amp`` and ``phase`` for fnodiag's own reconstructions, the names a watched model's
    ``frames=`` function returned otherwise. All channels of a step are committed in one
    transaction (:meth:`RunStore.log_frame`); a step is listed when it holds every channel read.
    """

    step: np.ndarray  # (FRAME,) int64, sorted
    epoch: np.ndarray  # (FRAME,) int64
    channels: dict  # name -> (FRAME, P, H, W) float32, in first-written order
    position: int

    def __len__(self) -> int:
        return len(self.step)

    @property
    def names(self) -> list[str]:
        """The channel names, in first-written order."""
        return list(self.channels)

    @property
    def amp(self) -> np.ndarray:
        """(FRAME, P, H, W) float32 amplitude of fnodiag's reconstructions (empty when not recorded)."""
        return self.channels.get("amp", _NO_IMAGES)

    @property
    def phase(self) -> np.ndarray:
        """(FRAME, P, H, W) float32 phase of fnodiag's reconstructions (empty when not recorded)."""
        return self.channels.get("phase", _NO_IMAGES)


_EMPTY_I, _EMPTY_F, _EMPTY_S = np.zeros(0, np.int64), np.zeros(0, np.float64), np.zeros(0, dtype=object)


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
            raise FileNotFoundError(
                f"run store {str(self.path)!r} does not exist; start training for this run "
                "or check the run directory path"
            )
        uri = f"file:{urllib.parse.quote(str(self.path.resolve()))}?mode=ro"
        self._conn = sqlite3.connect(uri, uri=True, check_same_thread=False, timeout=10)
        self._lock = threading.RLock()
        self._ready = False
        self._version = 0
        self._names: dict[int, tuple[str, str]] = {}
        self._ids: dict[tuple[str, str], int] = {}

    def __enter__(self) -> StoreReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection."""
        self._conn.close()

    def _query(self, sql: str, args=()) -> list[tuple]:
        with self._lock:
            try:
                if not self._ready:  # the writer may not have committed the schema yet
                    version = self._conn.execute("PRAGMA user_version").fetchone()[0]
                    if version == 0:
                        return []
                    if version not in READABLE_VERSIONS:
                        raise ValueError(
                            f"store {str(self.path)!r} has schema version {version}; this fnodiag reads "
                            f"versions up to {SCHEMA_VERSION}; upgrade fnodiag"
                        )
                    self._ready = True
                    self._version = version
                return self._conn.execute(sql, args).fetchall()
            except sqlite3.OperationalError:  # locked, busy, a missing table: not damage
                raise
            except sqlite3.DatabaseError as exc:  # "database disk image is malformed", "file is not a database"
                raise DamagedRecord(
                    f"run store {str(self.path)!r} is damaged ({exc}); restore it, or remove it to keep the run's "
                    "other records without its per-step ones",
                    self.path,
                ) from None

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
        """Names of integer ids, (ROW,) object array of str (one shared str per name: cheap for big results)."""
        if len(ids) == 0:
            return _EMPTY_S
        if int(ids.max()) > max(self._names, default=0):  # ids grow; a name commits with its first row
            self._refresh()
        lut = np.empty(max(self._names) + 1, dtype=object)
        for i, (_, text) in self._names.items():
            lut[i] = text
        return lut[ids]

    def _kind(self, kind: str, sql: str = "SELECT id FROM names WHERE kind = ? ORDER BY id", args=None) -> list[str]:
        self._refresh()
        return [self._names[i][1] for (i,) in self._query(sql, args or (kind,))]

    def scalar_names(self) -> list[str]:
        """Names of the logged scalars, in first-logged order."""
        return self._kind("scalar")

    def layers(self, source: str | None = None) -> list[str]:
        """Layer names (of ``source``, or of any), in the order any source first logged them.

        :meth:`layer_matrix` gives one source's layers in that source's own logging order.
        """
        if source is None:
            return self._kind("layer")
        return self._kind(
            "layer",
            "SELECT DISTINCT layer_id FROM layer_index WHERE source_id = ? ORDER BY layer_id",
            (self._lookup("source", source),),
        )

    def stats(self, source: str | None = None) -> list[str]:
        """Statistic names (of ``source``, or of any), in first-logged order."""
        if source is None:
            return self._kind("stat")
        return self._kind(
            "stat",
            "SELECT DISTINCT stat_id FROM layer_index WHERE source_id = ? ORDER BY stat_id",
            (self._lookup("source", source),),
        )

    def last_step(self) -> int | None:
        """Step of the most recently written row (scalar or layer stat); None for an empty store."""
        rows = [
            r for t in ("scalars", "layer_stats") for r in self._query(f"SELECT step FROM {t} ORDER BY id DESC LIMIT 1")
        ]
        return max((r[0] for r in rows), default=None)

    def step_walls(self, name: str = TRAIN_LOSS, *, last: int = 200) -> tuple[np.ndarray, np.ndarray]:
        """``(steps, walls)`` of the last ``last`` per-step rows of ``name``, oldest first, (ROW,) int64 / float64."""
        rows = self._query(
            "SELECT step, wall FROM (SELECT id, step, wall FROM scalars WHERE name_id = ? AND scope = 0 "
            "ORDER BY id DESC LIMIT ?) ORDER BY id",
            (self._lookup("scalar", name), int(last)),
        )
        if not rows:
            return _EMPTY_I, _EMPTY_F
        a = np.array(rows, dtype=np.float64)
        return a[:, 0].astype(np.int64), a[:, 1]

    def first_wall(self, name: str = TRAIN_LOSS) -> float | None:
        """Unix time of the first per-step row of ``name`` (when training started); None before one."""
        rows = self._query(
            "SELECT wall FROM scalars WHERE name_id = ? AND scope = 0 ORDER BY id LIMIT 1",
            (self._lookup("scalar", name),),
        )
        return float(rows[0][0]) if rows and rows[0][0] is not None else None

    def scalars(self, name: str | None = None, *, after: int = 0, scope: str | None = None) -> ScalarRecords:
        """Scalar rows with id > ``after`` (of one ``name`` / ``scope`` when given), in write order."""
        if scope is not None and scope not in SCOPES:
            raise ValueError(f"scalar scope {scope!r} is not valid; choose one of {', '.join(SCOPES)} or None")
        where, args = ["id > ?"], [int(after)]
        if name is not None:
            where.append("name_id = ?")
            args.append(self._lookup("scalar", name))
        if scope is not None:
            where.append("scope = ?")
            args.append(SCOPES.index(scope))
        rows = self._query(
            f"SELECT id, step, epoch, scope, name_id, value, wall FROM scalars WHERE {' AND '.join(where)} ORDER BY id",
            args,
        )
        if not rows:
            return ScalarRecords(_EMPTY_I, _EMPTY_I, _EMPTY_F, _EMPTY_F, _EMPTY_S, _EMPTY_S, int(after))
        a = np.array(rows, dtype=np.float64)  # NULL (stored NaN) -> nan
        ints = a[:, :5].astype(np.int64)
        return ScalarRecords(
            ints[:, 1],
            ints[:, 2],
            a[:, 5],
            a[:, 6],
            self._texts(ints[:, 4]),
            np.array(SCOPES, dtype=object)[ints[:, 3]],
            int(ints[-1, 0]),
        )

    def _layer_rows(self, source, stat, after) -> tuple[list[tuple], int]:
        where, args = ["id > ?"], [int(after)]
        for kind, text in (("stat", stat), ("source", source)):
            if text is not None:
                where.append(f"{kind}_id = ?")
                args.append(self._lookup(kind, text))
        rows = self._query(
            f"SELECT id, step, epoch, source_id, stat_id, layer_ids, vals FROM layer_stats "
            f"WHERE {' AND '.join(where)} ORDER BY id",
            args,
        )
        return rows, (rows[-1][0] if rows else int(after))

    @staticmethod
    def _unpack(rows: list[tuple]):
        """Expand packed rows to per-value columns: step, epoch, source_id, stat_id, layer_id, value (ROW,)."""
        counts = np.fromiter((len(r[5]) // 4 for r in rows), np.int64, len(rows))
        head = np.array([r[1:5] for r in rows], dtype=np.int64).reshape(-1, 4)
        cols = [np.repeat(head[:, k], counts) for k in range(4)]
        layer = np.frombuffer(b"".join(r[5] for r in rows), "<i4").astype(np.int64)
        value = np.frombuffer(b"".join(r[6] for r in rows), "<f8").copy()
        return (*cols, layer, value)

    def layer_stats(
        self, *, source: str | None = None, stat: str | None = None, layer: str | None = None, after: int = 0
    ) -> LayerRecords:
        """Per-layer values from rows with id > ``after``, filtered by source / stat / layer when given."""
        rows, position = self._layer_rows(source, stat, after)
        step, epoch, source_id, stat_id, layer_id, value = cols = self._unpack(rows)
        if layer is not None:
            keep = layer_id == self._lookup("layer", layer)
            step, epoch, source_id, stat_id, layer_id, value = (c[keep] for c in cols)
        if len(value) == 0:
            return LayerRecords(_EMPTY_I, _EMPTY_I, _EMPTY_S, _EMPTY_S, _EMPTY_S, _EMPTY_F, position)
        return LayerRecords(
            step, epoch, self._texts(layer_id), self._texts(stat_id), self._texts(source_id), value, position
        )

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
        step, _, _, _, layer_ids, value = self._unpack(rows)
        steps, col = np.unique(step, return_inverse=True)
        lids, first, row = np.unique(layer_ids, return_index=True, return_inverse=True)
        order = np.argsort(first, kind="stable")  # as this source logged them (name ids are shared by sources)
        rank = np.empty_like(order)
        rank[order] = np.arange(len(order))
        lids, row = lids[order], rank[row]
        if len(steps) != len(rows):  # a step written twice (e.g. after a resume): keep the last write
            key = row * len(steps) + col
            _, first_from_end = np.unique(key[::-1], return_index=True)
            keep = len(key) - 1 - first_from_end
            row, col, value = row[keep], col[keep], value[keep]
        values = np.full((len(lids), len(steps)), np.nan)
        values[row, col] = value
        return LayerMatrix(self._texts(lids).tolist(), steps, values, position)

    # -- reconstruction frames (schema version 2) -------------------------------------------------
    def _has_frames(self) -> bool:
        if not self._query("SELECT 1"):  # the writer has not committed the schema yet
            return False
        if self._version >= 2:
            return True
        # a version-1 store written before frames existed, perhaps upgraded by a writer since
        return bool(self._query("SELECT 1 FROM sqlite_master WHERE name = 'frames'"))

    def frame_steps(self) -> np.ndarray:
        """Steps that have a predicted frame, (FRAME,) int64 sorted (cheap: no image data read)."""
        if not self._has_frames():
            return _EMPTY_I
        rows = self._query("SELECT DISTINCT step FROM frames WHERE role = 'pred' ORDER BY step")
        return np.array([r[0] for r in rows], dtype=np.int64)

    def frames(self, *, after: int = 0, steps=None) -> FrameRecords:
        """Predicted frames (every channel, by name) from rows with id > ``after`` (only ``steps`` when given), by step.

        Parameters
        ----------
        after : int
            A previous result's ``position``: only frames written since (a live tail).
        steps : sequence of int, optional
            Read only these steps (e.g. a strip across the run) instead of every frame.
        """
        if not self._has_frames():
            return FrameRecords(_EMPTY_I, _EMPTY_I, {}, int(after))
        where, args = "id > ? AND role = 'pred'", [int(after)]
        if steps is not None:
            steps = [int(s) for s in steps]
            where += f" AND step IN ({', '.join('?' * len(steps))})" if steps else " AND 0"
            args += steps
        rows = self._query(
            f"SELECT id, step, epoch, channel, p, h, w, lo, hi, data FROM frames WHERE {where} ORDER BY id", args
        )
        by_step: dict[int, dict] = {}
        names: dict[str, None] = {}
        for _, step, epoch, channel, p, h, w, lo, hi, data in rows:
            d = by_step.setdefault(step, {"epoch": epoch})
            d[channel] = decode(data, np.frombuffer(lo, "<f8"), np.frombuffer(hi, "<f8"), (p, h, w))
            names[channel] = None
        done = sorted(s for s, d in by_step.items() if all(n in d for n in names))
        position = rows[-1][0] if rows else int(after)
        if not done:
            return FrameRecords(_EMPTY_I, _EMPTY_I, {}, position)
        return FrameRecords(
            np.array(done, np.int64),
            np.array([by_step[s]["epoch"] for s in done], np.int64),
            {n: np.stack([by_step[s][n] for s in done]) for n in names},
            position,
        )

    def frame_truth(self) -> tuple[np.ndarray, np.ndarray] | None:
        """Ground truth of the probe patches ``(amp, phase)``, each (P, H, W) float32; None when not written."""
        if not self._has_frames():
            return None
        rows = self._query(
            "SELECT channel, p, h, w, lo, hi, data FROM frames WHERE role = 'truth' AND step = ?", (TRUTH_STEP,)
        )
        got = {
            c: decode(data, np.frombuffer(lo, "<f8"), np.frombuffer(hi, "<f8"), (p, h, w))
            for c, p, h, w, lo, hi, data in rows
        }
        return (got["amp"], got["phase"]) if "amp" in got and "phase" in got else None
