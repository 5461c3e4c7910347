"""One browser session's dashboard: the store, the sidebar of selection widgets, the tabs, the live tick.

:class:`Dashboard` is what :func:`fnodiag.dashboard.app.session_page` serves; tests build it without a
server. The runs table (the run picker) sits above the tabs. Only the open tab's view draws
(:meth:`~fnodiag.dashboard.views.LiveView.opened`); a served page is sent with its count line and runs table
alone, and gets its sidebar, tabs and plots once the browser has shown them (``defer``, :meth:`Dashboard.load`).
Every ``TICK_MS`` the session's periodic callback calls :meth:`Dashboard.tick`, which streams new store rows
into the open tab's view and, every ``ROWS_EVERY`` ticks (0.5 s), rescans the runs folder (incrementally, one
scan shared by the server's sessions) and re-reads the rows of runs whose records changed: a run started from
another terminal, or a sweep's next run, appears by itself. A session opened from an evidence link
(``/app?run=...&tab=...&stat=...&layer=...&step=...``) is pointed at it by :meth:`Dashboard.select`
(:mod:`fnodiag.dashboard.evidence`).
"""

from __future__ import annotations

import time
from pathlib import Path

import panel as pn

from fnodiag.dashboard import evidence
from fnodiag.dashboard.checkpoint import CheckpointView
from fnodiag.dashboard.compare import CompareView
from fnodiag.dashboard.evidence import EvidencePanel
from fnodiag.dashboard.export import PLOTS, download_button
from fnodiag.dashboard.findings import FindingsView
from fnodiag.dashboard.index import SCAN_EVERY_S
from fnodiag.dashboard.launch import DEMO_ARGS, LaunchView
from fnodiag.dashboard.reconstructions import ReconstructionsView
from fnodiag.dashboard.spectra import SpectraView
from fnodiag.dashboard.store import DashboardStore
from fnodiag.dashboard.views import ActivationsView, GradientsView, LiveView, OverviewView

TICK_MS = 250
ROWS_EVERY = 2  # ticks between folder rescans and row re-reads (0.5 s): a new run shows within 2 s
ROWS_BUDGET_S = 0.4  # seconds a served page's first look may spend reading runs' records (then: its ticks)
PENDING_BUDGET_S = 0.15  # seconds a tick may spend reading rows not read yet (a first look at many runs)


class Dashboard:
    """The session's layout and live loop over a runs folder.

    Parameters
    ----------
    root : str or Path
        The runs folder.
    read_only : bool
        No Launch tab and no demo button (``--args --read-only``); nothing can be started or stopped.
    may_control : callable, optional
        Asked by the Launch tab's Start / Stop handlers whether this session may start or stop runs.
    defer : bool
        Draw nothing until :meth:`load` (a served page calls it once the browser has the page); default:
        the open tab draws now.
    tabs : collection of str, optional
        Show only the tabs with these titles (``fnodiag.show(..., tabs=...)``); default all. Launch is
        shown unless ``read_only``.

    Raises
    ------
    ValueError
        A title in ``tabs`` that is no tab (the message lists them).
    """

    def __init__(self, root: str | Path, *, read_only: bool = False, may_control=None, defer: bool = False, tabs=None):
        self.read_only = read_only
        self.store = DashboardStore(root, rows_budget_s=ROWS_BUDGET_S if defer else None)
        self.views = [
            OverviewView(store=self.store),
            ActivationsView(store=self.store),
            GradientsView(store=self.store),
            ReconstructionsView(store=self.store),
            CompareView(store=self.store),
            SpectraView(store=self.store),
            FindingsView(store=self.store),
        ]
        self.overview = self.views[0]  # its runs table and count line are above the tabs, whichever are shown
        self.checkpoint = CheckpointView(store=self.store)
        self.launch = LaunchView(store=self.store, may_control=(lambda: False) if read_only else may_control)
        if tabs is not None:  # a subset (the notebook's fnodiag.show); the Tabs below keep views before Checkpoint
            titles = [v.title for v in (*self.views, self.checkpoint, self.launch)]
            if unknown := [t for t in tabs if t not in titles]:
                raise ValueError(f"unknown tab(s) {', '.join(map(repr, unknown))}; choose from {', '.join(titles)}")
            self.views = [v for v in self.views if v.title in tabs]
        self.callback = None  # the session's periodic tick (a Panel PeriodicCallback), set by whoever serves it
        self.ticks = 0
        self.last_tick_ms = 0.0
        self.points_sent = 0
        self.info = pn.pane.Markdown("", sizing_mode="stretch_width")
        shown = [
            pn.Column(v, download_button(v.title, self.store), sizing_mode="stretch_width") if v.title in PLOTS else v
            for v in self.views
        ]  # a CSV of the tab's plot data under each (Compare: one per plot)
        self.tabs = pn.Tabs(
            *[(v.title, t) for v, t in zip(self.views, shown)],
            *([(self.checkpoint.title, self.checkpoint)] if tabs is None or self.checkpoint.title in tabs else []),
            *([] if read_only else [(self.launch.title, self.launch)]),
            dynamic=True,  # a tab's models are built when it is first shown
            sizing_mode="stretch_width",
        )
        self.evidence = EvidencePanel(store=self.store)  # what an evidence link chose, above the tabs
        self.tabs.param.watch(self._on_tab, "active")
        self.empty = pn.Column(sizing_mode="stretch_width")
        self.store.param.watch(lambda *_: self._update_empty(), ["message", "sweep"])
        self._update_empty()
        self._sidebar = pn.Column(width=300)  # filled by load(): a served page is sent with its runs table alone
        self._body = pn.Column(sizing_mode="stretch_width")
        self.loaded = False
        if not defer:
            self.load()

    def load(self) -> None:
        """Add the sidebar and the tabs to the page and draw the open tab (what ``defer`` put off)."""
        if not self.loaded:
            self._sidebar[:] = [self.sidebar()]
            self._body[:] = [self.evidence, self.tabs]
        self.loaded = True
        self._show(self.tabs.active)

    def _show(self, shown: int) -> None:
        for k, view in enumerate(self.views):
            view.opened() if k == shown else view.hidden()

    def _on_tab(self, event) -> None:
        """Views draw only while shown: tell each whether its tab is on show."""
        if self.loaded:
            self._show(event.new)

    def close(self) -> None:
        """The session ended: stop its tick and close every store reader its views hold."""
        if self.callback is not None:
            self.callback.stop()
        for view in self.views:
            view.close()

    def _update_empty(self) -> None:
        if self.store.sweep is None and self.read_only:
            self.empty[:] = [
                pn.pane.Markdown(
                    f"### No runs in `{self.store.root}` yet\n\nThis dashboard is "
                    "read-only: runs are started elsewhere and appear here as they train."
                )
            ]
        elif self.store.sweep is None:
            demo = pn.widgets.Button(label="Start a quick demo run", color="success")
            demo.on_click(lambda _: (self.launch.start(DEMO_ARGS), self.tabs.param.update(active=len(self.tabs) - 1)))
            self.empty[:] = [
                pn.pane.Markdown(
                    f"### No runs in `{self.store.root}` yet\n\nTrain one in a terminal:\n\n"
                    f"`fnodiag train --preset quick --out {self.store.root}`\n\nor run a sweep with `fnodiag sweep "
                    f"DEFINITION --out {self.store.root}/<name>`, or start a short demo run from here "
                    f"(`fnodiag train {' '.join(DEMO_ARGS)}`, about a minute on a CPU). It appears here as it trains."
                ),
                demo,
            ]
        else:
            self.empty[:] = []
        self.info.object = self.store.message

    def sidebar(self) -> pn.Column:
        s = self.store.param
        return pn.Column(
            pn.pane.Markdown(f"**Runs folder**  \n`{self.store.root}`"),
            pn.widgets.Select.from_param(s.sweep, label="Sweep"),
            pn.widgets.MultiChoice.from_param(s.arms, label="Arms"),
            pn.widgets.MultiChoice.from_param(s.seeds, label="Seeds"),
            pn.widgets.Select.from_param(s.act_stat),
            pn.widgets.Checkbox.from_param(s.log_color),
            pn.widgets.Checkbox.from_param(s.live),
            pn.pane.Markdown("New runs in the folder appear by themselves.", styles={"color": "#666"}),
            width=300,
        )

    def layout(self) -> pn.Column:
        header = pn.pane.Markdown(
            "## fnodiag: layer activations and gradients of FNO/U-NO training runs", sizing_mode="stretch_width"
        )
        main = pn.Column(self.info, self.empty, self.overview.runs_strip(), self._body, sizing_mode="stretch_width")
        return pn.Column(header, pn.Row(self._sidebar, main, sizing_mode="stretch_width"), sizing_mode="stretch_width")

    def tab_titles(self) -> list[str]:
        """The tabs' titles, in order."""
        return [v.title for v in self.views] + [self.checkpoint.title] + ([] if self.read_only else [self.launch.title])

    def view(self, title: str):
        """The view shown in the tab titled ``title`` (None when the page has no such tab)."""
        views = [*self.views, self.checkpoint, *([] if self.read_only else [self.launch])]
        return next((v for v in views if v.title == title), None)

    def select(self, args) -> evidence.Evidence:
        """Point the page at an evidence link's run, tab, statistic, layer and step (its request arguments
        ``{name: [value]}``); values that do not check out are ignored with a note in the evidence panel."""
        query, notes = evidence.parse_query(args)
        if not query:  # no evidence key at all (other arguments: not a link of ours)
            return evidence.Evidence()
        ev = evidence.resolve(self.store, query, self.tab_titles(), notes)
        evidence.apply(self, ev)
        return ev

    def tick(self) -> int:
        """Stream new rows to the shown view; returns the points sent (timing kept in ``last_tick_ms``).

        Only the open tab's view streams: a hidden view's feeds keep their store positions and
        catch up in one batch when its tab is opened. The tick's changes leave as one message.
        """
        if not self.store.live:
            return 0
        t0 = time.perf_counter()
        self.ticks += 1
        with pn.io.hold():
            sent = self._tick()
        self.points_sent += sent
        self.last_tick_ms = (time.perf_counter() - t0) * 1e3
        return sent

    def _tick(self) -> int:
        if not self.loaded:
            return 0
        shown = self.tabs.active
        sent = self.views[shown].tick() if shown < len(self.views) else 0
        if self.ticks % ROWS_EVERY == 0:
            self.rescan()
            if self.launch.launcher.runs:
                self.launch.refresh()
        elif self.store.pending:
            self.store.refresh_rows(budget_s=PENDING_BUDGET_S)
        return sent

    def rescan(self) -> None:
        """Pick up new runs (they join the chosen arms when they belong to the chosen sweep) and changed rows.

        The runs table and count line leave with this tick; plots a new run changes are drawn by the next
        tick (views ``deferred``), so a new run is listed without waiting for its curves."""
        store = self.store
        before = ([e.run.path for e in store.selected()], list(store.arms), list(store.seeds))
        live = [v for v in self.views if isinstance(v, LiveView)]
        for view in live:
            view.deferred = True
        try:
            if not store.refresh(max_age_s=SCAN_EVERY_S):
                store.refresh_rows(budget_s=PENDING_BUDGET_S)
                return
            after = [e.run.path for e in store.selected()]
            if after != before[0] and (list(store.arms), list(store.seeds)) == before[1:]:
                store.param.trigger("arms")  # a chosen run's folder appeared: draw it
        finally:
            for view in live:
                view.deferred = False
