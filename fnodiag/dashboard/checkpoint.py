"""Checkpoint view: capture per-layer statistics of a saved checkpoint on demand, in a worker thread.

:func:`capture_checkpoint` (no Panel) captures through
:func:`fnodiag.diagnostics.capture.capture_checkpoint` (torch only, never Lightning) on the first test
patches of the run's dataset (read from the cache the run trained on; the server never simulates or
writes a dataset: a missing one is refused with a message) and returns one row per layer.
The view runs it through ``run_in_executor`` from an async callback, so the page and the live plots stay responsive.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import pandas as pd
import panel as pn
import param
from panel.viewable import Viewer

from fnodiag import plots
from fnodiag.dashboard.catalog import RunEntry, checkpoint_path, inside
from fnodiag.dashboard.store import DashboardStore
from fnodiag.diagnostics import capture  # torch only, never Lightning

_EXECUTOR = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fnodiag-capture")


def capture_checkpoint(root, entry: RunEntry, name: str, *, samples: int = 4) -> pd.DataFrame:
    """Per-layer activation statistics of checkpoint ``name`` of ``entry`` over ``samples`` test patches.

    Returns
    -------
    DataFrame, one row per layer (network order), one column per statistic.
    """
    path = checkpoint_path(root, entry, name)
    try:  # the cache the run trained on, read only: the server never simulates or writes a dataset
        report = capture.capture_checkpoint(
            path, max_samples=samples, batch_size=samples, cache_dir=entry.run.dataset_cache(), simulate=False
        )
    except capture.DatasetMissing as exc:
        raise FileNotFoundError(
            f"the run's dataset {str(exc.path)!r} is missing and the dashboard "
            f"does not simulate: run `fnodiag capture --checkpoint {path} --output DIR` "
            "(it recreates the dataset there), then capture again"
        ) from None
    frame = pd.DataFrame.from_dict(report["per_layer"], orient="index")
    frame.index.name = "layer"
    return frame.reset_index()


class CheckpointView(Viewer):
    """Run + checkpoint choice, a Capture button, the per-layer table and bar chart, and ``recon.png``."""

    store = param.ClassSelector(class_=DashboardStore)
    run_label = param.Selector(default=None, objects=[], label="Run")
    samples = param.Integer(default=4, bounds=(1, 64), label="Test patches")
    stat = param.Selector(default="spatial_std", objects=["spatial_std"], label="Statistic")
    title = "Checkpoint"

    def __init__(self, **params):
        super().__init__(**params)
        self.result: pd.DataFrame | None = None
        self.button = pn.widgets.Button(label="Capture", color="primary", align="end")
        self.button.on_click(self._on_click)
        self.status = pn.pane.Markdown("Choose a run and a checkpoint, then **Capture** (runs in the background).")
        self.table = pn.widgets.Tabulator(
            pd.DataFrame(), disabled=True, show_index=False, height=320, sizing_mode="stretch_width"
        )
        self.bars = pn.pane.HoloViews(sizing_mode="stretch_width", height=320)
        self.image = pn.pane.PNG(None, sizing_mode="scale_width", max_width=900)
        self.store.param.watch(lambda *_: self._on_selection(), ["arms", "seeds", "sweep"])
        self._on_selection()
        self._show_recon()

    def _entries(self) -> dict[str, RunEntry]:
        return {e.label: e for e in self.store.selected()}

    def _on_selection(self) -> None:
        labels = list(self._entries())
        self.param.run_label.objects = labels
        if self.run_label not in labels:
            self.run_label = labels[0] if labels else None

    @param.depends("run_label", watch=True)
    def _show_recon(self) -> None:
        entry = self._entries().get(self.run_label)
        path = None
        if entry is not None:
            p = inside(self.store.root, entry.run.recon_path)
            path = str(p) if p.is_file() else None
        self.image.object = path

    @param.depends("stat", watch=True)
    def _draw(self) -> None:
        if self.result is None or self.stat not in self.result:
            return
        f = self.result
        self.bars.object = plots.layer_bars(
            f["layer"],
            f[self.stat],
            stat=self.stat,
            log=self.store.log_color,
            title=f"{self.run_label} {self.store.checkpoint}: {self.stat} per layer",
        )

    async def _on_click(self, _event=None) -> None:
        entry = self._entries().get(self.run_label)
        if entry is None:
            self.status.object = "No run selected."
            return
        name, samples = self.store.checkpoint, self.samples
        self.button.loading = True
        self.status.object = f"Capturing `{name}` of **{entry.label}** over {samples} test patches..."
        try:
            loop = asyncio.get_running_loop()
            frame = await loop.run_in_executor(
                _EXECUTOR, lambda: capture_checkpoint(self.store.root, entry, name, samples=samples)
            )
        except Exception as exc:  # shown to the user; the page keeps working
            self.status.object = f"Capture failed: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
            return
        finally:
            self.button.loading = False
        self.show(frame, entry.label, name)

    def show(self, frame: pd.DataFrame, label: str, name: str) -> None:
        """Display a capture result (``capture_checkpoint`` output)."""
        self.result = frame
        stats = [c for c in frame.columns if c != "layer"]
        self.param.stat.objects = stats
        self.table.value = frame.round(6)
        self.status.object = f"**{label}** checkpoint `{name}`: {len(frame)} layers captured."
        if self.stat not in stats:
            self.stat = "spatial_std" if "spatial_std" in stats else stats[0]
        else:
            self._draw()

    def __panel__(self):
        controls = pn.Row(
            pn.widgets.Select.from_param(self.param.run_label, width=280),
            pn.widgets.Select.from_param(self.store.param.checkpoint, width=180),
            pn.widgets.IntInput.from_param(self.param.samples, width=120),
            pn.widgets.Select.from_param(self.param.stat, width=180),
            self.button,
        )
        return pn.Column(
            controls,
            self.status,
            pn.Row(self.bars, self.table, sizing_mode="stretch_width"),
            pn.pane.Markdown("### Reconstruction (`recon.png`)"),
            self.image,
            sizing_mode="stretch_width",
        )
