"""The *Findings* tab: what went wrong in each chosen run, ranked, each with a link to its evidence.

Thin over :func:`fnodiag.analysis.findings.findings_from_run` (every detector, the settings audit
included), with links naming runs relative to the served folder. One table per chosen run: severity,
kind, layer, step window, the finding's sentence, and an *evidence* link (the finding's
``/app?run=&tab=&stat=&layer=&step=`` query, written relative to the page so a server behind a prefix
still resolves it): following it opens the page with that run, tab, statistic, layer and step chosen
(:mod:`fnodiag.dashboard.evidence`).

Live: while the tab is shown, every ``CHECK_TICKS`` ticks the view compares each chosen run's record
files (store and its write-ahead log, status, collapse report, metrics) with what it last read, and
recomputes the findings of the runs whose records changed; nothing is read while the tab is hidden.
"""

from __future__ import annotations

import html

import panel as pn
import param
from panel.viewable import Viewer

from fnodiag.analysis.findings import findings_from_run, window
from fnodiag.dashboard.store import DashboardStore

CHECK_TICKS = 8  # ~2 s at the dashboard's 250 ms tick
SEVERITY_COLORS = {"critical": "#c0392b", "error": "#d35400", "warning": "#b7950b"}
LINK_CLASS = "fnodiag-evidence-link"


def signature(run) -> tuple:
    """``(mtime_ns, size)`` of each record file findings are read from (None for a file not there)."""
    paths = [run.store_path, run.store_path.with_name(run.store_path.name + "-wal"), run.path / "status.json"]
    paths += [run.collapse_path, run.path / "metrics.json", run.path / "effective_config.json"]
    out = []
    for p in paths:
        try:
            st = p.stat()
            out.append((st.st_mtime_ns, st.st_size))
        except OSError:
            out.append(None)
    return tuple(out)


def page_link(link: str | None) -> str | None:
    """``/app?run=...`` as a link relative to the page (``?run=...``)."""
    if not link:
        return None
    return "?" + link.partition("?")[2]


def findings_html(found) -> str:
    """An HTML table of findings (escaped), one row each, the evidence link in the last column."""
    if not found:
        return "<p>No findings: nothing in this run's records left its usual range.</p>"
    rows = []
    for i, f in enumerate(found, 1):
        color = SEVERITY_COLORS.get(f.severity, "#444")
        link = page_link(f.link)
        cell = (
            f'<a class="{LINK_CLASS}" href="{html.escape(link, quote=True)}" target="_self">evidence</a>'
            if link
            else ""
        )
        rows.append(
            "<tr>"
            f"<td>{i}</td>"
            f'<td style="color:{color};font-weight:bold">{f.severity}</td>'
            f"<td>{html.escape(f.kind)}</td>"
            f"<td><code>{html.escape(f.layer or '')}</code></td>"
            f"<td>{html.escape(window(f))}</td>"
            f"<td>{html.escape(f.sentence)}</td>"
            f"<td>{cell}</td>"
            "</tr>"
        )
    head = "".join(f"<th>{h}</th>" for h in ("#", "severity", "finding", "layer", "when", "what happened", ""))
    return (
        '<table class="fnodiag-findings" style="border-collapse:collapse;width:100%">'
        f'<thead style="text-align:left">{head}</thead><tbody>{"".join(rows)}</tbody></table>'
    )


class FindingsView(Viewer):
    """Ranked findings of each chosen run, with links to their evidence, refreshed while runs write."""

    store = param.ClassSelector(class_=DashboardStore)
    title = "Findings"

    def __init__(self, **params):
        super().__init__(**params)
        self.found: dict[str, list] = {}  # run label -> its findings, as last computed
        self._seen: dict[str, tuple] = {}  # run label -> signature() when last computed
        self._errors: dict[str, str] = {}
        self.ticks = 0
        self.visible = False  # the dashboard sets it when the tab is shown / hidden
        self._stale = True
        self._body = pn.Column(sizing_mode="stretch_width")
        self._note = pn.pane.Markdown("Open this tab to see what went wrong in the chosen runs.")
        self.store.param.watch(lambda *_: self._selection_changed(), ["arms", "seeds", "sweep"])

    def __panel__(self):
        return pn.Column(self._note, self._body, sizing_mode="stretch_width")

    def _selection_changed(self) -> None:
        self.found, self._seen, self._errors = {}, {}, {}
        if self.visible:
            self.refresh()
        else:
            self._stale = True

    def opened(self) -> None:
        """The tab is shown: compute what the selection needs (nothing is read while it is hidden)."""
        self.visible = True
        if self._stale:
            self.refresh()

    def hidden(self) -> None:
        """The tab is hidden: selection changes wait until it is shown again."""
        self.visible = False

    def close(self) -> None:
        """Nothing to close: the view opens its run's store only while it reads it."""

    def refresh(self) -> bool:
        """Recompute the findings of the chosen runs whose records changed; redraw when any did.

        Returns
        -------
        bool
            Whether anything was recomputed.
        """
        self._stale = False
        entries = self.store.selected()
        changed = False
        for e in entries:
            sig = signature(e.run)
            if self._seen.get(e.label) == sig and e.label in self.found:
                continue
            self._seen[e.label] = sig
            changed = True
            try:
                self.found[e.label] = findings_from_run(e.run, root=self.store.root)
                self._errors.pop(e.label, None)
            except Exception as exc:  # a run being written or a damaged file: say so, keep the tab working
                self.found[e.label] = []
                self._errors[e.label] = f"{type(exc).__name__}: {exc}".splitlines()[0]
        labels = [e.label for e in entries]
        if changed or list(self.found) != labels:
            self.found = {k: self.found[k] for k in labels if k in self.found}
            self.draw(labels)
        return changed

    def draw(self, labels: list[str]) -> None:
        """One section per chosen run: its findings table (or why there is none)."""
        if not labels:
            self._note.object = "Choose a sweep and at least one arm and seed on the left."
            self._body[:] = []
            return
        total = sum(len(v) for v in self.found.values())
        self._note.object = (
            f"{total} finding{'s' * (total != 1)} in {len(labels)} run{'s' * (len(labels) != 1)}, ranked: critical, "
            "error, warning, then earliest first. *evidence* opens the tab, statistic, layer and step that show it."
        )
        out = []
        for label in labels:
            error = self._errors.get(label)
            body = f"<p>Could not read this run's records: {html.escape(error)}</p>" if error else None
            out.append(pn.pane.Markdown(f"### {label}", margin=(10, 5, 0, 5)))
            out.append(pn.pane.HTML(body or findings_html(self.found.get(label, [])), sizing_mode="stretch_width"))
        self._body[:] = out

    def tick(self) -> int:
        """While shown: every ``CHECK_TICKS`` ticks, recompute the runs whose records changed; returns 0."""
        self.ticks += 1
        self.opened()
        if self.ticks % CHECK_TICKS == 0:
            self.refresh()
        return 0


__all__ = ["CHECK_TICKS", "FindingsView", "findings_html", "page_link", "signature"]
