"""Curves of many runs drawn straight into one Bokeh figure: the Overview's and Gradients' live line plots.

HoloViews overlays cost time that grows faster than the number of curves (50 runs x 3 curves took
over 20 s to render on a 2-core machine); these figures take one glyph and one ``ColumnDataSource``
per curve (about 2 ms each), and are streamed through :class:`fnodiag.dashboard.live.LiveFigure`
by the same labels the HoloViews builders use (``("Curve", label)``, ``("Scatter", label)``).
Ranges follow the data in the browser (``DataRange1d``), so streamed points need no range updates.
Log axes get the 1-2-5 ticks of :mod:`fnodiag.plots.layers`. With more than :data:`LEGEND_MAX`
curves the legend is left out; hovering a curve names its run.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from bokeh.models import ColumnDataSource, CustomJSTicker, CustomJSTickFormatter, HoverTool, Range1d, Span
from bokeh.plotting import figure

from fnodiag.dashboard.live import LiveFigure
from fnodiag.plots.layers import LOG_LABEL_JS, LOG_TICKS_JS, PALETTE

LEGEND_MAX = 20  # labels with a legend entry; more: no legend (hover names the run)


@dataclass
class Series:
    """One run's curve: ``steps`` / ``values`` (ROW,), drawn as a line, dots or both (``kind``)."""

    label: str
    steps: np.ndarray
    values: np.ndarray
    color: str
    kind: str = "line"  # "line" | "dots" | "line+dots"
    dash: str = "solid"
    alpha: float = 1.0
    width: float = 1.5
    size: float = 6.0


def color(k: int) -> str:
    """The ``k``-th run's colour (the HoloViews builders' palette)."""
    return PALETTE[k % len(PALETTE)]


def _clean(steps, values, log: bool) -> tuple[np.ndarray, np.ndarray]:
    s, v = np.asarray(steps, dtype=np.float64), np.asarray(values, dtype=np.float64)
    keep = np.isfinite(v) & ((v > 0) if log else True)
    return s[keep], v[keep]


def curves(
    series: list[Series],
    *,
    title: str,
    ylabel: str,
    log: bool = False,
    height: int = 280,
    ylim: tuple[float, float] | None = None,
    onsets: dict | None = None,
    hline: float | None = None,
    legend: str = "top_right",
) -> LiveFigure:
    """A figure of ``series`` on one step axis, ready to stream into.

    Parameters
    ----------
    series : the curves (labels unique per kind)
    log : log y axis (non-positive values are not drawn)
    ylim : fixed y range (default: follows the data; a constant series is centred, as
        :func:`fnodiag.plots.layers.scalar_curves` does)
    onsets : ``{label: collapse onset step or None}``: red dashed vertical lines
    hline : a red dashed horizontal line (the constant-output amp SSIM)
    legend : legend position (shown for at most :data:`LEGEND_MAX` curves)

    Returns
    -------
    LiveFigure whose ``sources`` hold ``("Curve", label)`` and ``("Scatter", label)``.
    """
    data = [(x, *_clean(x.steps, x.values, log)) for x in series]
    finite = np.concatenate([v for _, _, v in data] + [np.zeros(0)])
    if ylim is None and len(finite) and finite.min() == finite.max():
        v = float(finite[0])
        ylim = (v / 2, v * 2) if log and v > 0 else (v - 0.5 * (abs(v) or 1), v + 0.5 * (abs(v) or 1))
    extra = {"y_range": Range1d(*ylim)} if ylim is not None else {}
    fig = figure(
        title=title,
        height=height,
        min_width=300,
        sizing_mode="stretch_width",
        y_axis_type="log" if log else "linear",
        x_axis_label="step",
        y_axis_label=ylabel,
        tools="pan,wheel_zoom,box_zoom,reset,save",
        output_backend="canvas",
        **extra,
    )
    if log:
        fig.yaxis.ticker = CustomJSTicker(major_code=LOG_TICKS_JS)
        fig.yaxis.formatter = CustomJSTickFormatter(code=LOG_LABEL_JS)
    show_legend = len({x.label for x in series}) <= LEGEND_MAX
    sources, renderers = {}, []
    for x, s, v in data:
        named = {"name": x.label, **({"legend_label": x.label} if show_legend else {})}
        if "line" in x.kind:
            cds = ColumnDataSource({"step": s, "value": v})
            renderers.append(
                fig.line(
                    "step",
                    "value",
                    source=cds,
                    color=x.color,
                    line_dash=x.dash,
                    alpha=x.alpha,
                    line_width=x.width,
                    **named,
                )
            )
            sources[("Curve", x.label)] = cds
        if "dots" in x.kind:
            cds = ColumnDataSource({"step": s.copy(), "value": v.copy()})
            renderers.append(fig.scatter("step", "value", source=cds, color=x.color, size=x.size, **named))
            sources[("Scatter", x.label)] = cds
    fig.add_tools(HoverTool(renderers=renderers, tooltips=[("run", "$name"), ("step", "@step"), ("value", "@value")]))
    for step in (onsets or {}).values():
        if step is not None and np.isfinite(float(step)):
            fig.add_layout(Span(location=float(step), dimension="height", line_color="red", line_dash="dashed"))
    if hline is not None and np.isfinite(hline):
        fig.add_layout(Span(location=float(hline), dimension="width", line_color="red", line_dash="dashed"))
    if show_legend and renderers:
        fig.legend.location = legend
        fig.legend.click_policy = "hide"
        fig.legend.label_text_font_size = "8pt"
        fig.legend.spacing = 0
        fig.legend.padding = 4
    return LiveFigure.of_figure(fig, sources, log_y=log)
