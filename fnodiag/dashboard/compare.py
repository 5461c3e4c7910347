"""The *Compare* tab: chosen arms layer by layer, and where (and since when) they differ from a reference arm.

Thin over :mod:`fnodiag.analysis.compare` (seed mean / spread, log-ratio alignment) and
:mod:`fnodiag.plots.compare`: for one statistic of one source (activation, grad or param stats the
stores hold) it shows each layer's seed mean with its min–max spread for every chosen arm at a
chosen step (or the last step of a chosen epoch), and per other arm a layer x step map of
``ln(arm / reference)`` with that arm's collapse onsets and earliest collapsing layers marked. Each
plot has a CSV download of exactly the rows it draws. While a chosen run trains the view re-reads
its stores every ``REREAD_TICKS`` ticks.
"""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import panel as pn
import param
from panel.viewable import Viewer

from fnodiag.analysis import compare
from fnodiag.dashboard.store import DashboardStore
from fnodiag.plots.compare import layer_values, ratio_heatmap
from fnodiag.runs import StoreReader
from fnodiag.runs.names import TRAIN_LOSS

SOURCES = ["activation", "grad", "param"]
REREAD_TICKS = 40  # ~10 s at the dashboard's 250 ms tick


def csv_bytes(rows: list[dict], columns: list[str]) -> io.BytesIO:
    """``rows`` as CSV (header ``columns``) in a buffer for ``pn.widgets.FileDownload``."""
    buf = io.BytesIO(pd.DataFrame(rows, columns=columns).to_csv(index=False).encode())
    buf.seek(0)
    return buf


LAYER_COLUMNS = ["arm", "step", "layer", "order", "mean", "std", "min", "max", "seeds"]
RATIO_COLUMNS = ["arm", "reference", "layer", "order", "step", "log_ratio"]


class CompareView(Viewer):
    """Arms side by side per layer at one step, and log-ratio maps against a reference arm."""

    store = param.ClassSelector(class_=DashboardStore)
    source = param.Selector(default="activation", objects=SOURCES, doc="Which per-layer records.")
    stat = param.Selector(default="spatial_std", objects=["spatial_std"], label="Statistic")
    reference = param.Selector(default=None, objects=[], label="Reference arm")
    step = param.Integer(default=0, bounds=(0, 0), label="Step (last logged at or before)")
    epoch = param.Selector(default=None, objects=[None], label="... or the end of epoch")
    title = "Compare"

    def __init__(self, **params):
        super().__init__(**params)
        self.arms: dict[str, compare.ArmStats] = {}
        self.collapses: dict[str, list[dict]] = {}
        self.epochs: dict[int, int] = {}  # epoch -> its last common step
        self.ticks = 0
        self._plots = pn.Column(sizing_mode="stretch_width")
        self._note = pn.pane.Markdown("", sizing_mode="stretch_width")
        self.layer_rows: list[dict] = []
        self.ratio_rows: list[dict] = []
        self._controls = pn.Row(
            pn.widgets.Select.from_param(self.param.source, width=130),
            pn.widgets.Select.from_param(self.param.stat, width=170),
            pn.widgets.Select.from_param(self.param.reference, width=170),
            pn.widgets.IntSlider.from_param(self.param.step, width=260),
            pn.widgets.Select.from_param(self.param.epoch, width=140),
        )
        self._busy = False  # set while reload() adjusts the view's own parameters
        self.visible = False  # the dashboard sets it when the tab is shown / hidden
        self._stale = True  # the selection changed while hidden: read and draw when shown (opened())
        guard = lambda f: lambda *_: None if self._busy else f()
        self.store.param.watch(guard(self._selection_changed), ["arms", "seeds", "sweep", "log_color"])
        self.param.watch(guard(self.reload), ["source", "stat"])
        self.param.watch(guard(self.draw), ["reference", "step"])
        self.param.watch(self._on_epoch, ["epoch"])
        self._note.object = "Open this tab to compare the chosen arms."

    def _selection_changed(self) -> None:
        if self.visible:
            self.reload()
        else:
            self._stale = True

    def opened(self) -> None:
        """The tab is shown: read and draw if the selection changed since (rendering costs seconds, so a
        session does not pay for it until the tab is opened)."""
        self.visible = True
        if self._stale:
            self.reload()

    def hidden(self) -> None:
        """The tab is hidden: selection changes wait until it is shown again."""
        self.visible = False

    def close(self) -> None:
        """Nothing to close: the view opens its stores only while it reads them."""

    def __panel__(self):
        return pn.Column(self._controls, self._note, self._plots, sizing_mode="stretch_width")

    # -- data --------------------------------------------------------------------------------
    def _read(self, entries) -> dict[str, list]:
        """{arm: [LayerMatrix per seed]} of the chosen source / stat; offers the stats the stores hold."""
        matrices: dict[str, list] = {}
        stats: list[str] = []
        steps_epochs = []
        for e in entries:
            if not e.run.store_path.is_file():
                continue
            with StoreReader(e.run.store_path) as reader:
                stats += [s for s in reader.stats(self.source) if s not in stats]
                matrices.setdefault(e.arm, []).append(reader.layer_matrix(self.source, self.stat))
                r = reader.scalars(TRAIN_LOSS)
                steps_epochs.append((r.step, r.epoch))
        if stats and stats != self.param.stat.objects:
            self.param.stat.objects = stats
            if self.stat not in stats:
                self.stat = stats[0]
                return self._read(entries)
        self._steps_epochs = steps_epochs
        return matrices

    def reload(self) -> None:
        """Re-read the chosen runs' stores and redraw."""
        self._busy, self._stale = True, False  # the stat offered may change while reading
        try:
            self._reload()
        finally:
            self._busy = False
        self.draw()

    def _reload(self) -> None:
        matrices = self.store.past_damage(lambda: self._read(self.store.selected()))
        entries = self.store.selected()
        self.arms = {arm: compare.seed_stats(ms) for arm, ms in matrices.items()}
        self.arms = {a: s for a, s in self.arms.items() if s.layers}
        self.collapses = {}
        for e in entries:
            row = self.store.row(e)
            c = {k: row.get(k) for k in ("onset_step", "earliest_layer", "earliest_step")}
            if any(v is not None for v in c.values()):
                self.collapses.setdefault(e.arm, []).append(c)
        steps = np.unique(np.concatenate([a.steps for a in self.arms.values()])) if self.arms else np.zeros(0, int)
        self.epochs = {}
        for s, ep in getattr(self, "_steps_epochs", []):
            for epoch in np.unique(ep):
                last = compare.last_step_of_epoch(s, ep, int(epoch))
                at = compare.step_at(steps, last)
                if at is not None:
                    self.epochs[int(epoch)] = min(self.epochs.get(int(epoch), at), at)
        arms = list(self.arms)
        self.param.reference.objects = arms
        if self.reference not in arms:
            self.reference = arms[0] if arms else None
        lo, hi = (int(steps[0]), int(steps[-1])) if len(steps) else (0, 0)
        at_end = self.step >= self.param.step.bounds[1]
        self.param.step.bounds = (lo, max(hi, lo + 1))  # a slider needs start < end
        if at_end or not lo <= self.step <= hi:
            self.step = hi
        self.param.epoch.objects = [None, *sorted(self.epochs)]
        if self.epoch not in self.param.epoch.objects:
            self.epoch = None

    def _on_epoch(self, event) -> None:
        if event.new is not None and event.new in self.epochs:
            self.step = self.epochs[event.new]

    # -- drawing -----------------------------------------------------------------------------
    def draw(self) -> None:
        """Build the plots and their CSV rows from the data read last."""
        if not self.arms:
            self.layer_rows, self.ratio_rows = [], []
            self._note.object = (
                f"No `{self.source}/{self.stat}` records in the chosen runs yet: choose a sweep, "
                "arms and seeds on the left (live capture must be on: `--capture-every` > 0)."
            )
            self._plots[:] = []
            return
        stat, log = self.stat, self.store.log_color
        self.layer_rows = compare.layer_table(self.arms, self.step)
        bars = layer_values(
            self.arms,
            self.step,
            stat=stat,
            log=log,
            title=f"{self.source} {stat} per layer at step {self.step} (dot: seed mean; bar: min–max)",
        )
        out = [
            self._with_download(
                bars,
                "layer values",
                lambda: csv_bytes(self.layer_rows, LAYER_COLUMNS),
                f"compare-{self.source}-{stat}-step{self.step}.csv",
                360,
            )
        ]
        ref = self.arms.get(self.reference)
        self.ratio_rows = []
        notes = []
        for arm, stats in self.arms.items():
            if ref is None or arm == self.reference:
                continue
            layers, steps, values = compare.log_ratio(stats, ref)
            self.ratio_rows += [
                {"arm": arm, "reference": self.reference, **r} for r in compare.ratio_table(layers, steps, values)
            ]
            cs = self.collapses.get(arm, [])
            heat = ratio_heatmap(
                layers,
                steps,
                values,
                arm=arm,
                reference=self.reference,
                stat=stat,
                collapses=cs,
                title=f"ln({arm} / {self.reference}): {self.source} {stat}",
            )
            out.append(pn.pane.HoloViews(heat, sizing_mode="stretch_width"))
            for c in cs:
                notes.append(
                    f"**{arm}**: collapse onset step {c['onset_step']}, earliest collapsing layer "
                    f"`{c['earliest_layer']}` (step {c['earliest_step']}), marked in red."
                )
        if len(self.arms) > 1:
            out.append(
                pn.widgets.FileDownload(
                    callback=lambda: csv_bytes(self.ratio_rows, RATIO_COLUMNS),
                    filename=f"compare-logratio-{self.source}-{stat}.csv",
                    label="Download the difference maps (CSV)",
                    color="light",
                    width=320,
                )
            )
        else:
            notes.append("Choose a second arm to see where it differs from the reference.")
        self._note.object = "\n\n".join(notes)
        self._plots[:] = out

    @staticmethod
    def _with_download(element, what: str, callback, filename: str, height: int) -> pn.Column:
        return pn.Column(
            pn.pane.HoloViews(element, sizing_mode="stretch_width", height=height),
            pn.widgets.FileDownload(
                callback=callback, filename=filename, label=f"Download the {what} (CSV)", color="light", width=320
            ),
            sizing_mode="stretch_width",
        )

    def tick(self) -> int:
        """Re-read every ``REREAD_TICKS`` ticks while a chosen run trains; returns 0 (nothing streamed)."""
        self.ticks += 1
        self.opened()  # ticks reach only the view on show
        if self.ticks % REREAD_TICKS == 0 and self.store.any_running:
            self.reload()
        return 0
