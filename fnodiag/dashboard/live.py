"""Live plumbing: tail a run store, render HoloViews elements once, stream only new points into Bokeh.

A :class:`LiveFigure` renders a :mod:`fnodiag.plots.layers` element with HoloViews' Bokeh renderer and
keeps the ``ColumnDataSource`` of every glyph by the element's label. A tick appends new rows with
``ColumnDataSource.stream`` (only the new points travel to the browser) and widens the axis and
colour ranges; HoloViews' own per-frame update is skipped because it costs ~15 ms per plot in
Python, which many plots and sessions cannot afford every few hundred milliseconds. Figures draw on a 2-D
canvas, not WebGL: without a GPU (software GL) copying the WebGL layer to the page took half the
browser's main thread on every repaint of a live page and starved it of frames.

A :class:`Tail` owns one read-only :class:`~fnodiag.runs.StoreReader` per run and the position of
every series it has read, so each query after the first returns only newer rows. Readers of a WAL
store never block the training process that writes it.
"""

from __future__ import annotations

import holoviews as hv
import numpy as np
from bokeh.models import ColorMapper, Range1d

from fnodiag.plots.layers import bin_steps, heatmap_frame
from fnodiag.runs import LayerMatrix, RunDir, StoreReader
from fnodiag.runs.damage import DamagedRecord

_EMPTY = (np.zeros(0, np.int64), np.zeros(0))


class Tail:
    """Incremental reads of one run's store (created lazily: the store appears when training starts).

    A damaged store (:class:`~fnodiag.runs.damage.DamagedRecord`) reads as empty from then on, with
    ``damage`` saying why: that run's plots stay empty while the other runs' go on.
    """

    def __init__(self, run: RunDir):
        self.run = run
        self._reader: StoreReader | None = None
        self._pos: dict[tuple, int] = {}
        self.damage: str | None = None

    @property
    def reader(self) -> StoreReader | None:
        if self._reader is None and self.damage is None and self.run.store_path.is_file():
            self._reader = StoreReader(self.run.store_path)
        return self._reader

    def _damaged(self, exc: DamagedRecord) -> None:
        self.damage = str(exc)
        self.close()

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    def matrix(self, source: str, stat: str, *, new: bool = False) -> LayerMatrix:
        """All rows (``new=False``, resets the position) or only rows written since the last call."""
        key = ("layer", source, stat)
        if self.reader is None:
            return LayerMatrix([], _EMPTY[0], np.zeros((0, 0)), 0)
        try:
            m = self.reader.layer_matrix(source, stat, after=self._pos.get(key, 0) if new else 0)
        except DamagedRecord as exc:
            self._damaged(exc)
            return LayerMatrix([], _EMPTY[0], np.zeros((0, 0)), 0)
        self._pos[key] = m.position
        return m

    def scalar(self, name: str, *, scope: str | None = None, new: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """``(steps (ROW,), values (ROW,))`` of one scalar: all of it, or only rows since the last call."""
        key = ("scalar", name, scope)
        if self.reader is None:
            return _EMPTY
        try:
            r = self.reader.scalars(name, after=self._pos.get(key, 0) if new else 0, scope=scope)
        except DamagedRecord as exc:
            self._damaged(exc)
            return _EMPTY
        self._pos[key] = r.position
        return r.step, r.value


def _leaves(plot):
    subs = getattr(plot, "subplots", None)
    if subs:
        for sp in subs.values():
            if sp is not None:
                yield from _leaves(sp)
    elif "cds" in getattr(plot, "handles", {}):
        yield plot


class LiveFigure:
    """A Bokeh figure rendered from a HoloViews element, with streaming by glyph label.

    Parameters
    ----------
    element : hv.Element or hv.Overlay
    doc : bokeh Document, optional
        The session's document (``pn.state.curdoc``).
    log_y : bool
        The y axis is logarithmic: non-positive values are not streamed.
    """

    def __init__(self, element, *, doc=None, log_y: bool = False):
        renderer = hv.renderer("bokeh").instance(webgl=False)  # canvas: see the module notes
        self.plot = renderer.get_plot(element, doc=doc)
        self.figure = self.plot.state
        self.log_y = log_y
        self.sources: dict[tuple[str, str], object] = {}
        for leaf in _leaves(self.plot):
            frame = leaf.current_frame
            self.sources.setdefault((type(frame).__name__, frame.label), leaf.handles["cds"])
        self.mappers = list(self.figure.select(type=ColorMapper))
        self.points_sent = 0

    @classmethod
    def of_figure(cls, figure, sources: dict, *, log_y: bool = False) -> LiveFigure:
        """A LiveFigure over a Bokeh ``figure`` built directly (:mod:`fnodiag.dashboard.figures`), with its
        ``{(glyph kind, label): ColumnDataSource}``."""
        live = cls.__new__(cls)
        live.plot, live.figure, live.log_y, live.sources = None, figure, log_y, dict(sources)
        live.mappers = list(figure.select(type=ColorMapper))
        live.points_sent = 0
        return live

    def source(self, label: str, kind: str = "Curve"):
        return self.sources.get((kind, label))

    def stream_xy(self, label: str, steps, values, *, kinds=("Curve", "Scatter")) -> int:
        """Append points to every glyph labelled ``label``; returns how many points were sent."""
        s, v = np.asarray(steps, dtype=np.float64), np.asarray(values, dtype=np.float64)
        keep = np.isfinite(v) & ((v > 0) if self.log_y else True)
        s, v = s[keep], v[keep]
        if not len(s):
            return 0
        sent = 0
        for kind in kinds:
            cds = self.source(label, kind)
            if cds is not None:
                cols = list(cds.data)
                cds.stream({c: (s if c == cols[0] else v) for c in cols})
                sent += len(s)
        if sent:
            self._extend(s, v)
        self.points_sent += sent
        return sent

    def stream_rects(self, frame, label: str = "") -> int:
        """Append heatmap rectangles (a :func:`fnodiag.plots.layers.heatmap_frame`) to the Rectangles glyph."""
        cds = self.source(label, "Rectangles")
        if cds is None or not len(frame):
            return 0
        alias = {"left": "x0", "right": "x1", "bottom": "y0", "top": "y1", "color": "value"}
        cds.stream({c: frame[alias.get(c, c)].to_numpy() for c in cds.data})
        self._extend(frame["x1"].to_numpy(), None)
        values = frame["value"].to_numpy()
        for mapper in self.mappers:
            fin = values[np.isfinite(values) & ((values > 0) if "Log" in type(mapper).__name__ else True)]
            if len(fin):
                if mapper.low is None or fin.min() < mapper.low:
                    mapper.low = float(fin.min())
                if mapper.high is None or fin.max() > mapper.high:
                    mapper.high = float(fin.max())
        self.points_sent += len(frame)
        return len(frame)

    def _extend(self, x, y) -> None:
        """Widen the ranges to new data (the x axis only when it was showing the latest data)."""
        xr, yr = self.figure.x_range, self.figure.y_range
        if isinstance(xr, Range1d) and len(x) and xr.end is not None and x.max() > xr.end:
            xr.end = float(x.max())
        if y is not None and isinstance(yr, Range1d) and len(y):
            lo, hi = float(np.min(y)), float(np.max(y))
            if yr.start is None or lo < yr.start:
                yr.start = lo * 0.9 if self.log_y else lo - 0.05 * abs(hi - lo)
            if yr.end is None or hi > yr.end:
                yr.end = hi * 1.1 if self.log_y else hi + 0.05 * abs(hi - lo)


class LiveLayers:
    """Heatmap + per-layer lines of one run's (source, stat), fed by one incremental read per tick.

    ``stride`` (from the opening's downsampling) is kept: new steps are binned the same way, so a
    heatmap column is emitted once ``stride`` new steps have arrived (lines get every new point).
    ``columns`` and ``points`` count the heatmap columns and the points per line drawn so far.
    """

    def __init__(
        self,
        tail: Tail,
        source: str,
        stat: str,
        layers: list[str],
        steps,
        stride: int,
        heatmap: LiveFigure | None,
        lines: LiveFigure | None,
    ):
        self.tail, self.source, self.stat = tail, source, stat
        self.layers, self.stride = list(layers), max(1, int(stride))
        self.index = {name: i for i, name in enumerate(self.layers)}
        self.heatmap, self.lines = heatmap, lines
        steps = np.asarray(steps)
        self.right = float(steps[-1]) + 0.5 if len(steps) else None
        self.columns = len(steps)
        first = next(iter(lines.sources.values()), None) if lines is not None else None
        self.points = len(next(iter(first.data.values()), [])) if first is not None else 0
        self._pending_steps: list[np.ndarray] = []
        self._pending_values: list[np.ndarray] = []

    def tick(self) -> int:
        """Read rows written since the last tick and stream them; returns points sent."""
        m = self.tail.matrix(self.source, self.stat, new=True)
        if not len(m.steps):
            return 0
        values = np.full((len(self.layers), len(m.steps)), np.nan)
        for j, name in enumerate(m.layers):
            if name in self.index:
                values[self.index[name]] = m.values[j]
        sent = 0
        self.points += len(m.steps)
        if self.lines is not None:
            for name, i in self.index.items():
                sent += self.lines.stream_xy(name, m.steps, values[i], kinds=("Curve",))
        if self.heatmap is not None:
            sent += self._heat(m.steps, values)
        return sent

    def _heat(self, steps, values) -> int:
        self._pending_steps.append(np.asarray(steps))
        self._pending_values.append(values)
        steps, values = np.concatenate(self._pending_steps), np.concatenate(self._pending_values, axis=1)
        s, v, used = bin_steps(steps, values, self.stride, partial=False)  # the static heatmap's binning, full bins
        self._pending_steps, self._pending_values = [steps[used:]], [values[:, used:]]
        if not len(s):
            return 0
        frame = heatmap_frame(self.layers, s, v, start=self.right)
        self.right = float(s[-1]) + 0.5
        self.columns += len(s)
        return self.heatmap.stream_rects(frame)
