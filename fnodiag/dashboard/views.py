"""Thin views over the :class:`~fnodiag.dashboard.store.DashboardStore`: Overview, Activations, Gradients.

Each view builds its figures only while its tab is on show (:meth:`LiveView.opened`), for the chosen
runs: a selection made while it is hidden is drawn when the tab is opened. It reads the stores once
(plots from :mod:`fnodiag.plots.layers`, curves of many runs from :mod:`fnodiag.dashboard.figures`) and,
on every :meth:`LiveView.tick`, streams only the rows written since the previous tick into the figures it
holds (:mod:`fnodiag.dashboard.live`). Per-run figures (heatmaps, reconstructions) are drawn for
:data:`RUNS_PER_PAGE` runs at a time, with a pager over the rest; curves of at most :data:`MAX_CURVE_RUNS`
runs share one figure.
"""

from __future__ import annotations

import panel as pn
import param
from panel.viewable import Viewer

from fnodiag import plots
from fnodiag.dashboard import figures
from fnodiag.dashboard.catalog import SINGLE
from fnodiag.dashboard.figures import Series
from fnodiag.dashboard.live import LiveFigure, LiveLayers, Tail
from fnodiag.dashboard.store import DashboardStore
from fnodiag.runs import states
from fnodiag.runs.names import CLIP_FRACTION, GRAD_NORM_POST, GRAD_NORM_PRE, LR, TRAIN_LOSS, VAL_AMP_SSIM, VAL_LOSS

HEATMAP_MAX_STEPS = 400  # heatmap columns kept when a run opens (older steps are averaged in bins)
LINES_MAX_STEPS = 2000  # points per line kept when a run opens
LINES_MAX_LAYERS = 16  # lines drawn per run (evenly spread over depth + output + earliest collapsing layer)
RUNS_PER_ROW = 2  # runs side by side (more would squeeze the heatmaps' layer names and step axes)
RUNS_PER_PAGE = 4  # runs whose per-run figures are drawn at once (a pager picks which)
MAX_CURVE_RUNS = 50  # runs drawn in one figure of curves (the first ones chosen)


def _doc():
    return pn.state.curdoc


# Short headers for the arms table (its 15 columns fit a laptop screen).
TABLE_PAGE = 12  # runs per page of the runs table (every run is sent; ticks hold across pages)
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
    """Base: a container rebuilt on selection changes while shown, plus live feeds ticked by the app.

    A view starts hidden and draws nothing until :meth:`opened` (its tab is shown; the dashboard calls it).
    ``paged`` views draw per-run figures for :data:`RUNS_PER_PAGE` chosen runs at a time (:meth:`page`).
    """

    store = param.ClassSelector(class_=DashboardStore)
    title = "view"
    paged = False
    _deps: tuple = ("arms", "seeds", "sweep")

    def __init__(self, **params):
        super().__init__(**params)
        self._layout = pn.Column(sizing_mode="stretch_width")
        self._pager = pn.widgets.Select(label="Runs drawn", options={}, visible=False, width=260)
        self._feeds: list = []
        self._tails: list[Tail] = []
        self._waiting = False  # a selected run has no records yet: rebuild when they appear
        self._onsets: dict = {}  # collapse onsets drawn: rebuild when one appears (a run finished)
        self.visible = False  # set by the dashboard while the view's tab is on show
        self._stale = True  # the selection changed since the view last drew
        self._drawn_key = None  # what the view last drew (:meth:`drawn_key`): a change that keeps it draws nothing
        self.deferred = False  # while True a selection change waits for the next tick to draw (Dashboard.rescan)
        self.built = 0  # times the view drew its figures
        self.store.param.watch(lambda *_: self._selection_changed(), list(self._deps))
        self._pager.param.watch(lambda *_: self.rebuild(), "value")
        self._layout[:] = [pn.pane.Markdown(f"Open this tab to draw the {self.title.lower()} of the chosen runs.")]

    def __panel__(self):
        return pn.Column(self._pager, self._layout, sizing_mode="stretch_width")

    def _selection_changed(self) -> None:
        self._stale = True
        if self.visible and not self.deferred:
            self.opened()

    def opened(self) -> None:
        """The view's tab is shown: draw now if the selection changed since it last drew what it draws
        (a run joining the chosen ones past the runs drawn redraws nothing)."""
        self.visible = True
        if not self._stale:
            return
        if self._drawn_key is not None and self.drawn_key() == self._drawn_key:
            self._stale = False
            self._update_pager(len(self.store.selected()))
        else:
            self.rebuild()

    def drawn(self, entries: list) -> list:
        """The runs of ``entries`` whose records the view draws (default: the pager's page, :meth:`page`)."""
        return self.page(entries)

    def drawn_key(self) -> tuple:
        """What the view would draw now: the runs of :meth:`drawn`, the "too many" note, the view's settings."""
        entries = self.store.selected()
        settings = tuple(repr(getattr(self.store, d)) for d in self._deps if d not in ("arms", "seeds", "sweep"))
        return tuple(e.run.path for e in self.drawn(entries)), too_many(entries), settings

    def hidden(self) -> None:
        """The view's tab is hidden: selection changes wait until it is shown again (its feeds keep their
        store positions and catch up in one batch)."""
        self.visible = False

    def close(self) -> None:
        """Close every store reader the view holds (the session ends)."""
        for t in self._tails:
            t.close()
        self._feeds, self._tails = [], []

    def page(self, entries: list) -> list:
        """The chosen runs whose per-run figures are drawn: the pager's page of ``entries`` (all of them in a
        view that is not paged, or with :data:`RUNS_PER_PAGE` runs or fewer)."""
        if not self.paged or len(entries) <= RUNS_PER_PAGE:
            return entries
        k = self._pager.value or 0
        return entries[k * RUNS_PER_PAGE : (k + 1) * RUNS_PER_PAGE]

    def _update_pager(self, n: int) -> None:
        pages = -(-n // RUNS_PER_PAGE) if self.paged else 1
        options = {f"runs {k * RUNS_PER_PAGE + 1}–{min(n, (k + 1) * RUNS_PER_PAGE)} of {n}": k for k in range(pages)}
        with param.parameterized.discard_events(self._pager):
            value = self._pager.value if self._pager.value in options.values() else 0
            self._pager.param.update(options=options, value=value, visible=pages > 1)

    def rebuild(self) -> None:
        """Draw the chosen runs; a run whose file is damaged is left out (its row says why), the others drawn."""
        self._stale = False
        self.store.past_damage(self._draw)

    def _draw(self) -> None:
        self._drawn_key = self.drawn_key()
        self.close()
        entries = self.store.selected()
        self._update_pager(len(entries))
        if not entries:
            self._layout[:] = [pn.pane.Markdown("Choose a sweep and at least one arm and seed on the left.")]
            return
        self._waiting = False
        self._onsets = onsets(self.store, entries)
        self.built += 1
        self._layout[:] = self.build(entries)

    def tail(self, entry) -> Tail:
        t = Tail(entry.run)
        self._tails.append(t)
        return t

    def build(self, entries) -> list:
        raise NotImplementedError

    def tick(self) -> int:
        """Stream rows written since the last tick; returns the number of points sent."""
        if self._stale:
            self.opened()
            return 0
        if self._waiting and any(e.run.store_path.is_file() for e in self.page(self.store.selected())):
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
    paged = True
    _deps = ("arms", "seeds", "sweep", "act_stat", "log_color")

    def stat(self) -> str:
        return self.store.act_stat

    def build(self, entries) -> list:
        stat, log = self.stat(), self.store.log_color
        heats, lines, notes = [], [], []
        for e in self.page(entries):
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
            for shown in (heats[k : k + RUNS_PER_ROW], lines[k : k + RUNS_PER_ROW]):
                out.append(
                    pn.Row(
                        *[pn.pane.Bokeh(f.figure, sizing_mode="stretch_width") for f in shown],
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

    def drawn(self, entries: list) -> list:
        return [*self.page(entries), *entries[:MAX_CURVE_RUNS]]

    def build(self, entries) -> list:
        out = super().build(entries)
        drawn = entries[:MAX_CURVE_RUNS]
        pre, post, lrs, clips = [], [], [], []
        tails = {}
        for k, e in enumerate(drawn):
            t = tails[e.label] = self.tail(e)
            c = figures.color(k)
            pre.append(Series(f"{e.label} pre-clip", *t.scalar(GRAD_NORM_PRE), c))
            post.append(Series(f"{e.label} post-clip", *t.scalar(GRAD_NORM_POST), c, dash="dashed"))
            lrs.append(Series(e.label, *t.scalar(LR), c))
            clips.append(Series(e.label, *t.scalar(CLIP_FRACTION, scope="epoch"), c))
        marks = onsets(self.store, drawn)
        nf = figures.curves(
            pre + post,
            title="global grad norm (dashed: after clipping)",
            ylabel="global grad norm",
            log=True,
            height=260,
            onsets=marks,
        )
        lf = figures.curves(lrs, title="realised learning rate", ylabel="learning rate", log=True, onsets=marks)
        cf = figures.curves(clips, title="fraction of steps clipped (per epoch)", ylabel="clip fraction", onsets=marks)
        for e in drawn:
            t = tails[e.label]
            self._feeds += [
                ScalarFeed(t, GRAD_NORM_PRE, nf, f"{e.label} pre-clip"),
                ScalarFeed(t, GRAD_NORM_POST, nf, f"{e.label} post-clip"),
                ScalarFeed(t, LR, lf, e.label),
                ScalarFeed(t, CLIP_FRACTION, cf, e.label, scope="epoch"),
            ]
        link_x([nf, lf, cf])
        note = too_many(entries)
        return (
            out
            + ([pn.pane.Markdown(note)] if note else [])
            + [
                pn.Row(
                    *[pn.pane.Bokeh(f.figure, sizing_mode="stretch_width") for f in (nf, lf, cf)],
                    sizing_mode="stretch_width",
                )
            ]
        )


def too_many(entries) -> str:
    """A note when more runs are chosen than one figure of curves draws (:data:`MAX_CURVE_RUNS`)."""
    if len(entries) <= MAX_CURVE_RUNS:
        return ""
    return f"{len(entries)} runs chosen: the curves show the first {MAX_CURVE_RUNS}."


def counts_line(rows, chosen: int) -> str:
    """Markdown: how many runs the list holds, by state, and how many are chosen."""
    by_state: dict[str, int] = {}
    for r in rows:
        by_state[r.get("state") or states.NOT_STARTED] = by_state.get(r.get("state") or states.NOT_STARTED, 0) + 1
    parts = [f"{n} {s}" for s, n in sorted(by_state.items(), key=lambda kv: -kv[1])]
    pending = sum(bool(r.get("pending")) for r in rows)
    more = f" · reading {pending} runs' records…" if pending else ""
    return (
        f"**{len(rows)} runs** · {' · '.join(parts)} · **{chosen} chosen** "
        f"(tick rows to choose which runs are drawn){more}"
    )


class OverviewView(LiveView):
    """The runs table of the sweep (state, progress, optimizer, losses, SSIM, collapse; ticking rows chooses the
    runs drawn; shown above every tab, :meth:`runs_strip`), and in its tab the loss and per-epoch amp SSIM
    (live), and the amp SSIM of the best / last weights (both amp SSIM panels only when a chosen run can have
    them: :func:`ptycho`)."""

    title = "Overview"
    _deps = ("arms", "seeds", "sweep")

    def __init__(self, **params):
        self._table = pn.widgets.Tabulator(
            arms_frame([]),
            disabled=True,
            show_index=False,
            selectable="checkbox",
            sizing_mode="stretch_width",
            pagination="local",  # the browser lays out one page of rows, not every run: 1,000 runs open in a second
            page_size=TABLE_PAGE,
            titles=TABLE_TITLES,
            formatters={
                "progress": {"type": "progress", "max": 1, "legend": True},
                "settings": {"type": "html"},
                "time_left": {"type": "html"},
            },
        )
        self._count = pn.pane.Markdown("", sizing_mode="stretch_width")
        self._strip = pn.Column(self._count, self._table, sizing_mode="stretch_width")
        self._bars = pn.pane.HoloViews(sizing_mode="stretch_width", height=300)
        self._bars_shown = None
        self._bars_due = None  # (bars, fingerprint) to draw, put off by a rescan (deferred)
        self._progress = pn.pane.Markdown("", sizing_mode="stretch_width")
        self._shown_rows: list = []  # the rows the table holds (by identity: a changed row is a new dict)
        self._unsent: list = []  # panes set while the tab was hidden, sent to the page when it is opened (_set)
        self._syncing = False
        super().__init__(**params)
        self.store.param.watch(lambda *_: self.update_rows(), ["rows"], onlychanged=False)  # set only when changed
        self.store.param.watch(lambda *_: self._select_rows(), ["arms", "seeds", "sweep"])
        self._table.param.watch(self._on_table_selection, "selection")
        self.update_rows()

    def __panel__(self):
        return pn.Column(self._progress, self._pager, self._layout, sizing_mode="stretch_width")

    def runs_strip(self) -> pn.Column:
        """The count line and the runs table: the run picker, shown above every tab (the page's first content)."""
        return self._strip

    def update_rows(self) -> None:
        """Show the store's rows: the changed cells only when the same runs are listed, else the whole table."""
        rows = self.store.rows
        old = self._shown_rows
        same = len(old) == len(rows) and all(a["label"] == b["label"] for a, b in zip(old, rows))
        changed = [i for i, (a, b) in enumerate(zip(old, rows)) if a is not b] if same else None
        if changed is None:
            frame = arms_frame(rows)
            self._table.value = frame
            self._select_rows()
        elif changed:
            frame = arms_frame([rows[i] for i in changed])
            self._table.patch({c: list(zip(changed, frame[c].tolist())) for c in frame.columns})
        self._shown_rows = list(rows)
        chosen = {e.label for e in self.store.selected()}
        self._count.object = counts_line(rows, len(chosen))  # above the tabs: always on show
        self._set(self._progress, progress_lines(rows, chosen))
        bars = [
            {"run": r["label"], "best": r.get("amp_ssim_best"), "last": r.get("amp_ssim_last")}
            for r in rows
            if r["label"] in chosen
        ][:MAX_CURVE_RUNS]
        wanted = (bars, fingerprint(rows))  # these change when a run ends or joins the chosen
        self._bars_due = wanted if wanted != self._bars_shown else None
        if not self.deferred:
            self._draw_bars()

    def _draw_bars(self) -> None:
        """Re-render the amp SSIM bars :meth:`update_rows` found changed (~50-200 ms)."""
        if self._bars_due is None:
            return
        self._bars_shown, self._bars_due = self._bars_due, None
        bars, fp = self._bars_shown
        title = "amp SSIM of the best / last weights (red: a constant output)"
        self._set(self._bars, plots.ssim_bars(bars, fingerprint=fp, title=title))

    def tick(self) -> int:
        self._draw_bars()  # put off by a rescan (deferred)
        return super().tick()

    def _set(self, pane, value) -> None:
        """Set ``pane.object``; while the tab is hidden, in Python only, and sent when it is opened: Panel
        would update a hidden (dynamic) tab's model, out of the document, against no document, which
        re-points the page's shared stylesheets at Panel's CDN (unreachable offline). A pane not yet on any
        page (no models: a served page before it is sent) is set as it is, so the page is sent with it."""
        if self.visible or not pane._models:
            pane.object = value
            return
        with param.parameterized.discard_events(pane):
            pane.object = value
        if pane not in self._unsent:
            self._unsent.append(pane)

    def opened(self) -> None:
        """The tab is shown: send what changed while it was hidden, then draw (:meth:`LiveView.opened`)."""
        self.visible = True
        unsent, self._unsent = self._unsent, []
        for pane in unsent:
            pane.param.trigger("object")
        super().opened()

    # -- the table's ticks are the chosen runs ------------------------------------------------------
    def _chosen_rows(self) -> list[int]:
        arms, seeds = set(self.store.arms), set(self.store.seeds)
        single = self.store.sweep == SINGLE or not self.store.param.seeds.objects
        return [
            i
            for i, r in enumerate(self._shown_rows)
            if r["arm"] in arms and (single or r.get("seed") is None or r.get("seed") in seeds)
        ]

    def _select_rows(self) -> None:
        chosen = self._chosen_rows()
        if chosen != list(self._table.selection):
            self._syncing = True
            try:
                self._table.selection = chosen
            finally:
                self._syncing = False

    def _on_table_selection(self, event) -> None:
        """Rows ticked in the browser: their arms (and seeds) become the chosen ones."""
        if self._syncing:
            return
        rows = [self._shown_rows[i] for i in event.new if i < len(self._shown_rows)]
        arms = list(dict.fromkeys(r["arm"] for r in rows))
        seeds = sorted({r["seed"] for r in rows if r.get("seed") is not None})
        with param.parameterized.batch_call_watchers(self.store):
            self.store.arms = [a for a in self.store.param.arms.objects if a in arms]
            if seeds and self.store.sweep != SINGLE:
                self.store.seeds = [s for s in self.store.param.seeds.objects if s in seeds]
        self._select_rows()  # arms x seeds may tick more rows than were ticked

    def drawn(self, entries: list) -> list:
        return entries[:MAX_CURVE_RUNS]

    def build(self, entries) -> list:
        drawn = entries[:MAX_CURVE_RUNS]
        has_ssim = any(ptycho(e) for e in drawn)
        loss, ssim, tails = [], [], {}
        for k, e in enumerate(drawn):
            t = tails[e.label] = self.tail(e)
            c = figures.color(k)
            loss.append(Series(f"{e.label} train", *t.scalar(TRAIN_LOSS), c, alpha=0.5, width=1))
            loss.append(Series(f"{e.label} val", *t.scalar(VAL_LOSS, scope="epoch"), c, kind="line+dots", width=2.5))
            ssim.append(Series(e.label, *t.scalar(VAL_AMP_SSIM, scope="epoch"), c, kind="line+dots", width=2))
        marks = onsets(self.store, drawn)
        lf = figures.curves(
            loss, title="loss (thin: train per step, dots: validation per epoch)", ylabel="loss", log=True, onsets=marks
        )
        sf = figures.curves(
            ssim,
            title="validation amp SSIM per epoch (red: a constant output)",
            ylabel="amp SSIM",
            ylim=(0, 1),
            onsets=marks,
            hline=fingerprint(map(self.store.row, drawn)),
            legend="bottom_right",
        )
        for e in drawn:
            t = tails[e.label]
            self._feeds += [
                ScalarFeed(t, TRAIN_LOSS, lf, f"{e.label} train"),
                ScalarFeed(t, VAL_LOSS, lf, f"{e.label} val", scope="epoch"),
            ] + ([ScalarFeed(t, VAL_AMP_SSIM, sf, e.label, scope="epoch")] if has_ssim else [])
        self.update_rows()
        notes = [
            f"**{e.label}** is imported from the reference project (`{imp.get('arm')}`, read-only): scalars "
            "from its Lightning CSV log, no live per-layer captures."
            for e in drawn
            for imp in [_imported(e)]
            if imp is not None
        ] + ([too_many(entries)] if too_many(entries) else [])
        return ([pn.pane.Markdown("\n\n".join(notes))] if notes else []) + [
            pn.Row(
                *[pn.pane.Bokeh(f.figure, sizing_mode="stretch_width") for f in ((lf, sf) if has_ssim else (lf,))],
                sizing_mode="stretch_width",
            ),
            *([self._bars] if has_ssim else []),
        ]
