"""Thin views over the :class:`~fnodiag.dashboard.store.DashboardStore`: Overview, Activations, Gradients.

Each view rebuilds its figures when the selection changes (reading the stores once, plots from
:mod:`fnodiag.plots.layers`) and, on every :meth:`LiveView.tick`, streams only the rows written since the
previous tick into the figures it holds (:mod:`fnodiag.dashboard.live`).
"""

from __future__ import annotations

import panel as pn
import param
from panel.viewable import Viewer

from fnodiag import plots
from fnodiag.dashboard.live import LiveFigure, LiveLayers, Tail
from fnodiag.dashboard.store import DashboardStore
from fnodiag.runs import states
from fnodiag.runs.names import CLIP_FRACTION, GRAD_NORM_POST, GRAD_NORM_PRE, LR, TRAIN_LOSS, VAL_AMP_SSIM, VAL_LOSS

HEATMAP_MAX_STEPS = 400  # heatmap columns kept when a run opens (older steps are averaged in bins)
LINES_MAX_STEPS = 2000  # points per line kept when a run opens
LINES_MAX_LAYERS = 16  # lines drawn per run (evenly spread over depth + output + earliest collapsing layer)
RUNS_PER_ROW = 2  # runs side by side (more would squeeze the heatmaps' layer names and step axes)


def _doc():
    return pn.state.curdoc


# Short headers for the arms table (its 15 columns fit a laptop screen).
TABLE_TITLES = {
    "best_val_loss": "best val loss",
    "final_val_loss": "final val loss",
    "best_ckpt_by": "best.ckpt by",
    "best_ssim_epoch": "best SSIM epoch",
    "amp_ssim_best": "SSIM best",
    "amp_ssim_last": "SSIM last",
    "onset_step": "onset step",
    "earliest_layer": "earliest layer",
    "time_left": "time left",
}


def checks_mark(warnings: list[str] | None) -> str:
    """The arms table's settings cell: ``✓``, or ``⚠ n`` with every warning in its hover text (HTML)."""
    import html

    if not warnings:
        return '<span title="every recorded setting is as asked">✓</span>'
    text = html.escape("\n".join(warnings), quote=True)
    return f'<span title="{text}" style="color:#c0392b;font-weight:bold">⚠ {len(warnings)}</span>'


def arms_frame(rows):
    """:func:`fnodiag.plots.layers.arms_frame` plus the ``settings`` column (:func:`checks_mark`) after ``state``."""
    import html

    frame = plots.arms_frame(rows)
    frame.insert(
        list(frame.columns).index("state") + 1, "settings", [checks_mark(r.get("config_warnings")) for r in rows]
    )
    frame.insert(
        list(frame.columns).index("progress") + 1,
        "time_left",
        [
            f'<span title="{html.escape(r.get("progress_text", ""), quote=True)}">{r.get("time_left", "")}</span>'
            for r in rows
        ],
    )
    return frame


def onsets(store, entries) -> dict:
    """``{label: collapse onset step or None}`` of the runs shown (``collapse.json``'s ``onset_step``)."""
    return {e.label: store.row(e).get("onset_step") for e in entries}


def progress_lines(rows, chosen) -> str:
    """Markdown: one line per chosen run that is running or stopped (:func:`fnodiag.runs.progress.progress_text`)."""
    lines = []
    for r in rows:
        if r["label"] in chosen and r.get("state") in states.UNFINISHED and r.get("progress_text"):
            stopped = r.get("state") == states.STOPPED and r.get("message")
            extra = f" — {r['message'].splitlines()[0]}" if stopped else ""
            lines.append(f"**{r['label']}**: {r['progress_text']}{extra}")
    return "\n\n".join(lines)


def fingerprint(rows) -> float | None:
    """amp SSIM of a constant output, from the first overview row that records it."""
    return next((r["fingerprint_amp_ssim"] for r in rows if r.get("fingerprint_amp_ssim") is not None), None)


def link_x(figures) -> None:
    """Share one step axis between figures (pan / zoom one, all follow)."""
    figures = [f for f in figures if f is not None]
    for f in figures[1:]:
        f.figure.x_range = figures[0].figure.x_range


def _imported(entry) -> dict | None:
    """``imported.json`` of a run made by ``fnodiag import`` (None for other runs or unreadable files)."""
    try:
        origin = entry.run.read_origin() if entry.exists else None
    except ValueError:
        return None
    return origin if origin is not None and origin["kind"] == "reference" else None


def ptycho(entry) -> bool:
    """Whether a run has (or will have) amp SSIM: fnodiag's own and imported runs, or any run that recorded it.

    A watched model's run (``fnodiag.watch`` / ``LiveCapture``) records none unless its loop logs it, so
    the Overview's amp SSIM panels are left out for a selection of such runs only.
    """
    try:
        if not entry.exists or not entry.run.is_foreign():
            return True
    except ValueError:  # an unreadable origin: keep the panels, as for any run of unknown kind
        return True
    tail = Tail(entry.run)
    try:
        return len(tail.scalar(VAL_AMP_SSIM, scope="epoch")[0]) > 0
    finally:
        tail.close()


class LiveView(Viewer):
    """Base: a container rebuilt on selection changes, plus live feeds ticked by the app."""

    store = param.ClassSelector(class_=DashboardStore)
    title = "view"
    _deps: tuple = ("arms", "seeds", "sweep")

    def __init__(self, **params):
        super().__init__(**params)
        self._layout = pn.Column(sizing_mode="stretch_width")
        self._feeds: list = []
        self._tails: list[Tail] = []
        self._waiting = False  # a selected run has no records yet: rebuild when they appear
        self._onsets: dict = {}  # collapse onsets drawn: rebuild when one appears (a run finished)
        self.store.param.watch(lambda *_: self.rebuild(), list(self._deps))
        self.rebuild()

    def __panel__(self):
        return self._layout

    def rebuild(self) -> None:
        for t in self._tails:
            t.close()
        self._feeds, self._tails = [], []
        entries = self.store.selected()
        if not entries:
            self._layout[:] = [pn.pane.Markdown("Choose a sweep and at least one arm and seed on the left.")]
            return
        self._waiting = False
        self._onsets = onsets(self.store, entries)
        self._layout[:] = self.build(entries)

    def tail(self, entry) -> Tail:
        t = Tail(entry.run)
        self._tails.append(t)
        return t

    def build(self, entries) -> list:
        raise NotImplementedError

    def tick(self) -> int:
        """Stream rows written since the last tick; returns the number of points sent."""
        if self._waiting and any(e.run.store_path.is_file() for e in self.store.selected()):
            self.rebuild()
            return 0
        if self._onsets and onsets(self.store, self.store.selected()) != self._onsets:
            self.rebuild()
            return 0
        return sum(feed.tick() for feed in self._feeds)


class ScalarFeed:
    """Streams one scalar of one run into the glyphs labelled ``label`` of a LiveFigure."""

    def __init__(self, tail: Tail, name: str, figure: LiveFigure, label: str, scope: str | None = None):
        self.tail, self.name, self.figure, self.label, self.scope = tail, name, figure, label, scope

    def tick(self) -> int:
        steps, values = self.tail.scalar(self.name, scope=self.scope, new=True)
        return self.figure.stream_xy(self.label, steps, values) if len(steps) else 0


class LayersView(LiveView):
    """Heatmaps (one per run, side by side) and per-layer lines of one layer statistic."""

    source = "activation"
    _deps = ("arms", "seeds", "sweep", "act_stat", "log_color")

    def stat(self) -> str:
        return self.store.act_stat

    def build(self, entries) -> list:
        stat, log = self.stat(), self.store.log_color
        heats, lines, notes = [], [], []
        for e in entries:
            tail = self.tail(e)
            m = tail.matrix(self.source, stat)
            if self.source == "activation" and tail.reader is not None:
                self.store.set_stats(tail.reader.stats("activation"))
            imported = _imported(e)
            if not m.layers and imported is not None:
                notes.append(
                    f"**{e.label}**: imported from the reference project (`{imported.get('arm')}`): "
                    "it has **no live per-layer captures** (the reference recorded none), so there is "
                    f"nothing to draw here for `{self.source}/{stat}`. Its per-step scalars are in the "
                    "Overview and below; per-layer statistics of its weights: the Checkpoint tab."
                )
                continue
            if not m.layers:
                self._waiting = True
                notes.append(
                    f"**{e.label}**: no `{self.source}/{stat}` records yet "
                    "(training not started, or live capture off: `--capture-every 0`)."
                )
                continue
            row = self.store.row(e)
            collapse = {k: row.get(k) for k in ("onset_step", "earliest_layer", "earliest_step")}
            s, _, stride = plots.downsample_steps(m.steps, m.values, HEATMAP_MAX_STEPS)
            hf = LiveFigure(
                plots.layer_heatmap(
                    *m,
                    stat=stat,
                    log=log,
                    max_steps=HEATMAP_MAX_STEPS,
                    title=f"{e.label}: {self.source} {stat}",
                    collapse=collapse,
                ),
                doc=_doc(),
            )
            pick = plots.pick_layers(m.layers, LINES_MAX_LAYERS, must=[collapse["earliest_layer"], "output"])
            shown = "" if len(pick) == len(m.layers) else f" ({len(pick)} of {len(m.layers)})"
            lf = LiveFigure(
                plots.layer_lines(
                    [m.layers[i] for i in pick],
                    m.steps,
                    m.values[pick],
                    stat=stat,
                    log=log,
                    max_steps=LINES_MAX_STEPS,
                    collapse=collapse,
                    title=f"{e.label}: {stat} per layer{shown}",
                ),
                doc=_doc(),
                log_y=log,
            )
            self._feeds.append(LiveLayers(tail, self.source, stat, m.layers, s, stride, hf, lf))
            heats.append(hf)
            lines.append(lf)
            if collapse["onset_step"] is not None or collapse["earliest_layer"]:
                notes.append(
                    f"**{e.label}**: collapse onset step {collapse['onset_step']}, earliest collapsing "
                    f"layer `{collapse['earliest_layer']}` (step {collapse['earliest_step']}), marked in red."
                )
        link_x(heats + lines)
        out = []
        for k in range(0, len(heats), RUNS_PER_ROW):  # heatmaps above their runs' lines, RUNS_PER_ROW runs a row
            for figures in (heats[k : k + RUNS_PER_ROW], lines[k : k + RUNS_PER_ROW]):
                out.append(
                    pn.Row(
                        *[pn.pane.Bokeh(f.figure, sizing_mode="stretch_width") for f in figures],
                        sizing_mode="stretch_width",
                    )
                )
        return ([pn.pane.Markdown("\n\n".join(notes))] if notes else []) + out

    def tick(self) -> int:
        """Stream new rows; once a run's figures hold twice what a view opens with, re-read them binned."""
        sent = super().tick()
        if any(
            f.columns > 2 * HEATMAP_MAX_STEPS or f.points > 2 * LINES_MAX_STEPS
            for f in self._feeds
            if isinstance(f, LiveLayers)
        ):
            self.rebuild()
        return sent


class ActivationsView(LayersView):
    """Activation statistics per layer x step, arms side by side, collapse onset / earliest layer marked."""

    title = "Activations"


class GradientsView(LayersView):
    """Per-module gradient norms (heatmap + lines), global pre/post-clip norm, clip fraction and realised lr."""

    title = "Gradients"
    source = "grad"
    _deps = ("arms", "seeds", "sweep", "log_color")

    def stat(self) -> str:
        return "norm"

    def build(self, entries) -> list:
        out = super().build(entries)
        norms, lrs, clips = {}, {}, {}
        tails = {}
        for e in entries:
            t = tails[e.label] = self.tail(e)
            norms[f"{e.label} pre-clip"] = t.scalar(GRAD_NORM_PRE)
            norms[f"{e.label} post-clip"] = t.scalar(GRAD_NORM_POST)
            lrs[e.label] = t.scalar(LR)
            clips[e.label] = t.scalar(CLIP_FRACTION, scope="epoch")
        colors = {}
        for k, e in enumerate(entries):
            c = plots.PALETTE[k % len(plots.PALETTE)]
            colors.update({e.label: c, f"{e.label} pre-clip": c, f"{e.label} post-clip": c})
        pre = {k: v for k, v in norms.items() if k.endswith("pre-clip")}
        post = {k: v for k, v in norms.items() if k.endswith("post-clip")}
        marks = onsets(self.store, entries)
        norm_el = plots.with_onsets(
            plots.scalar_curves(pre, ylabel="global grad norm", log=True, colors=colors)
            * plots.scalar_curves(post, ylabel="global grad norm", log=True, dashed=True, colors=colors),
            marks,
        ).opts(
            title="global grad norm (dashed: after clipping)",
            logy=True,
            hooks=[plots.log_ticks],
            responsive=True,
            height=260,
            legend_position="top_right",
        )
        nf = LiveFigure(norm_el, doc=_doc(), log_y=True)
        lf = LiveFigure(
            plots.with_onsets(
                plots.scalar_curves(
                    lrs, ylabel="learning rate", log=True, title="realised learning rate", colors=colors
                ),
                marks,
            ),
            doc=_doc(),
            log_y=True,
        )
        cf = LiveFigure(
            plots.with_onsets(
                plots.scalar_curves(
                    clips, ylabel="clip fraction", colors=colors, title="fraction of steps clipped (per epoch)"
                ),
                marks,
            ),
            doc=_doc(),
        )
        for e in entries:
            t = tails[e.label]
            self._feeds += [
                ScalarFeed(t, GRAD_NORM_PRE, nf, f"{e.label} pre-clip"),
                ScalarFeed(t, GRAD_NORM_POST, nf, f"{e.label} post-clip"),
                ScalarFeed(t, LR, lf, e.label),
                ScalarFeed(t, CLIP_FRACTION, cf, e.label, scope="epoch"),
            ]
        link_x([nf, lf, cf])
        return out + [
            pn.Row(
                *[pn.pane.Bokeh(f.figure, sizing_mode="stretch_width") for f in (nf, lf, cf)],
                sizing_mode="stretch_width",
            )
        ]


class OverviewView(LiveView):
    """The arms table (state, progress, optimizer, losses, SSIM, collapse), the loss and per-epoch amp SSIM
    (live), and the amp SSIM of the best / last weights (both amp SSIM panels only when a chosen run can
    have them: :func:`ptycho`)."""

    title = "Overview"
    _deps = ("arms", "seeds", "sweep")

    def __init__(self, **params):
        self._table = pn.widgets.Tabulator(
            arms_frame([]),
            disabled=True,
            show_index=False,
            sizing_mode="stretch_width",
            height=220,
            titles=TABLE_TITLES,
            formatters={
                "progress": {"type": "progress", "max": 1, "legend": True},
                "settings": {"type": "html"},
                "time_left": {"type": "html"},
            },
        )
        self._bars = pn.pane.HoloViews(sizing_mode="stretch_width", height=300)
        self._bars_shown = None
        self._progress = pn.pane.Markdown("", sizing_mode="stretch_width")
        super().__init__(**params)
        self.store.param.watch(lambda *_: self.update_rows(), ["rows"])
        self.update_rows()

    def update_rows(self) -> None:
        rows = self.store.rows
        frame = arms_frame(rows)
        self._table.value = frame
        chosen = {e.label for e in self.store.selected()}
        self._progress.object = progress_lines(rows, chosen)
        fp = fingerprint(rows)
        bars = [
            {"run": r["label"], "best": r.get("amp_ssim_best"), "last": r.get("amp_ssim_last")}
            for r in rows
            if r["label"] in chosen
        ]
        if (bars, fp) != self._bars_shown:  # re-rendering costs ~50 ms; these change only when a run ends
            self._bars_shown = (bars, fp)
            self._bars.object = plots.ssim_bars(
                bars, fingerprint=fp, title="amp SSIM of the best / last weights (red: a constant output)"
            )

    def build(self, entries) -> list:
        runs = {}
        tails = {}
        for e in entries:
            t = tails[e.label] = self.tail(e)
            runs[e.label] = {"train": t.scalar(TRAIN_LOSS), "val": t.scalar(VAL_LOSS, scope="epoch")}
        marks = onsets(self.store, entries)
        lf = LiveFigure(
            plots.with_onsets(
                plots.loss_curves(runs, title="loss (thin: train per step, dots: validation per epoch)"), marks
            ),
            doc=_doc(),
            log_y=True,
        )
        for e in entries:
            self._feeds += [
                ScalarFeed(tails[e.label], TRAIN_LOSS, lf, f"{e.label} train"),
                ScalarFeed(tails[e.label], VAL_LOSS, lf, f"{e.label} val", scope="epoch"),
            ]
        ssim = any(ptycho(e) for e in entries)
        sf = LiveFigure(
            plots.with_onsets(
                plots.ssim_curves(
                    {e.label: tails[e.label].scalar(VAL_AMP_SSIM, scope="epoch") for e in entries},
                    fingerprint=fingerprint(map(self.store.row, entries)),
                    title="validation amp SSIM per epoch (red: a constant output)",
                ),
                marks,
            ),
            doc=_doc(),
        )
        self._feeds += [ScalarFeed(tails[e.label], VAL_AMP_SSIM, sf, e.label, scope="epoch") for e in entries if ssim]
        self.update_rows()
        notes = [
            f"**{e.label}** is imported from the reference project (`{imp.get('arm')}`, read-only): scalars "
            "from its Lightning CSV log, no live per-layer captures."
            for e in entries
            for imp in [_imported(e)]
            if imp is not None
        ]
        return ([pn.pane.Markdown("\n\n".join(notes))] if notes else []) + [
            self._progress,
            self._table,
            pn.Row(
                *[pn.pane.Bokeh(f.figure, sizing_mode="stretch_width") for f in ((lf, sf) if ssim else (lf,))],
                sizing_mode="stretch_width",
            ),
            *([self._bars] if ssim else []),
        ]
