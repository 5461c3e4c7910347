"""HoloViews plot builders from run records, shared by the dashboard (``app/``) and notebooks.

Every builder is pure: it takes arrays or plain records (what :class:`fnodiag.runs.StoreReader`,
``RunDir.read_history`` / ``read_metrics`` and ``collapse.json`` give) and returns HoloViews
elements; nothing here imports Panel or touches a file.

Layer axes: a layer's row is ``y = -index`` (the first layer in network order on top), labelled by
layer name. Heatmap cells are rectangles ``[x0, x1] x [y - 0.5, y + 0.5]`` over the steps they
summarise, so a live tail appends cells without redrawing the old ones (see
:func:`heatmap_frame` ``start``), and a long run is shown as at most ``max_steps`` columns: each
column is the NaN-mean of ``stride`` consecutive logged steps (:func:`downsample_steps`).

Live plots stream new rows into these same elements once rendered: one mechanism,
``fnodiag.dashboard.live.LiveFigure`` (``ColumnDataSource.stream`` of :func:`heatmap_frame` rows and new points),
binned by :func:`bin_steps` like the static heatmap.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence

import holoviews as hv
import holoviews.plotting.bokeh  # noqa: F401  registers the bokeh options the builders set
import numpy as np
import pandas as pd

if hv.Store.current_backend not in hv.Store.renderers:  # no extension loaded yet: default to bokeh options
    hv.Store.set_current_backend("bokeh")


HEATMAP_COLUMNS = ["x0", "y0", "x1", "y1", "value", "layer", "step"]
PALETTE = hv.Cycle("Category10").values
# Log y axes are labelled at 1-2-5 steps: Bokeh's LogTicker switches to linear ticks when the axis spans
# under two decades, and those crowd together at the top of a log axis.
LOG_TICKS_JS = """
const lo = Math.min(cb_data.start, cb_data.end), hi = Math.max(cb_data.start, cb_data.end);
if (!(lo > 0) || !isFinite(hi) || hi <= lo) return [];
const at = mantissas => {
  const t = [];
  for (let e = Math.floor(Math.log10(lo)); e <= Math.ceil(Math.log10(hi)); e++)
    for (const m of mantissas) {
      const v = Number((m * Math.pow(10, e)).toPrecision(12));
      if (v >= lo && v <= hi) t.push(v);
    }
  return t;
};
let ticks = at([1, 2, 5]);
if (ticks.length > 9) ticks = at([1]);
if (ticks.length < 3) ticks = at([1, 2, 3, 4, 5, 6, 7, 8, 9]);
if (ticks.length < 3) {  // a narrow range: evenly spaced
  let step = Math.pow(10, Math.floor(Math.log10(hi - lo)));
  if ((hi - lo) / step < 3) step /= 2;
  if ((hi - lo) / step > 6) step *= 2;
  ticks = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi; v += step) ticks.push(Number(v.toPrecision(12)));
}
return ticks;
"""
# Their labels: plain numbers (0.0005, 0.02, 1000), not 10^k or 5.000e-4.
LOG_LABEL_JS = "return String(Number(tick.toPrecision(6)));"


def log_ticks(plot, element) -> None:
    """HoloViews hook: 1-2-5 labels on a logarithmic y axis or colour bar (see ``LOG_TICKS_JS``)."""
    from bokeh.models import ColorBar, CustomJSTicker, CustomJSTickFormatter, LogAxis, LogColorMapper

    for model in list(plot.state.yaxis) + list(plot.state.select(type=ColorBar)):
        if isinstance(model, LogAxis) or isinstance(getattr(model, "color_mapper", None), LogColorMapper):
            model.ticker = CustomJSTicker(major_code=LOG_TICKS_JS)
            model.formatter = CustomJSTickFormatter(code=LOG_LABEL_JS)


# A compact legend (15 px an entry): one entry per drawn layer fits beside the plot.
LEGEND = {
    "label_text_font_size": "8pt",
    "glyph_height": 12,
    "label_height": 12,
    "spacing": 3,
    "padding": 4,
    "margin": 4,
}


def bin_steps(steps, values, stride: int, *, partial: bool = True) -> tuple[np.ndarray, np.ndarray, int]:
    """NaN-mean of consecutive groups of ``stride`` steps: the one binning of every heatmap (static and live).

    Parameters
    ----------
    steps : (STEP,) int
    values : (LAYER, STEP) float
    stride : int
        Steps per column (1: nothing binned).
    partial : bool
        Keep a last, incomplete group as a column (a finished plot); False leaves it out (a live
        plot bins it once ``stride`` steps have arrived).

    Returns
    -------
    (steps (COL,) int64, values (LAYER, COL) float64, used int)
        Column ``j`` holds the NaN-mean of steps ``j*stride ... (j+1)*stride - 1`` and is labelled by
        the last of them; ``used`` is how many input steps the columns cover (the rest are pending).
    """
    steps, values = np.asarray(steps, dtype=np.int64), np.asarray(values, dtype=np.float64)
    n, stride = len(steps), max(1, int(stride))
    if stride == 1:
        return steps, values, n
    cols = -(-n // stride) if partial else n // stride
    used = min(cols * stride, n)
    v = np.concatenate([values[:, :used], np.full((values.shape[0], cols * stride - used), np.nan)], axis=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN bin stays NaN
        binned = np.nanmean(v.reshape(values.shape[0], cols, stride), axis=2)
    last = np.minimum(np.arange(1, cols + 1) * stride, n) - 1
    return steps[last], binned, used


def downsample_steps(steps, values, max_steps: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Bin a (LAYER, STEP) matrix to at most ``max_steps`` columns (:func:`bin_steps`).

    Parameters
    ----------
    steps : (STEP,) int
    values : (LAYER, STEP) float
    max_steps : int
        Largest number of columns kept; 0 or less keeps every step.

    Returns
    -------
    (steps (COL,) int64, values (LAYER, COL) float64, stride int)
        Column ``j`` holds the NaN-mean of steps ``j*stride ... (j+1)*stride - 1`` and is labelled
        by the last of them; ``stride`` is 1 when nothing was binned.
    """
    n = len(steps)
    stride = 1 if max_steps <= 0 or n <= max_steps else -(-n // max_steps)
    s, v, _ = bin_steps(steps, values, stride)
    return s, v, stride


def pick_layers(layers: Sequence[str], k: int, *, must: Sequence[str | None] = ()) -> list[int]:
    """Indices of at most ``k`` layers evenly spread over depth, always with the first, the last and ``must``."""
    n = len(layers)
    if n <= k:
        return list(range(n))
    keep = {int(round(i)) for i in np.linspace(0, n - 1, k)}
    keep |= {list(layers).index(m) for m in must if m in layers}
    while len(keep) > max(k, 2 + len(must)):  # drop evenly spread picks nearest the middle first
        spare = sorted(
            keep - {0, n - 1} - {list(layers).index(m) for m in must if m in layers}, key=lambda i: abs(i - n / 2)
        )
        if not spare:
            break
        keep.discard(spare[0])
    return sorted(keep)


def layer_ticks(layers: Sequence[str]) -> list[tuple[int, str]]:
    """y ticks ``[(-index, name)]``: the first layer on top."""
    return [(-i, name) for i, name in enumerate(layers)]


def heatmap_frame(layers: Sequence[str], steps, values, *, start: float | None = None) -> pd.DataFrame:
    """Rectangles of a (LAYER, STEP) matrix, one per finite value.

    Parameters
    ----------
    layers : list of LAYER str
    steps : (STEP,) int, increasing
    values : (LAYER, STEP) float
    start : float, optional
        Left edge of the first column (the previous column's right edge when tailing); default
        half a step before the first step.

    Returns
    -------
    DataFrame with :data:`HEATMAP_COLUMNS`; column ``k`` spans ``[right edge of k-1, steps[k] + 0.5]``.
    """
    steps, values = np.asarray(steps, dtype=np.float64), np.asarray(values, dtype=np.float64)
    if len(steps) == 0 or len(layers) == 0:
        return pd.DataFrame({c: np.zeros(0, dtype=object if c == "layer" else float) for c in HEATMAP_COLUMNS})
    right = steps + 0.5
    left = np.concatenate([[steps[0] - 0.5 if start is None else start], right[:-1]])
    row, col = np.nonzero(np.isfinite(values))
    y = -row.astype(np.float64)
    return pd.DataFrame(
        {
            "x0": left[col],
            "y0": y - 0.5,
            "x1": right[col],
            "y1": y + 0.5,
            "value": values[row, col],
            "layer": np.asarray(layers, dtype=object)[row],
            "step": steps[col],
        }
    )


def color_limits(values, log: bool) -> tuple[float, float]:
    """Colour range of finite values (positive ones for a log scale); (1e-12, 1) or (0, 1) when none."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v) & (v > 0)] if log else v[np.isfinite(v)]
    if len(v) == 0:
        return (1e-12, 1.0) if log else (0.0, 1.0)
    lo, hi = float(v.min()), float(v.max())
    return (lo, hi if hi > lo else lo * 10 if log else lo + 1.0)


def _heatmap_element(data, layers, stat: str, log: bool, clim, title: str) -> hv.Rectangles:
    return hv.Rectangles(data, vdims=["value", "layer", "step"]).opts(
        color="value",
        cmap="viridis",
        cnorm="log" if log else "linear",
        clim=clim,
        colorbar=True,
        line_alpha=0,
        yticks=layer_ticks(layers),
        ylim=(-len(layers) + 0.5, 0.5),
        xlabel="step",
        ylabel="",
        title=title,
        clabel=stat,
        tools=["hover"],
        responsive=True,
        height=max(220, 14 * len(layers) + 80),
        min_width=300,
        hooks=[log_ticks],
    )


def layer_heatmap(
    layers: Sequence[str],
    steps,
    values,
    *,
    stat: str,
    log: bool = False,
    max_steps: int = 400,
    title: str = "",
    collapse: Mapping | None = None,
) -> hv.Overlay:
    """Per-layer x step heatmap of one statistic, with collapse marks.

    Parameters
    ----------
    layers : list of LAYER str, network order
    steps : (STEP,) int
    values : (LAYER, STEP) float
    stat : str
        Colour-bar label.
    log : bool
        Log colour scale (non-positive values are left blank).
    max_steps : int
        Columns kept (see :func:`downsample_steps`); the title says when binned.
    collapse : dict, optional
        ``collapse.json``-like: ``onset_step``, ``earliest_layer``, ``earliest_step``.

    Returns
    -------
    hv.Overlay of Rectangles and the marks of :func:`collapse_marks`.
    """
    s, v, stride = downsample_steps(steps, values, max_steps)
    if stride > 1:
        title = f"{title} (mean of {stride} steps per column)".strip()
    rect = _heatmap_element(heatmap_frame(layers, s, v), layers, stat, log, color_limits(v, log), title)
    return rect * collapse_marks(layers, collapse)


def collapse_marks(layers: Sequence[str], collapse: Mapping | None) -> hv.Overlay:
    """A red vertical line at the collapse onset and a star at the earliest collapsing layer.

    Empty (but overlayable) when ``collapse`` has neither.
    """
    marks = [hv.VLine(np.nan).opts(alpha=0)]  # keeps the overlay non-empty and typed
    collapse = collapse or {}
    onset = collapse.get("onset_step")
    if onset is not None:
        marks.append(hv.VLine(float(onset), label="collapse onset").opts(color="red", line_dash="dashed", line_width=2))
    layer, at = collapse.get("earliest_layer"), collapse.get("earliest_step")
    if layer is not None and layer in layers and at is not None:
        marks.append(
            hv.Scatter(
                [(float(at), -float(list(layers).index(layer)))], "step", "layer", label=f"earliest: {layer}"
            ).opts(marker="star", size=16, color="red", line_color="white")
        )
    return hv.Overlay(marks)


def onset_lines(onsets: Mapping[str, float | None]) -> hv.Overlay:
    """Red dashed vertical lines at each run's collapse onset step (``{label: step or None}``), for any step axis.

    Empty (but overlayable) when no run has an onset.
    """
    marks = [hv.VLine(np.nan).opts(alpha=0)]
    for label, step in onsets.items():
        if step is not None and np.isfinite(float(step)):
            marks.append(
                hv.VLine(float(step), label=f"collapse onset ({label})" if len(onsets) > 1 else "collapse onset").opts(
                    color="red", line_dash="dashed", line_width=2
                )
            )
    return hv.Overlay(marks)


def with_onsets(element, onsets: Mapping[str, float | None]) -> hv.Overlay:
    """``element * onset_lines(onsets)`` keeping the element's overlay options (title, log axis, size)."""
    kept = element.opts.get("plot").kwargs if isinstance(element, hv.Overlay) else {}
    out = element * onset_lines(onsets)
    return out.opts(**kept) if kept else out


def _depth_colors(n: int) -> list[str]:
    from bokeh.palettes import Viridis256

    return [Viridis256[int(round(k))] for k in np.linspace(0, 230, max(n, 1))][:n]


def layer_lines(
    layers: Sequence[str],
    steps,
    values,
    *,
    stat: str,
    log: bool = False,
    max_steps: int = 2000,
    title: str = "",
    collapse: Mapping | None = None,
) -> hv.Overlay:
    """One curve per layer (coloured by depth) of a statistic against step.

    Parameters
    ----------
    layers : list of LAYER str
    steps : (STEP,) int
    values : (LAYER, STEP) float
    log : bool
        Log y axis (non-positive values are dropped from the curves).

    Returns
    -------
    hv.Overlay of one ``hv.Curve`` per layer (label = layer name) and the collapse marks.
    """
    s, v, stride = downsample_steps(steps, values, max_steps)
    curves = []
    for i, (name, color) in enumerate(zip(layers, _depth_colors(len(layers)))):
        row = v[i]
        keep = np.isfinite(row) & ((row > 0) if log else True)
        curves.append(
            hv.Curve((s[keep].astype(float), row[keep]), "step", hv.Dimension("value", label=stat), label=name).opts(
                color=color, line_width=1.5, tools=["hover"]
            )
        )
    if stride > 1:
        title = f"{title} (mean of {stride} steps per point)".strip()
    marks = collapse_marks(layers, {k: v for k, v in (collapse or {}).items() if k == "onset_step"})
    show_legend = len(layers) <= 24
    height = max(280, 15 * len(layers) + 110) if show_legend else 320
    return (hv.Overlay(curves) * marks).opts(
        logy=log,
        hooks=[log_ticks],
        title=title,
        responsive=True,
        min_width=300,
        height=height,
        legend_position="right",
        show_legend=show_legend,
        legend_opts=LEGEND,
    )


def side_by_side(plots: Mapping[str, hv.Element], *, cols: int | None = None) -> hv.Layout:
    """Plots keyed by arm label in one Layout; plots of the same dimensions share their step axis."""
    items = [p.relabel(group=p.group) for p in plots.values()]
    layout = hv.Layout(items).opts(shared_axes=True)
    return layout.cols(cols or max(1, len(items)))


def scalar_curves(
    series: Mapping[str, tuple],
    *,
    ylabel: str,
    log: bool = False,
    title: str = "",
    dashed: bool = False,
    colors: Mapping[str, str] | None = None,
) -> hv.Overlay:
    """Curves of one scalar per run on a shared step axis.

    Parameters
    ----------
    series : {label: (steps (ROW,), values (ROW,))}
    ylabel : str
    log : bool
        Log y axis (non-positive values are dropped).
    colors : {label: colour}, optional

    Returns
    -------
    hv.Overlay of ``hv.Curve``, labels = the keys.
    """
    curves = []
    for k, (label, (steps, values)) in enumerate(series.items()):
        s, v = np.asarray(steps, dtype=np.float64), np.asarray(values, dtype=np.float64)
        keep = np.isfinite(v) & ((v > 0) if log else True)
        color = (colors or {}).get(label, PALETTE[k % len(PALETTE)])
        curves.append(
            hv.Curve((s[keep], v[keep]), "step", hv.Dimension("value", label=ylabel), label=label).opts(
                color=color, line_dash="dashed" if dashed else "solid", tools=["hover"]
            )
        )
    if not curves:
        curves = [hv.Curve([], "step", hv.Dimension("value", label=ylabel))]
    finite = np.concatenate([c.dimension_values("value") for c in curves] + [np.zeros(0)])
    extra = {}
    if len(finite) and finite.min() == finite.max():  # a constant (e.g. lr): centre it, a log axis would hide it
        v = float(finite[0])
        extra["ylim"] = (v / 2, v * 2) if log and v > 0 else (v - 0.5 * (abs(v) or 1), v + 0.5 * (abs(v) or 1))
    return hv.Overlay(curves).opts(
        logy=log,
        hooks=[log_ticks],
        title=title,
        responsive=True,
        height=260,
        min_width=300,
        legend_position="top_right",
        **extra,
    )


def loss_curves(runs: Mapping[str, Mapping[str, tuple]], *, log: bool = True, title: str = "loss") -> hv.Overlay:
    """Training loss per step (thin) and validation loss per epoch (markers), one colour per run.

    Parameters
    ----------
    runs : {label: {"train": (steps, values), "val": (steps, values)}}; either may be missing.
    """
    items = []
    for k, (label, r) in enumerate(runs.items()):
        color = PALETTE[k % len(PALETTE)]
        if r.get("train") is not None:
            train = scalar_curves(
                {f"{label} train": r["train"]}, ylabel="loss", log=log, colors={f"{label} train": color}
            )
            items.append(hv.Overlay([c.opts(alpha=0.5, line_width=1) for c in train]))
        if r.get("val") is not None:
            s, v = (np.asarray(a, dtype=np.float64) for a in r["val"])
            keep = np.isfinite(v) & ((v > 0) if log else True)
            pts = (s[keep], v[keep])
            items.append(
                hv.Curve(pts, "step", hv.Dimension("value", label="loss"), label=f"{label} val").opts(
                    color=color, line_width=2.5
                )
                * hv.Scatter(pts, "step", hv.Dimension("value", label="loss"), label=f"{label} val").opts(
                    color=color, size=7
                )
            )
    if not items:
        items = [hv.Curve([], "step", hv.Dimension("value", label="loss"))]
    overlay = hv.Overlay([e for item in items for e in (item if isinstance(item, hv.Overlay) else [item])])
    return overlay.opts(
        logy=log,
        hooks=[log_ticks],
        title=title,
        responsive=True,
        height=280,
        min_width=300,
        legend_position="top_right",
    )


def ssim_curves(
    series: Mapping[str, tuple], *, fingerprint: float | None = None, title: str = "validation amp SSIM per epoch"
) -> hv.Overlay:
    """Per-epoch amplitude SSIM of each run (line + dots), with the constant-output fingerprint.

    Parameters
    ----------
    series : {label: (steps (EPOCH,), amp SSIM (EPOCH,))}
    fingerprint : float, optional
        amp SSIM of a spatially constant output: a collapsing run falls onto this line.
    """
    items = []
    for k, (label, (steps, values)) in enumerate(series.items()):
        s, v = np.asarray(steps, dtype=np.float64), np.asarray(values, dtype=np.float64)
        keep = np.isfinite(v)
        color, ssim = PALETTE[k % len(PALETTE)], hv.Dimension("value", label="amp SSIM")
        items += [
            hv.Curve((s[keep], v[keep]), "step", ssim, label=label).opts(color=color, line_width=2),
            hv.Scatter((s[keep], v[keep]), "step", ssim, label=label).opts(color=color, size=6, tools=["hover"]),
        ]
    if not items:
        items = [hv.Curve([], "step", hv.Dimension("value", label="amp SSIM"))]
    if fingerprint is not None and np.isfinite(fingerprint):
        items.append(hv.HLine(float(fingerprint), label="constant output").opts(color="red", line_dash="dashed"))
    return hv.Overlay(items).opts(
        title=title, ylim=(0, 1), responsive=True, height=280, min_width=300, legend_position="bottom_right"
    )


def layer_bars(layers: Sequence[str], values, *, stat: str, log: bool = False, title: str = "") -> hv.Bars:
    """One statistic per layer (a checkpoint capture) as bars in network order.

    ``log`` draws a log axis only when every value is positive (a bar from zero has no log height).
    """
    v = np.asarray(values, dtype=np.float64)
    return hv.Bars(list(zip(layers, v.tolist())), "layer", stat).opts(
        xrotation=60,
        logy=bool(log and len(v) and (v > 0).all()),
        hooks=[log_ticks],
        title=title,
        responsive=True,
        height=300,
        tools=["hover"],
    )


def ssim_bars(rows: Sequence[Mapping], *, fingerprint: float | None = None, title: str = "amp SSIM") -> hv.Overlay:
    """Best and last amplitude SSIM per run as grouped bars, with the constant-output fingerprint.

    Parameters
    ----------
    rows : [{"run": label, "best": float | None, "last": float | None}]
    fingerprint : float, optional
        amp SSIM of a spatially constant output (a collapsed run sits on this line).
    """
    data = [
        (r["run"], which, float(r[which]))
        for r in rows
        for which in ("best", "last")
        if r.get(which) is not None and np.isfinite(r[which])
    ]
    bars = hv.Bars(data, ["run", "weights"], hv.Dimension("amp_ssim", label="amp SSIM", range=(0, 1))).opts(
        tools=["hover"],
        xrotation=20,
        responsive=True,
        height=280,
        min_width=300,
        title=title if data else f"{title}: no metrics yet (written when a run ends)",
    )
    if data:  # a colour mapping over no rows fails to render
        bars = bars.opts(color="weights", cmap={"best": "#1f77b4", "last": "#ff7f0e"})
    marks = [bars]
    if fingerprint is not None and np.isfinite(fingerprint):
        marks.append(hv.HLine(float(fingerprint), label="constant output").opts(color="red", line_dash="dashed"))
    return hv.Overlay(marks)


ARM_COLUMNS = [
    "arm",
    "seed",
    "state",
    "outcome",
    "progress",
    "optimizer",
    "lr",
    "best_val_loss",
    "final_val_loss",
    "best_ckpt_by",
    "best_ssim_epoch",
    "amp_ssim_best",
    "amp_ssim_last",
    "collapse",
    "onset_step",
    "earliest_layer",
]


def arms_frame(rows: Sequence[Mapping]) -> pd.DataFrame:
    """Overview table of runs: one row per record, the :data:`ARM_COLUMNS` (missing ones blank)."""
    frame = pd.DataFrame([{c: r.get(c) for c in ARM_COLUMNS} for r in rows], columns=ARM_COLUMNS)
    frame["seed"] = [("" if s is None else str(s)) for s in frame["seed"]]  # an id, not a quantity
    return frame


def arms_table(rows: Sequence[Mapping]) -> hv.Table:
    """:func:`arms_frame` as an ``hv.Table``."""
    frame = arms_frame(rows).astype(object).where(lambda d: d.notna(), "")
    return hv.Table(frame, kdims=["arm", "seed"], vdims=ARM_COLUMNS[2:]).opts(
        width=900, height=40 + 25 * max(len(frame), 1)
    )
