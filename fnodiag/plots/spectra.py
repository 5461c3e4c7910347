"""HoloViews builders of the spectral view: where each layer's energy sits across Fourier bands, and how it moves.

Inputs are what :mod:`fnodiag.analysis.spectra` gives (``(LAYER, BAND)`` slices, ``(BAND, STEP)``
series); nothing here reads a file or imports Panel. Used by the dashboard's *Spectra* tab and notebooks:

* :func:`band_heatmap` -- layer x band map of the share of energy per radial band at one step (layers in
  network order, the first on top; band 0 = the lowest frequencies), or with ``change=True`` its
  difference since an earlier step on a diverging scale centred on 0;
* :func:`band_lines` -- one layer's band shares over steps, one line per band (dark: low, light: high);
* :func:`above_lines` -- each spectral convolution's share of input energy above its kept modes over steps;
* :func:`mode_heatmap` -- the spectral weights' mean magnitude per band of retained modes, one row per
  convolution.

A chosen step is marked by a dashed grey line (:func:`step_mark`) wherever steps are the x axis.
"""

from __future__ import annotations

from collections.abc import Sequence

import holoviews as hv
import numpy as np
import pandas as pd
from bokeh.palettes import Viridis256

from fnodiag.plots.layers import layer_ticks, log_ticks

__all__ = ["above_lines", "band_frame", "band_heatmap", "band_lines", "mode_heatmap", "step_mark"]

BAND_COLUMNS = ["x0", "y0", "x1", "y1", "value", "layer", "band"]


def band_frame(layers: Sequence[str], values) -> pd.DataFrame:
    """Rectangles of a ``(LAYER, BAND)`` matrix, one per finite value: band ``b`` spans ``[b - 0.5, b + 0.5]``,
    layer ``i`` the row ``y = -i`` (the first layer on top). Columns :data:`BAND_COLUMNS`."""
    v = np.asarray(values, dtype=np.float64).reshape(len(layers), -1) if len(layers) else np.zeros((0, 0))
    row, col = np.nonzero(np.isfinite(v))
    y = -row.astype(np.float64)
    return pd.DataFrame(
        {
            "x0": col - 0.5,
            "y0": y - 0.5,
            "x1": col + 0.5,
            "y1": y + 0.5,
            "value": v[row, col],
            "layer": np.asarray(layers, dtype=object)[row] if len(row) else np.zeros(0, dtype=object),
            "band": col.astype(np.int64),
        },
        columns=BAND_COLUMNS,
    )


def _band_map(layers, values, *, title: str, clabel: str, cmap: str, clim, log: bool, xlabel: str) -> hv.Rectangles:
    v = np.asarray(values, dtype=np.float64).reshape(len(layers), -1) if len(layers) else np.zeros((0, 0))
    n_bands = v.shape[1] if v.ndim == 2 else 0
    return hv.Rectangles(band_frame(layers, v), vdims=["value", "layer", "band"]).opts(
        color="value",
        cmap=cmap,
        cnorm="log" if log else "linear",
        clim=clim,
        colorbar=True,
        line_alpha=0,
        yticks=layer_ticks(layers),
        ylim=(-len(layers) + 0.5, 0.5),
        xticks=[(b, str(b)) for b in range(n_bands)],
        xlim=(-0.5, max(n_bands, 1) - 0.5),
        xlabel=xlabel,
        ylabel="",
        title=title,
        clabel=clabel,
        tools=["hover"],
        responsive=True,
        height=max(220, 14 * len(layers) + 80),
        min_width=260,
    )


def band_heatmap(layers: Sequence[str], values, *, change: bool = False, log: bool = True, title: str = ""):
    """Layer x band map of the energy share per radial band (or its change since an earlier step).

    Parameters
    ----------
    layers : list of LAYER str, network order
    values : (LAYER, BAND) float
        Shares in ``[0, 1]`` (each row sums to 1), or differences of shares when ``change``.
    change : bool
        Diverging scale centred on 0 (blue: the band lost share, red: gained), limits symmetric.
    log : bool
        Log colour scale of the shares (most energy sits in band 0; the high bands hold decades less).
        Ignored for ``change``.

    Returns
    -------
    hv.Rectangles
    """
    v = np.asarray(values, dtype=np.float64)
    finite = v[np.isfinite(v)]
    if change:
        top = float(np.abs(finite).max()) if len(finite) else 0.0
        top = top if top > 0 else 1e-6
        return _band_map(layers, v, title=title, clabel="change of share", cmap="RdBu_r", clim=(-top, top),
                         log=False, xlabel="radial band (0: lowest frequencies)")  # fmt: skip
    pos = finite[finite > 0] if log else finite
    lo = float(pos.min()) if len(pos) else (1e-6 if log else 0.0)
    clim = (max(lo, 1e-8) if log else 0.0, 1.0)
    return _band_map(layers, v, title=title, clabel="share of energy", cmap="viridis", clim=clim, log=log,
                     xlabel="radial band (0: lowest frequencies)")  # fmt: skip


def mode_heatmap(layers: Sequence[str], values, *, log: bool = True, title: str = ""):
    """Spectral weights' mean ``|w|`` per band of retained modes (rows: convolutions; NaN bands left blank)."""
    v = np.asarray(values, dtype=np.float64)
    pos = v[np.isfinite(v) & (v > 0)] if log else v[np.isfinite(v)]
    lo, hi = (float(pos.min()), float(pos.max())) if len(pos) else ((1e-6, 1.0) if log else (0.0, 1.0))
    hi = hi if hi > lo else (lo * 10 if log else lo + 1.0)
    return _band_map(layers, v, title=title, clabel="mean |w|", cmap="magma", clim=(lo, hi), log=log,
                     xlabel="mode band (0: lowest retained modes)")  # fmt: skip


def step_mark(step: int | None) -> hv.VLine:
    """A dashed grey vertical line at ``step`` (invisible when None), overlayable on any step axis."""
    if step is None:
        return hv.VLine(np.nan).opts(alpha=0)
    return hv.VLine(float(step), label=f"step {step}").opts(color="grey", line_dash="dashed", line_width=1.5)


def _band_colors(n: int) -> list[str]:
    """``n`` colours from dark (band 0) to light (the highest band)."""
    return [Viridis256[int(i)] for i in np.linspace(0, 230, max(n, 1))]


def band_lines(steps, values, *, layer: str, log: bool = True, step: int | None = None, title: str = ""):
    """One layer's share of energy per band over steps: one ``hv.Curve`` per band, labelled ``band b``.

    Parameters
    ----------
    steps : (STEP,) int
    values : (BAND, STEP) float
    step : int, optional
        Marked with :func:`step_mark`.
    """
    v = np.asarray(values, dtype=np.float64)
    steps = np.asarray(steps)
    colors = _band_colors(v.shape[0])
    curves = []
    for b in range(v.shape[0]):
        keep = np.isfinite(v[b]) & ((v[b] > 0) if log else True)
        curves.append(
            hv.Curve(
                (steps[keep], v[b, keep]), "step", hv.Dimension("share", label="share of energy"), label=f"band {b}"
            ).opts(color=colors[b], line_width=1.5)  # fmt: skip
        )
    if not curves:
        curves = [hv.Curve(([], []), "step", "share")]
    return (hv.Overlay(curves) * step_mark(step)).opts(
        title=title or f"{layer}: share of energy per band",
        logy=log,
        responsive=True,
        height=280,
        legend_position="right",
        hooks=[log_ticks] if log else [],
    )


def above_lines(layers: Sequence[str], steps, values, *, step: int | None = None, title: str = ""):
    """Each spectral convolution's share of input energy above its kept modes over steps (one curve per layer)."""
    v = np.asarray(values, dtype=np.float64).reshape(len(layers), -1) if len(layers) else np.zeros((0, 0))
    steps = np.asarray(steps)
    palette = hv.Cycle("Category10").values
    curves = [
        hv.Curve((steps[np.isfinite(v[i])], v[i, np.isfinite(v[i])]), "step",
                 hv.Dimension("above", label="share above kept modes"), label=name)
        .opts(color=palette[i % len(palette)], line_width=1.5)
        for i, name in enumerate(layers)
    ]  # fmt: skip
    if not curves:
        curves = [hv.Curve(([], []), "step", "above")]
    return (hv.Overlay(curves) * step_mark(step)).opts(
        title=title or "share of input energy above the kept modes",
        responsive=True,
        height=280,
        legend_position="right",
    )
