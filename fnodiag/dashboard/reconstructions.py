"""The Reconstructions tab: each chosen run's latest predicted amplitude / phase beside the truth, a step
slider to scrub back through its frames, and a strip of frames across the run; live while it trains.

Frames come from the run store's ``frames`` table (:meth:`fnodiag.runs.StoreReader.frames`), read
one step at a time (the slider) or a few (the strip), never the whole run. Prediction and truth
share a colour range (:func:`fnodiag.plots.layers.frame_images`), and a flat prediction is called out in
red above its images, so a collapsed (constant) output is unmistakable.
"""

from __future__ import annotations

import time

import numpy as np
import panel as pn
from bokeh.layouts import row
from bokeh.models import ColumnDataSource, LinearColorMapper
from bokeh.plotting import figure
from holoviews.plotting.util import process_cmap

from fnodiag import plots
from fnodiag.dashboard.live import Tail
from fnodiag.dashboard.views import LiveView
from fnodiag.plots.frames import CMAPS

PATCH = 0  # the probe patch shown
IMAGE_SIZE = 200
STRIP_SIZE = 105
STRIP_FRAMES = 8
STRIP_EVERY_S = 2.0  # the strip re-renders at most this often while frames arrive


class FrameFigure:
    """One Bokeh image figure drawn once; :meth:`set` replaces its pixels, colour range and title in place
    (only the new image travels to the browser, no model is rebuilt)."""

    def __init__(self, channel: str, size: int):
        palette = process_cmap(CMAPS[channel], 256)
        self.mapper = LinearColorMapper(palette=palette, low=0.0, high=1.0)
        self.source = ColumnDataSource({"image": [np.zeros((2, 2), np.float32)]})
        self.figure = figure(
            width=size,
            height=size,
            title="",
            tools="",
            toolbar_location=None,
            x_range=(0, 1),
            y_range=(0, 1),
            min_border=2,
        )
        self.figure.image(image="image", x=0, y=0, dw=1, dh=1, source=self.source, color_mapper=self.mapper)
        self.figure.axis.visible = False
        self.figure.grid.visible = False
        self.figure.title.text_font_size = "9pt"

    def set(self, image, clim: tuple[float, float], title: str) -> None:
        self.source.data = {"image": [np.asarray(image, np.float32)[::-1]]}  # Bokeh draws row 0 at the bottom
        self.mapper.update(low=float(clim[0]), high=float(clim[1]))
        self.figure.title.text = title


class RunFrames:
    """One run's frames in the tab: slider, latest / chosen frame, strip; :meth:`tick` follows new frames.

    The slider's value is a frame index; at the last frame it follows new frames as they arrive,
    moved back it stays where it was put. Images are Bokeh figures drawn once and updated in place;
    colour ranges and the flat-output call are those of :func:`fnodiag.plots.layers.frame_images` /
    :func:`~fnodiag.plots.layers.frame_strip` (prediction and truth share one range per channel).
    """

    def __init__(self, entry, tail: Tail):
        self.entry, self.tail = entry, tail
        self.steps: list[int] = []
        self.truth = None
        self.slider = pn.widgets.IntSlider(
            label=f"{entry.label}: frame", start=0, end=1, value=0, disabled=True, sizing_mode="stretch_width"
        )
        self.info = pn.pane.Markdown("", sizing_mode="stretch_width")
        self.big = {
            k: FrameFigure(k.split()[-1], IMAGE_SIZE) for k in ("pred amp", "truth amp", "pred phase", "truth phase")
        }
        self.small = [FrameFigure("amp", STRIP_SIZE) for _ in range(STRIP_FRAMES + 1)]
        self._strip_shown: tuple | None = None
        self._strip_at = 0.0
        self.slider.param.watch(lambda e: self.show(e.new), "value")
        self.refresh(force=True)

    def panel(self) -> pn.Column:
        return pn.Column(
            pn.pane.Markdown(f"#### {self.entry.label}"),
            self.info,
            self.slider,
            pn.pane.Bokeh(row(*[f.figure for f in self.big.values()])),
            pn.pane.Markdown("Across the run (amplitude of probe patch 0, one colour range; last: the truth):"),
            pn.pane.Bokeh(row(*[f.figure for f in self.small])),
            sizing_mode="stretch_width",
        )

    def refresh(self, force: bool = False) -> int:
        """Pick up new frames; returns how many arrived."""
        reader = self.tail.reader
        if reader is None:
            if force:
                self.info.object = "No store yet (training not started)."
            return 0
        if self.truth is None:
            self.truth = reader.frame_truth()
        steps = reader.frame_steps().tolist()
        new = len(steps) - len(self.steps)
        if steps == self.steps and not force:
            return 0
        follow = self.slider.value >= len(self.steps) - 1
        self.steps = steps
        if not steps:
            self.info.object = "No reconstruction frames yet (training not started, or frames off: `--frame-every 0`)."
            return 0
        self.slider.param.update(end=max(1, len(steps) - 1), disabled=len(steps) < 2)
        if follow and self.slider.value != len(steps) - 1:
            self.slider.value = len(steps) - 1  # the watcher draws it
        else:
            self.show(self.slider.value)
        self.draw_strip(force)
        return max(new, 0)

    def show(self, index: int) -> None:
        """Draw frame ``index`` (the slider's value) beside the truth."""
        if not self.steps:
            return
        index = min(max(int(index), 0), len(self.steps) - 1)
        step = self.steps[index]
        f = self.tail.reader.frames(steps=[step])
        if not len(f):
            return
        if "amp" not in f.channels or "phase" not in f.channels:  # a watched model's own images (fnodiag.watch frames=)
            self.info.object = f"Frames of {', '.join(f.names)} at step {step}: not amplitude / phase, not drawn here."
            return
        truth = self.truth
        flat_amp = plots.is_flat(f.amp[0], None if truth is None else truth[0])
        for k, (channel, pred) in enumerate((("amp", f.amp[0]), ("phase", f.phase[0]))):
            ref = None if truth is None else truth[k]
            clim = plots.shared_range(pred[PATCH], None if ref is None else ref[PATCH])
            flat = " CONSTANT OUTPUT" if plots.is_flat(pred, ref) else ""
            self.big[f"pred {channel}"].set(pred[PATCH], clim, f"predicted {channel} @ step {step}{flat}")
            if ref is not None:
                self.big[f"truth {channel}"].set(ref[PATCH], clim, f"truth {channel}")
        latest = "latest" if index == len(self.steps) - 1 else "earlier"
        warn = (
            (
                ' <span style="color:#c0392b;font-weight:bold">⚠ constant output: the predicted amplitude is flat '
                "(one colour against the truth's range)</span>"
            )
            if flat_amp
            else ""
        )
        self.info.object = (
            f"Frame {index + 1} of {len(self.steps)} ({latest}): **step {step}**, epoch {int(f.epoch[0])}{warn}"
        )

    def draw_strip(self, force: bool = False) -> None:
        pick = tuple(self.steps[i] for i in plots.strip_indices(len(self.steps), STRIP_FRAMES))
        now = time.monotonic()
        if pick == self._strip_shown or (not force and now - self._strip_at < STRIP_EVERY_S):
            return
        self._strip_shown, self._strip_at = pick, now
        f = self.tail.reader.frames(steps=list(pick))
        if "amp" not in f.channels:
            return
        ref = None if self.truth is None else self.truth[0]
        clim = plots.shared_range(*(a[PATCH] for a in f.amp), None if ref is None else ref[PATCH])
        shown = [
            (a[PATCH], f"step {int(s)}" + (" flat" if plots.is_flat(a, ref) else "")) for s, a in zip(f.step, f.amp)
        ]
        if ref is not None:
            shown.append((ref[PATCH], "truth amp"))
        for fig, (img, title) in zip(self.small, shown):
            fig.set(img, clim, title)
            fig.figure.visible = True
        for fig in self.small[len(shown) :]:
            fig.figure.visible = False

    def tick(self) -> int:
        sent = self.refresh()
        if (
            not sent
            and self._strip_shown is not None
            and len(self._strip_shown)
            and self._strip_shown[-1] != (self.steps[-1] if self.steps else None)
        ):
            self.draw_strip()  # a throttled strip catches up once the frames stop coming
        return sent


class ReconstructionsView(LiveView):
    """Per chosen run: latest amplitude / phase beside the truth, a step slider, a strip across the run."""

    title = "Reconstructions"
    paged = True
    _deps = ("arms", "seeds", "sweep")

    def build(self, entries) -> list:
        out = []
        for e in self.page(entries):
            feed = RunFrames(e, self.tail(e))
            self._feeds.append(feed)
            out.append(feed.panel())
        return out
