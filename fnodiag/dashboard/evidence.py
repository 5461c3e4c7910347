"""Evidence links: ``/app?run=...&tab=...&stat=...&layer=...&step=...`` opens the page on what shows a finding.

Every finding carries such a link (:func:`fnodiag.diagnostics.findings.evidence_link`); the Findings tab
shows it. When a session opens with these arguments (:func:`fnodiag.dashboard.app.session_page` hands
``pn.state.session_args`` to :meth:`fnodiag.dashboard.dashboard.Dashboard.select`):

1. :func:`parse_query` keeps the first value of each known key (``run``, ``tab``, ``stat``, ``layer``,
   ``step``); other keys are ignored with a note;
2. :func:`resolve` checks each value against the served folder and the run's own records: ``run`` is a
   run folder relative to the served folder (a path leaving it, or no run there, is ignored), ``tab``
   one of :data:`TABS` that this page has, ``stat`` and ``layer`` ones the run's store holds for the
   tab's source (:data:`SOURCES`), ``step`` a non-negative integer; what does not check out is ignored
   with a note that says why;
3. :func:`apply` chooses the run (its sweep, arm and seed), the statistic (the sidebar's activation
   statistic; the Compare tab's source and statistic for ``tab=parameters``), the tab, and, in the
   Spectra and Compare tabs, the layer / step; the :class:`EvidencePanel` above the tabs names what was
   chosen and draws the statistic of that layer over steps with the step marked, so the layer and step
   are on screen whatever the tab.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import holoviews as hv
import numpy as np
import panel as pn
import param
from panel.viewable import Viewer

from fnodiag.dashboard.catalog import RunEntry
from fnodiag.dashboard.store import DashboardStore
from fnodiag.runs import StoreReader

KEYS = ("run", "tab", "stat", "layer", "step")
#: Tab names of a link -> the dashboard tab that shows them (findings use the first four and ``spectra``).
TABS = {
    "overview": "Overview",
    "activations": "Activations",
    "gradients": "Gradients",
    "parameters": "Compare",
    "spectra": "Spectra",
    "findings": "Findings",
    "compare": "Compare",
    "reconstructions": "Reconstructions",
    "checkpoint": "Checkpoint",
}
#: The store source whose records a tab's ``stat`` / ``layer`` name (None: per-step scalars).
SOURCES = {"activations": "activation", "gradients": "grad", "parameters": "param", "compare": "param"}
PANEL_CLASS = "fnodiag-evidence"


def parse_query(args) -> tuple[dict[str, str], list[str]]:
    """``({key: value}, notes)`` from a session's request arguments (``{name: [bytes or str, ...]}``)."""
    query, notes = {}, []
    for key, values in (args or {}).items():
        values = values if isinstance(values, (list, tuple)) else [values]
        if not values:
            continue
        value = values[0].decode("utf-8", "replace") if isinstance(values[0], bytes) else str(values[0])
        if key in KEYS:
            query[key] = value.strip()
        else:
            notes.append(f"unknown argument `{key}` ignored (known: {', '.join(KEYS)})")
    return query, notes


@dataclass
class Evidence:
    """What a link asks for, each value checked (None: not asked, or ignored with a note)."""

    entry: RunEntry | None = None
    run: str | None = None
    tab: str | None = None  # a key of TABS
    stat: str | None = None
    layer: str | None = None
    step: int | None = None
    source: str | None = None  # the store source of stat / layer (None: a scalar or a setting)
    notes: list[str] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not any((self.entry, self.tab, self.stat, self.layer, self.step is not None, self.notes))


def _find_entry(store: DashboardStore, path) -> RunEntry | None:
    for entries in store.catalog.sweeps.values():
        for e in entries:
            if e.run.path.resolve() == path:
                return e
    return None


def _spectra_source(stat: str | None) -> str:
    return "param" if stat and stat.startswith("mode_band_") else "activation"


def resolve(store: DashboardStore, query: dict[str, str], tabs: list[str], notes=()) -> Evidence:
    """Check each value of ``query`` (see the module docstring); ``tabs`` are the page's tab titles."""
    ev = Evidence(notes=list(notes))
    if "run" in query:
        try:
            path = store.resolve(query["run"])
        except ValueError:
            ev.notes.append(f"run `{query['run']}` is outside the served folder; ignored")
        else:
            ev.entry = _find_entry(store, path)
            if ev.entry is None:
                ev.notes.append(f"no run `{query['run']}` in the served folder; ignored")
            else:
                ev.run = query["run"]
    if "tab" in query:
        key = query["tab"].lower()
        if key in TABS and TABS[key] in tabs:
            ev.tab = key
        else:
            ev.notes.append(f"unknown tab `{query['tab']}` ignored")
    if "step" in query:
        try:
            ev.step = int(query["step"])
            if ev.step < 0:
                raise ValueError
        except ValueError:
            ev.step = None
            ev.notes.append(f"step `{query['step']}` is not a step number; ignored")
    stat, layer = query.get("stat"), query.get("layer")
    if stat is None and layer is None:
        return ev
    source = _spectra_source(stat) if ev.tab == "spectra" else SOURCES.get(ev.tab or "activations")
    if ev.tab in ("overview", "findings", "reconstructions", "checkpoint"):
        ev.stat, ev.layer = stat, None  # a scalar or a setting: named, not chosen
        if layer is not None:
            ev.notes.append(f"layer `{layer}` ignored: the {TABS[ev.tab]} tab has no layers")
        return ev
    run = ev.entry.run if ev.entry is not None else None
    held_stats, held_layers = [], []
    if run is not None and run.store_path.is_file():
        with StoreReader(run.store_path) as reader:
            held_stats, held_layers = reader.stats(source), reader.layers(source)
    ev.source = source
    if run is None:  # nothing to check the names against
        for what, value in (("statistic", stat), ("layer", layer)):
            if value is not None:
                ev.notes.append(f"{what} `{value}` ignored: no run of the served folder chosen to show it")
        return ev
    if stat is not None:
        if stat in held_stats:
            ev.stat = stat
        else:
            ev.notes.append(f"statistic `{stat}` ignored: the run records no {source} `{stat}`")
    if layer is not None:
        if layer in held_layers:
            ev.layer = layer
        else:
            ev.notes.append(f"layer `{layer}` ignored: the run records no {source} statistics of it")
    return ev


def series(ev: Evidence) -> tuple[np.ndarray, np.ndarray] | None:
    """``(steps, values)`` of the evidence's statistic for its layer (None when there is nothing to draw)."""
    run = ev.entry.run if ev.entry is not None else None
    if run is None or not run.store_path.is_file() or ev.stat is None:
        return None
    with StoreReader(run.store_path) as reader:
        if ev.source is None:
            if ev.stat not in reader.scalar_names():
                return None
            rec = reader.scalars(ev.stat, scope="step")
            return np.asarray(rec.step), np.asarray(rec.value)
        if ev.layer is None:
            return None
        m = reader.layer_matrix(ev.source, ev.stat)
    if ev.layer not in m.layers:
        return None
    row = np.asarray(m.values[m.layers.index(ev.layer)], dtype=np.float64)
    keep = np.isfinite(row)
    return np.asarray(m.steps)[keep], row[keep]


class EvidencePanel(Viewer):
    """Above the tabs: what an evidence link chose (run, tab, statistic, layer, step), its series, and notes."""

    store = param.ClassSelector(class_=DashboardStore)

    def __init__(self, **params):
        super().__init__(**params)
        self.evidence: Evidence | None = None
        self._text = pn.pane.Markdown("", sizing_mode="stretch_width", css_classes=[PANEL_CLASS])
        self._plot = pn.Column(sizing_mode="stretch_width")
        self._layout = pn.Column(self._text, self._plot, sizing_mode="stretch_width", visible=False)

    def __panel__(self):
        return self._layout

    def show(self, ev: Evidence) -> None:
        """Name what ``ev`` chose and draw its series (hidden when the link asked for nothing)."""
        self.evidence = ev
        if ev.empty:
            self._layout.visible = False
            return
        parts = []
        if ev.entry is not None:
            parts.append(f"run **{ev.entry.label}**")
        if ev.tab is not None:
            parts.append(f"tab **{TABS[ev.tab]}**" + (" (source param)" if ev.tab == "parameters" else ""))
        if ev.stat is not None:
            parts.append(f"statistic `{ev.stat}`")
        if ev.layer is not None:
            parts.append(f"layer `{ev.layer}`")
        if ev.step is not None:
            parts.append(f"step {ev.step}")
        lines = ["**Evidence**: " + " · ".join(parts) if parts else "**Evidence link**"]
        lines += [f"- {n}" for n in ev.notes]
        self._text.object = "\n\n".join(lines[:1]) + ("\n\n" + "\n".join(lines[1:]) if len(lines) > 1 else "")
        data = series(ev)
        if data is not None and len(data[0]):
            what = f"{ev.layer} {ev.stat}" if ev.layer else ev.stat
            curve = hv.Curve(data, "step", hv.Dimension("value", label=ev.stat)).opts(color="#1f77b4", line_width=1.5)
            mark = hv.VLine(float(ev.step) if ev.step is not None else np.nan).opts(
                color="red", line_dash="dashed", line_width=2, alpha=1 if ev.step is not None else 0
            )
            el = (curve * mark).opts(title=f"evidence: {what}", responsive=True, height=200)
            self._plot[:] = [pn.pane.HoloViews(el, sizing_mode="stretch_width")]
        else:
            self._plot[:] = []
        self._layout.visible = True


def apply(dashboard, ev: Evidence) -> None:
    """Choose what ``ev`` holds in ``dashboard`` (run, statistic, tab, layer / step) and show the panel."""
    store = dashboard.store
    if ev.entry is not None:
        e = ev.entry
        store.sweep = e.sweep
        store.arms = [e.arm]
        if e.seed is not None and e.seed in store.param.seeds.objects:
            store.seeds = [e.seed]
    if ev.stat is not None and ev.source == "activation" and ev.tab in (None, "activations"):
        if ev.entry is not None and ev.entry.run.store_path.is_file():
            with StoreReader(ev.entry.run.store_path) as reader:
                store.set_stats(reader.stats("activation"))
        if ev.stat in store.param.act_stat.objects:
            store.act_stat = ev.stat
    names = dashboard.tab_titles()
    if ev.tab is not None and TABS[ev.tab] in names:
        dashboard.tabs.active = names.index(TABS[ev.tab])
    view = dashboard.view(TABS[ev.tab]) if ev.tab is not None else None
    if ev.tab == "spectra" and view is not None:
        ev.notes += view.focus(layer=ev.layer, step=ev.step)
    elif ev.tab in ("parameters", "compare") and view is not None:
        view.source = "param"
        view.opened()
        if ev.stat in view.param.stat.objects:
            view.stat = ev.stat
        if ev.step is not None:
            lo, hi = view.param.step.bounds
            view.step = int(min(max(ev.step, lo), hi))
    dashboard.evidence.show(ev)


__all__ = ["KEYS", "SOURCES", "TABS", "Evidence", "EvidencePanel", "apply", "parse_query", "resolve", "series"]
