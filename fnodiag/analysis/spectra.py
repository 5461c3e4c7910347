"""A run's spectral records, read once, and the slices the spectral view draws.

:func:`read_spectra` reads from a run's store what the capture's spectral statistics wrote
(:mod:`fnodiag.diagnostics.spectral_hooks`): per layer and step the share of energy in each radial band
(``activation`` ``spectral_band_<b>``), per spectral convolution the share of its input's energy above
its kept modes (``activation`` ``spectral_above``), and per spectral convolution the mean weight
magnitude per band of retained modes (``param`` ``mode_band_<b>``). The rest is pure numpy over the
:class:`SpectralRecords` it returns:

* :func:`at_step` -- a ``(LAYER, BAND)`` slice at the last logged step at or before a chosen one;
* :func:`change` -- its difference from an earlier step (positive: the band gained share);
* :func:`layer_series` -- one layer's bands over steps, ``(BAND, STEP)``.

Bands of different layers share the same normalised radial frequencies (band ``b`` of 8 holds
``b/8 <= r < (b+1)/8`` of each axis's Nyquist frequency), so a column of the layer x band map compares
like with like across layers of different grid sizes. Weight-mode bands are integer radial shells of
each convolution's own retained modes (at most 8 bands), so their count may differ between layers:
missing bands are NaN.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fnodiag.analysis.compare import layer_union, step_at
from fnodiag.diagnostics.spectra import ABOVE_STAT
from fnodiag.runs import RunDir, StoreReader

_BAND = re.compile(r"^spectral_band_(\d+)$")
_MODE = re.compile(r"^mode_band_(\d+)$")


@dataclass
class Banded:
    """A banded statistic of several layers: ``values (LAYER, BAND, STEP)`` float64, NaN where not logged."""

    layers: list[str] = field(default_factory=list)
    steps: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    values: np.ndarray = field(default_factory=lambda: np.zeros((0, 0, 0)))

    @property
    def bands(self) -> int:
        """Number of bands ``B``."""
        return int(self.values.shape[1]) if self.values.ndim == 3 else 0


@dataclass
class SpectralRecords:
    """What :func:`read_spectra` found in one run's store.

    Attributes
    ----------
    bands : Banded
        Activation band energy shares (rows sum to 1 per layer and step).
    modes : Banded
        Spectral-weight magnitude per band of retained modes.
    above : tuple
        ``(layers, steps (STEP,), values (LAYER, STEP))``: share of each spectral convolution's input
        energy above its kept modes.
    """

    bands: Banded = field(default_factory=Banded)
    modes: Banded = field(default_factory=Banded)
    above: tuple = field(default_factory=lambda: ([], np.zeros(0, np.int64), np.zeros((0, 0))))

    @property
    def empty(self) -> bool:
        """Nothing spectral recorded (capture off, or a run from before spectral statistics)."""
        return not (self.bands.layers or self.modes.layers or self.above[0])

    def layers(self) -> list[str]:
        """Every layer with a spectral record, in network order (activation layers first)."""
        return layer_union([self.bands.layers, self.above[0], self.modes.layers])

    def steps(self) -> np.ndarray:
        """Every logged step of any spectral record, sorted."""
        parts = [self.bands.steps, self.modes.steps, np.asarray(self.above[1])]
        return np.unique(np.concatenate(parts)).astype(np.int64) if any(len(p) for p in parts) else parts[0]


def _banded(reader: StoreReader, source: str, pattern: re.Pattern) -> Banded:
    """Every ``<prefix><b>`` statistic of ``source`` stacked into a :class:`Banded`."""
    names = sorted(((int(m[1]), s) for s in reader.stats(source) if (m := pattern.match(s))), key=lambda p: p[0])
    if not names:
        return Banded()
    mats = [reader.layer_matrix(source, s) for _, s in names]
    layers = layer_union([m.layers for m in mats])
    steps = np.unique(np.concatenate([m.steps for m in mats])).astype(np.int64)
    out = np.full((len(layers), names[-1][0] + 1, len(steps)), np.nan)
    for (b, _), m in zip(names, mats):
        rows = [layers.index(name) for name in m.layers]
        cols = np.searchsorted(steps, m.steps)
        out[np.ix_(rows, [b], cols)] = np.asarray(m.values)[:, None, :]
    return Banded(layers, steps, out)


def read_spectra(run) -> SpectralRecords:
    """The spectral records of a run folder (empty :class:`SpectralRecords` when it has no store).

    Parameters
    ----------
    run : RunDir, str or Path
    """
    run = run if isinstance(run, RunDir) else RunDir(Path(run))
    out = SpectralRecords()
    if not run.store_path.is_file():
        return out
    with StoreReader(run.store_path) as reader:
        out.bands = _banded(reader, "activation", _BAND)
        out.modes = _banded(reader, "param", _MODE)
        if ABOVE_STAT in reader.stats("activation"):
            m = reader.layer_matrix("activation", ABOVE_STAT)
            out.above = (m.layers, m.steps, m.values)
    return out


def at_step(banded: Banded, step: int | None) -> tuple[list[str], int | None, np.ndarray]:
    """``(layers, the step used, values (LAYER, BAND))`` at the last logged step at or before ``step``.

    ``step`` None means the last logged step, a step before the first the first one
    (:func:`~fnodiag.analysis.compare.step_at`); no steps at all give ``(layers, None, (LAYER, 0))``.
    Layers without a value at that step keep their row (NaN).
    """
    if not len(banded.steps):
        return banded.layers, None, np.zeros((len(banded.layers), banded.bands))
    used = step_at(banded.steps, None if step is None else int(step))
    j = int(np.searchsorted(banded.steps, used))
    return banded.layers, used, banded.values[:, :, j]


def change(banded: Banded, step: int | None, since: int) -> tuple[list[str], tuple, np.ndarray]:
    """``(layers, (earlier step, step), values (LAYER, BAND))``: band values at ``step`` minus at ``since``."""
    layers, now_step, now = at_step(banded, step)
    _, then_step, then = at_step(banded, since)
    return layers, (then_step, now_step), now - then


def layer_series(banded: Banded, layer: str) -> tuple[np.ndarray, np.ndarray]:
    """``(steps (STEP,), values (BAND, STEP))`` of one layer (empty arrays when it has no record)."""
    if layer not in banded.layers:
        return np.zeros(0, np.int64), np.zeros((banded.bands, 0))
    row = banded.values[banded.layers.index(layer)]
    keep = ~np.all(np.isnan(row), axis=0)
    return banded.steps[keep], row[:, keep]


__all__ = ["Banded", "SpectralRecords", "at_step", "change", "layer_series", "read_spectra"]
