"""The Reconstructions tab: each chosen run's latest predicted amplitude / phase beside the truth, a step
slider to scrub back through its frames, and a strip of frames across the run; live while it trains.

Frames come from the run store's ``frames`` table (:meth:`fnodiag.runs.StoreReader.frames`), read
one step at a time (the slider) or a few (the strip), never the whole run. Prediction and truth
share a colour range (:func:`fnodiag.plots.frame_images`), and a flat prediction is called out in
red above its images, so a collapsed (constant) output is unmistakable.
"""
from __future__ import annotations

import time

import panel as pn
import param

from fnodiag import plots
from app.live import Tail
from app.views import LiveView

STRIP_FRAMES = 8
STRIP_EVERY_S = 2.0  # the strip re-renders at most this often while frames arrive


class RunFrames:
    """One run's frames in the tab: slider, latest / chosen frame, strip; :meth:`tick` follows new frames.

    The slider's value is a frame index; at the last frame it follows new frames as they arrive,
    moved back it stays where it was put.
    """

    def __init__(self, entry, tail: Tail):
        self.entry, self.tail = entry, tail
        self.steps: list[int] = []
        self.truth = None
        self.slider = pn.widgets.IntSlider(label=f"{entry.label}: frame", start=0, end=1, value=0, disabled=True,
                                           sizing_mode="stretch_width")
        self.info = pn.pane.Markdown("", sizing_mode="stretch_width")
        self.images = pn.pane.HoloViews(None, linked_axes=False)
        self.strip = pn.pane.HoloViews(None, linked_axes=False)
        self._strip_shown: tuple | None = None
        self._strip_at = 0.0
        self.slider.param.watch(lambda e: self.show(e.new), "value")
        self.refresh(force=True)

    def panel(self) -> pn.Column:
        return pn.Column(pn.pane.Markdown(f"#### {self.entry.label}"), self.info, self.slider, self.images,
                         pn.pane.Markdown("Across the run (amplitude of probe patch 0, one colour range):"),
                         self.strip, sizing_mode="stretch_width")

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
            self.info.object = ("No reconstruction frames yet (training not started, or frames off: "
                                "`--frame-every 0`).")
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
        amp, phase = f.amp[0], f.phase[0]
        flat = plots.is_flat(amp, None if self.truth is None else self.truth[0])
        latest = "latest" if index == len(self.steps) - 1 else "earlier"
        warn = (' <span style="color:#c0392b;font-weight:bold">⚠ constant output: the predicted amplitude is flat '
                '(one colour against the truth\'s range)</span>') if flat else ""
        self.info.object = (f"Frame {index + 1} of {len(self.steps)} ({latest}): **step {step}**, epoch "
                            f"{int(f.epoch[0])}{warn}")
        self.images.object = plots.frame_images(amp, phase, self.truth, step=step)

    def draw_strip(self, force: bool = False) -> None:
        pick = tuple(self.steps[i] for i in plots.strip_indices(len(self.steps), STRIP_FRAMES))
        now = time.monotonic()
        if pick == self._strip_shown or (not force and now - self._strip_at < STRIP_EVERY_S):
            return
        self._strip_shown, self._strip_at = pick, now
        f = self.tail.reader.frames(steps=list(pick))
        self.strip.object = plots.frame_strip(f.step, f.amp, None if self.truth is None else self.truth[0],
                                              k=STRIP_FRAMES)

    def tick(self) -> int:
        sent = self.refresh()
        if not sent and self._strip_shown is not None and len(self._strip_shown) and \
                self._strip_shown[-1] != (self.steps[-1] if self.steps else None):
            self.draw_strip()  # a throttled strip catches up once the frames stop coming
        return sent


class ReconstructionsView(LiveView):
    """Per chosen run: latest amplitude / phase beside the truth, a step slider, a strip across the run."""

    title = "Reconstructions"
    _deps = ("arms", "seeds", "sweep")

    def build(self, entries) -> list:
        out = []
        for e in entries:
            feed = RunFrames(e, self.tail(e))
            self._feeds.append(feed)
            out.append(feed.panel())
        return out
