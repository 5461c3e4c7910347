"""HoloViews builders for arms compared layer by layer (the dashboard's *Compare* tab and notebooks).

Inputs are what :mod:`fnodiag.analysis.compare` returns; nothing here reads a file or imports Panel.
:func:`layer_values` draws each arm's seed mean per layer at one step with its min–max spread,
layers in network order along x; :func:`ratio_heatmap` draws ``ln(arm / reference)`` per layer x
step on a diverging colour scale centred on 0 (same value: white), with each seed's collapse onset
and earliest collapsing layer of the arm marked (:func:`fnodiag.plots.layers.collapse_marks`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import holoviews as hv
import numpy as np

from fnodiag.analysis.compare import ArmStats, layer_union, values_at
from fnodiag.plots.layers import PALETTE, collapse_marks, downsample_steps, heatmap_frame, layer_ticks, log_ticks

__all__ = ["layer_values", "ratio_heatmap", "ratio_limits"]


def layer_values(
    arms: Mapping[str, ArmStats], step: int | None, *, stat: str, log: bool = False, title: str = ""
) -> hv.Overlay:
    """Each arm's seed mean of ``stat`` per layer at ``step``, side by side, with min–max error bars.

    Parameters
    ----------
    arms : {arm label: ArmStats}
    step : int or None
        Shown at the last logged step at or before it (:func:`fnodiag.analysis.compare.step_at`), per arm.
    log : bool
        Log y axis (non-positive means are left out).

    Returns
    -------
    hv.Overlay of one ``hv.Scatter`` (label = arm) and one ``hv.ErrorBars`` per arm; x is the layer's
    index in network order (ticks name the layers), each arm offset a little so seeds' bars do not overlap.
    """
    layers = layer_union([a.layers for a in arms.values()])
    pos = {name: i for i, name in enumerate(layers)}
    width = 0.6 / max(len(arms), 1)
    items = []
    for k, (label, arm) in enumerate(arms.items()):
        v = values_at(arm, step)
        x = np.array([pos[n] for n in arm.layers], float) + (k - (len(arms) - 1) / 2) * width
        mean, lo, hi = v["mean"], v["lo"], v["hi"]
        keep = np.isfinite(mean) & ((mean > 0) if log else True)
        color = PALETTE[k % len(PALETTE)]
        at = "" if v["step"] is None else f" (step {v['step']}, {arm.seeds} seed{'s' * (arm.seeds != 1)})"
        items.append(
            hv.ErrorBars(
                (x[keep], mean[keep], (mean - lo)[keep], (hi - mean)[keep]),
                "layer",
                [hv.Dimension("value", label=stat), "yerrneg", "yerrpos"],
            ).opts(color=color, line_width=1.5, lower_head=None, upper_head=None)
        )
        items.append(
            hv.Scatter((x[keep], mean[keep]), "layer", hv.Dimension("value", label=stat), label=f"{label}{at}").opts(
                color=color, size=8, tools=["hover"]
            )
        )
    return hv.Overlay(items).opts(
        logy=log,
        hooks=[log_ticks],
        xticks=list(enumerate(layers)),
        xrotation=60,
        title=title,
        responsive=True,
        min_width=300,
        height=340,
        legend_position="top_left",
        xlim=(-0.5, len(layers) - 0.5),
    )


def ratio_limits(values) -> tuple[float, float]:
    """Symmetric colour range ``(-m, m)`` of the finite values (at least ±0.05, so equal arms stay pale)."""
    v = np.asarray(values, float)
    v = v[np.isfinite(v)]
    m = float(np.abs(v).max()) if len(v) else 1.0
    return (-max(m, 0.05), max(m, 0.05))


def ratio_heatmap(
    layers: Sequence[str],
    steps,
    values,
    *,
    arm: str,
    reference: str,
    stat: str,
    collapses: Sequence[Mapping] = (),
    max_steps: int = 400,
    title: str = "",
) -> hv.Overlay:
    """Layer x step heatmap of ``ln(arm / reference)``, with the arm's collapse marks.

    Parameters
    ----------
    layers, steps, values : what :func:`fnodiag.analysis.compare.log_ratio` returns
        list of LAYER str, (STEP,) int, (LAYER, STEP) float.
    collapses : sequence of collapse.json-like dicts
        One per seed of ``arm`` (``onset_step``, ``earliest_layer``, ``earliest_step``); each is marked.
    max_steps : int
        Columns kept (:func:`fnodiag.plots.layers.downsample_steps`); the title says when binned.

    Returns
    -------
    hv.Overlay of ``hv.Rectangles`` (value = log ratio; red: the arm's statistic is larger) and the marks.
    """
    s, v, stride = downsample_steps(steps, values, max_steps)
    title = title or f"ln({arm} / {reference}): {stat}"
    if stride > 1:
        title = f"{title} (mean of {stride} steps per column)"
    rect = hv.Rectangles(heatmap_frame(layers, s, v), vdims=["value", "layer", "step"]).opts(
        color="value",
        cmap="RdBu_r",
        clim=ratio_limits(v),
        colorbar=True,
        line_alpha=0,
        yticks=layer_ticks(layers),
        ylim=(-len(layers) + 0.5, 0.5),
        xlabel="step",
        ylabel="",
        title=title,
        clabel=f"ln({stat} {arm} / {reference})",
        tools=["hover"],
        responsive=True,
        height=max(240, 14 * len(layers) + 90),
        min_width=300,
    )
    out = rect * collapse_marks(layers, None)
    for c in collapses:
        out = out * collapse_marks(layers, c)
    return out.opts(legend_position="bottom_left")
