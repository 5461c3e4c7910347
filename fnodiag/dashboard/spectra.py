"""The *Spectra* tab: where each layer's energy sits across Fourier bands, the chosen runs side by side.

Thin over :mod:`fnodiag.analysis.spectra` (the records the capture's spectral statistics wrote) and
:mod:`fnodiag.plots.spectra`. For each chosen run (arms x seeds, ``RUNS_PER_ROW`` a row, as the other
tabs) it draws:

1. the layer x band map of the share of energy per radial band at the chosen step (and, with *change
   since*, its difference from an earlier step);
2. the chosen layer's band shares over steps (the chosen step marked);
3. each spectral convolution's share of input energy above the modes it keeps, over steps;
4. the spectral weights' mean magnitude per band of retained modes at the chosen step.

Like the Compare tab it reads only while shown, and re-reads every ``REREAD_TICKS`` ticks while a chosen
run trains. :meth:`SpectraView.focus` (an evidence link with ``tab=spectra``) chooses the layer and step.
"""

from __future__ import annotations

import numpy as np
import panel as pn
import param
from panel.viewable import Viewer

from fnodiag.analysis.spectra import SpectralRecords, at_step, change, layer_series, read_spectra
from fnodiag.dashboard.store import DashboardStore
from fnodiag.plots.spectra import above_lines, band_heatmap, band_lines, mode_heatmap

REREAD_TICKS = 40  # ~10 s at the dashboard's 250 ms tick
RUNS_PER_ROW = 2


class SpectraView(Viewer):
    """Band energies per layer at a step, one layer's bands over steps, energy above kept modes, weight modes."""

    store = param.ClassSelector(class_=DashboardStore)
    layer = param.Selector(default=None, objects=[], label="Layer")
    step = param.Integer(default=0, bounds=(0, 1), label="Step (last logged at or before)")
    compare = param.Boolean(default=False, label="Show the change since step")
    since = param.Integer(default=0, bounds=(0, 1), label="... since step")
    title = "Spectra"

    def __init__(self, **params):
        super().__init__(**params)
        self.records: dict[str, SpectralRecords] = {}
        self.ticks = 0
        self.visible = False
        self._stale = True
        self._busy = False
        self._at_end = True  # nothing read yet: the first read shows the last step
        self._plots = pn.Column(sizing_mode="stretch_width")
        self._note = pn.pane.Markdown("Open this tab to see the chosen runs' spectra.", sizing_mode="stretch_width")
        self._controls = pn.Row(
            pn.widgets.Select.from_param(self.param.layer, width=220),
            pn.widgets.IntSlider.from_param(self.param.step, width=260),
            pn.widgets.Checkbox.from_param(self.param.compare, width=190),
            pn.widgets.IntSlider.from_param(self.param.since, width=260),
        )
        guard = lambda f: lambda *_: None if self._busy else f()
        self.store.param.watch(guard(self._selection_changed), ["arms", "seeds", "sweep", "log_color"])
        self.param.watch(guard(self.draw), ["layer", "step", "compare", "since"])

    def __panel__(self):
        return pn.Column(self._controls, self._note, self._plots, sizing_mode="stretch_width")

    def _selection_changed(self) -> None:
        if self.visible:
            self.reload()
        else:
            self._stale = True

    def opened(self) -> None:
        """The tab is shown: read and draw if the selection changed since."""
        self.visible = True
        if self._stale:
            self.reload()

    def hidden(self) -> None:
        """The tab is hidden: selection changes wait until it is shown again."""
        self.visible = False

    def close(self) -> None:
        """Nothing to close: the view opens its run's store only while it reads it."""

    # -- data --------------------------------------------------------------------------------
    def reload(self) -> None:
        """Re-read the chosen runs' spectral records, keep the layer / step choices where they still exist, draw."""
        self._stale = False
        self.records = self.store.past_damage(lambda: {e.label: read_spectra(e.run) for e in self.store.selected()})
        self._busy = True
        try:
            layers = list(dict.fromkeys(n for r in self.records.values() for n in r.layers()))
            self.param.layer.objects = layers
            if self.layer not in layers:
                self.layer = layers[0] if layers else None
            steps = [r.steps() for r in self.records.values() if len(r.steps())]
            lo, hi = (int(min(s[0] for s in steps)), int(max(s[-1] for s in steps))) if steps else (0, 0)
            at_end = self._at_end or self.step >= self.param.step.bounds[1]  # first read, or following the end
            self.param.step.bounds = (lo, max(hi, lo + 1))  # a slider needs start < end
            self.param.since.bounds = (lo, max(hi, lo + 1))
            if at_end or not lo <= self.step <= hi:
                self.step = hi
            if not lo <= self.since <= hi:
                self.since = lo
            self._at_end = not steps  # until some run has steps, the first that come are shown at the end
        finally:
            self._busy = False
        self.draw()

    def focus(self, *, layer: str | None = None, step: int | None = None) -> list[str]:
        """Choose ``layer`` and ``step`` (an evidence link); returns notes for values the records do not hold."""
        self.opened()
        notes = []
        self._busy = True
        try:
            if layer is not None:
                if layer in self.param.layer.objects:
                    self.layer = layer
                else:
                    notes.append(f"layer `{layer}` has no spectral records in the chosen runs")
            if step is not None:
                lo, hi = self.param.step.bounds
                self.step = int(min(max(step, lo), hi))
        finally:
            self._busy = False
        self.draw()
        return notes

    # -- drawing -----------------------------------------------------------------------------
    def draw(self) -> None:
        """Build the plots of every chosen run from the records read last."""
        recs = {label: r for label, r in self.records.items() if not r.empty}
        if not recs:
            self._plots[:] = []
            self._note.object = (
                "No spectral records in the chosen runs: choose a sweep, arms and seeds on the left (live capture "
                "must be on, `--capture-every` > 0, with spectra; runs recorded before spectral statistics have none)."
            )
            return
        log = self.store.log_color
        rows: dict[str, list] = {"bands": [], "change": [], "layer": [], "above": [], "modes": []}
        for label, r in recs.items():
            layers, used, values = at_step(r.bands, self.step)
            rows["bands"].append(
                band_heatmap(layers, values, log=log, title=f"{label}: share of energy per band at step {used}")
            )
            if self.compare:
                layers, (then, now), diff = change(r.bands, self.step, self.since)
                rows["change"].append(
                    band_heatmap(layers, diff, change=True, title=f"{label}: change of share, step {then} to {now}")
                )
            steps, series = layer_series(r.bands, self.layer) if self.layer else (np.zeros(0), np.zeros((0, 0)))
            rows["layer"].append(
                band_lines(
                    steps,
                    series,
                    layer=self.layer or "",
                    log=log,
                    step=used,
                    title=f"{label}: {self.layer} share of energy per band",
                )  # fmt: skip
            )
            if r.above[0]:
                rows["above"].append(
                    above_lines(*r.above, step=used, title=f"{label}: share of input energy above the kept modes")
                )
            if r.modes.layers:
                m_layers, m_used, m_values = at_step(r.modes, self.step)
                rows["modes"].append(
                    mode_heatmap(
                        m_layers,
                        m_values,
                        log=log,
                        title=f"{label}: spectral weights, mean |w| per mode band at step {m_used}",
                    )  # fmt: skip
                )
        out = []
        for key in ("bands", "change", "layer", "above", "modes"):
            elements = rows[key]
            for k in range(0, len(elements), RUNS_PER_ROW):
                out.append(
                    pn.Row(
                        *[pn.pane.HoloViews(el, sizing_mode="stretch_width") for el in elements[k : k + RUNS_PER_ROW]],
                        sizing_mode="stretch_width",
                    )
                )
        missing = [label for label, r in self.records.items() if r.empty]
        self._note.object = (
            "Band *b* of 8 holds the radial frequencies from *b*/8 to (*b*+1)/8 of each axis's Nyquist frequency "
            "(band 0: the lowest). " + (f"No spectral records yet: {', '.join(missing)}." if missing else "")
        )
        self._plots[:] = out

    def tick(self) -> int:
        """Re-read every ``REREAD_TICKS`` ticks while a chosen run trains; returns 0 (nothing streamed)."""
        self.ticks += 1
        self.opened()
        if self.ticks % REREAD_TICKS == 0 and self.store.any_running:
            self.reload()
        return 0


__all__ = ["REREAD_TICKS", "SpectraView"]
