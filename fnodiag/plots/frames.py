"""HoloViews builders for live reconstruction frames (re-exported by :mod:`fnodiag.plots.layers`).

Pure: they take the arrays of :meth:`fnodiag.runs.StoreReader.frames` / ``frame_truth`` and
return HoloViews elements. Prediction and truth of a channel share one colour range (the union of
both), so a constant output is one flat colour beside a textured truth; a frame whose spatial
spread is under :data:`FLAT_RATIO` of the truth's is titled ``CONSTANT OUTPUT``.
"""

from __future__ import annotations

from collections.abc import Sequence

import holoviews as hv
import numpy as np

from fnodiag.runs.frames import flatness

CMAPS = {"amp": "gray", "phase": "twilight"}
FLAT_RATIO = 0.05
IMAGE_SIZE = 190
STRIP_SIZE = 110


def shared_range(*images) -> tuple[float, float]:
    """``(lo, hi)`` over the finite values of every image given (``(0, 1)`` when none; widened when flat)."""
    vals = np.concatenate([np.asarray(a, np.float64).ravel() for a in images if a is not None] or [np.zeros(0)])
    vals = vals[np.isfinite(vals)]
    if not len(vals):
        return 0.0, 1.0
    lo, hi = float(vals.min()), float(vals.max())
    return (lo, hi) if hi > lo else (lo - 0.5, hi + 0.5)


def is_flat(pred, truth=None) -> bool:
    """True when ``pred`` (P, H, W) is spatially (nearly) constant: its spread < FLAT_RATIO x the truth's."""
    ref = flatness(truth) if truth is not None else 1.0
    return bool(flatness(pred) <= FLAT_RATIO * max(ref, 1e-12))


def _image(img, title: str, channel: str, clim, size: int) -> hv.Image:
    h, w = np.shape(img)
    return hv.Image(np.asarray(img, np.float32), bounds=(0, 0, w, h), kdims=["x", "y"], vdims=[channel]).opts(
        cmap=CMAPS[channel],
        clim=clim,
        title=title,
        xaxis=None,
        yaxis=None,
        width=size,
        height=size,
        colorbar=False,
        toolbar=None,
        fontsize={"title": 9},
    )


def frame_images(
    amp, phase, truth: tuple | None = None, *, step: int | None = None, patch: int = 0, size: int = IMAGE_SIZE
) -> hv.Layout:
    """One frame: predicted amplitude and phase of one probe patch next to their ground truth.

    Parameters
    ----------
    amp, phase : (P, H, W) float
        One frame of :meth:`~fnodiag.runs.StoreReader.frames` (``frames.amp[k]``).
    truth : (amp, phase), each (P, H, W) float, optional
        :meth:`~fnodiag.runs.StoreReader.frame_truth`; without it only the prediction is drawn.
    step : int, optional
        Shown in the titles.
    patch : int
        Which probe patch.

    Returns
    -------
    hv.Layout
        ``pred amp | truth amp | pred phase | truth phase`` (4 columns); each pair shares one
        colour range; a flat prediction's title says ``CONSTANT OUTPUT``.
    """
    at = f" @ step {step}" if step is not None else ""
    panels = []
    for channel, pred, ref in (
        ("amp", amp, truth[0] if truth else None),
        ("phase", phase, truth[1] if truth else None),
    ):
        p = np.asarray(pred)[patch]
        r = None if ref is None else np.asarray(ref)[patch]
        clim = shared_range(p, r)
        flat = " CONSTANT OUTPUT" if is_flat(np.asarray(pred), ref) else ""
        panels.append(_image(p, f"predicted {channel}{at}{flat}", channel, clim, size))
        if r is not None:
            panels.append(_image(r, f"truth {channel}", channel, clim, size))
    return hv.Layout(panels).cols(len(panels))


def strip_indices(n_frames: int, k: int) -> list[int]:
    """``k`` frame indices evenly spread over ``n_frames`` (first and last included), no repeats."""
    if n_frames <= 0:
        return []
    return sorted(set(np.linspace(0, n_frames - 1, min(k, n_frames)).round().astype(int).tolist()))


def frame_strip(
    steps: Sequence[int],
    frames,
    truth=None,
    *,
    channel: str = "amp",
    k: int = 8,
    patch: int = 0,
    size: int = STRIP_SIZE,
) -> hv.Layout:
    """A strip of ``k`` frames across the run (one channel of one patch), then the truth.

    Parameters
    ----------
    steps : (FRAME,) int
    frames : (FRAME, P, H, W) float
        ``frames.amp`` or ``frames.phase``.
    truth : (P, H, W) float, optional
        The same channel's ground truth; shares the strip's one colour range.
    channel : 'amp' or 'phase'

    Returns
    -------
    hv.Layout
        One row: ``step s0 | ... | step sK | truth``; flat frames are titled ``flat``.
    """
    frames = np.asarray(frames)
    pick = strip_indices(len(frames), k)
    ref = None if truth is None else np.asarray(truth)
    clim = shared_range(*(frames[i, patch] for i in pick), None if ref is None else ref[patch])
    panels = [
        _image(
            frames[i, patch],
            f"step {int(steps[i])}" + (" flat" if is_flat(frames[i], ref) else ""),
            channel,
            clim,
            size,
        )
        for i in pick
    ]
    if ref is not None:
        panels.append(_image(ref[patch], f"truth {channel}", channel, clim, size))
    if not panels:
        panels = [
            hv.Text(0, 0, "no frames yet").opts(xaxis=None, yaxis=None, width=size * 2, height=size // 2, toolbar=None)
        ]
    return hv.Layout(panels).cols(len(panels))
