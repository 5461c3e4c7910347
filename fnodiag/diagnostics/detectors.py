"""The findings detectors: pure functions of a run's records, each returning a list of ``Finding``.

Records are numpy arrays as :class:`~fnodiag.runs.StoreReader` returns them: a per-layer statistic is
``(layers, steps, values)`` with ``layers`` a list of LAYER names (upstream first), ``steps (STEP,) int``
and ``values (LAYER, STEP) float`` (NaN where nothing was logged); a scalar is ``(steps, values)``
``(ROW,)``. :class:`RunRecords` holds what :func:`detect` needs; :mod:`fnodiag.analysis.findings` reads it
from a run folder. The ranking is in :mod:`fnodiag.diagnostics.findings`, the "left its usual range"
rule and its detectors in :mod:`fnodiag.diagnostics.regime`; each detector's docstring says what it
fires on.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

import numpy as np

from fnodiag.diagnostics.collapse import DEFAULTS as COLLAPSE
from fnodiag.diagnostics.collapse import gradient_health
from fnodiag.diagnostics.findings import Finding, align, finding, fmt, rank, times, trailing_start
from fnodiag.diagnostics.regime import (
    DRIFT_STATS,
    REGIME_STATS,
    departure,
    drift_findings,
    regime_findings,
    spectral_findings,
    update_ratio_findings,
)
from fnodiag.diagnostics.spectra import ABOVE_STAT
from fnodiag.runs.names import LR

#: Per-layer statistics that are ratios, infinite by construction when their denominator is 0.
RATIO_STATS = ("update_ratio", "spectral_local_ratio", "low_freq_ratio")
DEAD_FRACTION = 0.9  # dead units: at least this share of a layer's activations at ~0 ...


@dataclass
class RunRecords:
    """A run's records for :func:`detect`.

    Attributes
    ----------
    layers : dict
        ``{(source, stat): (layers, steps, values)}`` per-layer statistics.
    scalars : dict
        ``{name: (steps, values)}`` per-step scalars.
    collapse : dict or None
        The run's :func:`~fnodiag.diagnostics.collapse.detect_collapse` report.
    """

    layers: dict = field(default_factory=dict)
    scalars: dict = field(default_factory=dict)
    collapse: dict | None = None

    def matrix(self, source: str | None, stat: str) -> tuple[list[str], np.ndarray, np.ndarray]:
        """``(layers, steps, values)`` of ``stat`` (from ``source``, or the first source that has it); empty if none."""
        for (src, st), m in self.layers.items():
            if st == stat and (source is None or src == source) and len(m[0]):
                return m
        return [], np.zeros(0, np.int64), np.zeros((0, 0))

    def order(self) -> list[str]:
        """The run's layer order, upstream first: the activation layers as logged (every layer of every
        source when there are none); modules and parameters rank with their layer (:func:`position`)."""
        act = {name: None for (src, _), m in self.layers.items() if src == "activation" for name in m[0]}
        return list(act) or list({name: None for m in self.layers.values() for name in m[0]})


# --------------------------------------------------------------------------- critical


def collapse_findings(report: Mapping | None, order=()) -> list[Finding]:
    """The output collapse of a :func:`~fnodiag.diagnostics.collapse.detect_collapse` report, as it decided it.

    One finding when ``report["verdict"] == "collapsed"``: the layer is the earliest collapsing layer (the
    output layer without one), the window runs from that layer's onset to the output's, the size is the
    output ``spatial_std`` last / peak. A verdict from the last metrics alone has no step window.
    """
    if not report or report.get("verdict") != "collapsed":
        return []
    layer = report.get("earliest_layer") or report.get("output_layer")
    onset = report.get("onset_step")
    first = report.get("earliest_step") if report.get("earliest_layer") else onset
    std = report.get("output_spatial_std") or {}
    peak, last_std = std.get("peak"), std.get("last")
    size = last_std / peak if onset is not None and peak and last_std is not None else None
    after = " after it had learned" if report.get("learned_then_collapsed") else ""
    if onset is not None:
        sentence = (
            f"The output became spatially constant{after}: its spatial std fell {times(size)} from its peak "
            f"and stayed there; the collapse began at step {first} in {layer} and reached the output at step {onset}."
        )
    else:
        sentence = (
            f"The run's last metrics score like a spatially constant output{after} (no dated onset in its records)."
        )
    position = list(order).index(layer) if layer in order else 0
    return [
        finding("collapse", sentence, layer, first, onset, "spatial_std", "activation", size, position, **{
            "output_layer": report.get("output_layer"),
            "learned_then_collapsed": report.get("learned_then_collapsed"),
            "per_layer_onset": report.get("per_layer_onset"),
        })
    ]  # fmt: skip


def nonfinite_findings(records: RunRecords) -> list[Finding]:
    """Where non-finite values first appeared: one finding, or none.

    Looked at: the activation ``nonfinite`` count (> 0), ``+-inf`` in any per-layer statistic except the
    ratios of :data:`RATIO_STATS` (NaN there means "not logged"), and NaN or ``+-inf`` in any per-step
    scalar. The finding names the first step and the first place (upstream layers first, then modules,
    parameters, scalars); ``size`` is the number of series that ever hold non-finite values.
    """
    series = []  # (first step, last step, rank, layer, stat, source): one per series holding any
    rank_of = {"activation": 0, "grad": 1, "param": 2}
    for (source, stat), (layers, steps, values) in records.layers.items():
        if stat in RATIO_STATS or not len(layers):
            continue
        v = np.asarray(values, dtype=np.float64)
        bad = v > 0 if stat == "nonfinite" else np.isinf(v)
        for i in np.flatnonzero(bad.any(axis=1)):
            hit = np.flatnonzero(bad[i])
            series.append(
                (int(steps[hit[0]]), int(steps[hit[-1]]), (rank_of.get(source, 3), int(i)), layers[i], stat, source)
            )
    for name, (steps, values) in records.scalars.items():
        hit = np.flatnonzero(~np.isfinite(np.asarray(values, dtype=np.float64)))
        if len(hit):
            series.append((int(steps[hit[0]]), int(steps[hit[-1]]), (4, 0), None, name, "scalar"))
    if not series:
        return []
    series.sort(key=lambda p: (p[0], p[2]))
    step, _, _, layer, stat, source = series[0]
    last = max(p[1] for p in series)
    at_first = [f"{p[5]}/{p[3] + '/' if p[3] else ''}{p[4]}" for p in series if p[0] == step]
    where = f"{layer} ({stat})" if layer else stat
    sentence = (
        f"Non-finite values first appeared at step {step} in {where}; "
        f"{len(series)} series hold non-finite values by step {last}."
    )
    return [
        finding("nonfinite", sentence, layer, step, last, stat, source, float(len(series)), 0,
                places_at_first=at_first[:20])
    ]  # fmt: skip


# --------------------------------------------------------------------------- error


def dead_findings(layers, steps, min_channel_std, *, std=None, frac_near_zero=None, min_points=2) -> list[Finding]:
    """Layers with a dead channel, or mostly dead units, from some capture to the last.

    * ``dead_channels``: ``min_channel_std <= atol + rtol * std`` (the collapse detector's thresholds,
      ``std`` the layer's overall std at that capture, 0 when unknown) for good, >= ``min_points`` captures;
    * ``dead_units``: ``frac_near_zero >= DEAD_FRACTION`` for good, where its median before was below it;
      size: the last fraction over that median.

    ``std`` and ``frac_near_zero`` are ``(layers, steps, values)`` of the same run (aligned here).
    """
    steps = np.asarray(steps)
    m = np.asarray(min_channel_std, dtype=np.float64).reshape(len(layers), len(steps))
    ref = np.abs(align(std, layers, steps)) if std is not None else np.zeros_like(m)
    frac = align(frac_near_zero, layers, steps) if frac_near_zero is not None else np.full_like(m, np.nan)
    out = []
    for i, name in enumerate(layers):
        for stat, row, dead in (
            ("min_channel_std", m[i], m[i] <= COLLAPSE["dead_atol"] + COLLAPSE["dead_rtol"] * np.nan_to_num(ref[i])),
            ("frac_near_zero", frac[i], frac[i] >= DEAD_FRACTION),
        ):
            fin = np.isfinite(row)
            start = trailing_start(dead[fin])
            if fin.sum() - start < min_points:
                continue
            idx = np.flatnonzero(fin)
            if stat == "frac_near_zero" and not (np.median(row[idx[: max(1, start)]]) < DEAD_FRACTION and start > 0):
                continue
            first, last = int(steps[idx[start]]), int(steps[idx[-1]])
            if stat == "min_channel_std":
                peak = float(np.max(row[idx])) if len(idx) else math.nan
                size = float(row[idx[-1]]) / peak if peak > 0 else 0.0
                text = (
                    f"A channel of {name} stopped varying at step {first} "
                    f"(min channel std {fmt(row[idx[-1]])}) and stayed dead."
                )
                out.append(finding("dead_channels", text, name, first, last, stat, "activation", size, i))
            else:
                early = float(np.median(row[idx[:start]]))
                size = float(row[idx[-1]]) / early if early > 0 else math.inf
                text = f"{fmt(100 * size)}% of {name}'s activations sit at zero from step {first} on (dead units)."
                out.append(finding("dead_units", text, name, first, last, stat, "activation", size, i))
    return out


def gradient_findings(layers, steps, grad_norms, *, min_points: int = 2) -> list[Finding]:
    """Exploding and vanishing per-module gradient norms.

    * exploding, as :func:`~fnodiag.diagnostics.collapse.gradient_health` decides it: the first capture
      above ``1e3 x`` the module's median (or ``+-inf``); the window runs to the last such capture, the
      size is ``value / median``;
    * vanishing: the final stretch (>= ``min_points`` captures, to the last one) below ``1e-8``, or
      ``1e4 x`` below the module's early median (:func:`~fnodiag.diagnostics.regime.departure`, downwards).
      Against the early median rather than ``gradient_health``'s running peak, so that a burst of
      exploding gradients does not make the normal ones after it read as vanished; size ``last / early``.

    NaN entries are missing captures.
    """
    steps = np.asarray(steps)
    g = np.asarray(grad_norms, dtype=np.float64).reshape(len(layers), len(steps))
    out = []
    for e in gradient_health(layers, steps, g)["exploding"]:
        i = layers.index(e["layer"])
        big = np.isinf(g[i]) | (g[i] > COLLAPSE["grad_explode_factor"] * e["median"])
        last = int(steps[np.flatnonzero(big)[-1]])
        size = e["value"] / e["median"] if e["median"] and not math.isnan(e["median"]) else math.inf
        text = (
            f"Gradients of {e['layer']} exploded at step {e['step']}: norm {fmt(e['value'])}, "
            f"{times(size)} than their median {fmt(e['median'])}."
        )
        out.append(finding("exploding_gradients", text, e["layer"], e["step"], last, "norm", "grad", size, i))
    for i, name in enumerate(layers):
        fin = np.flatnonzero(~np.isnan(g[i]))
        if len(fin) < min_points:
            continue
        start = trailing_start(g[i, fin] < COLLAPSE["grad_vanish_abs"])
        starts = [fin[start]] if len(fin) - start >= min_points else []
        d = departure(g[i], steps, direction="down", factor=COLLAPSE["grad_vanish_drop"], min_points=min_points)
        starts += [d.index] if d is not None else []
        if not starts:
            continue
        first, last = int(steps[min(starts)]), float(g[i, fin[-1]])
        early = d.baseline if d is not None else math.nan
        size = last / early if d is not None and early > 0 else 0.0
        text = f"Gradients of {name} vanished from step {first}: last norm {fmt(last)}" + (
            f", early median {fmt(early)}." if d is not None else f" (below {COLLAPSE['grad_vanish_abs']:g})."
        )
        out.append(finding("vanishing_gradients", text, name, first, int(steps[fin[-1]]), "norm", "grad", size, i))
    return out


# --------------------------------------------------------------------------- all of them


def position(name: str | None, order: list[str]) -> int:
    """Index in ``order`` of ``name`` or of its longest listed parent (``decoder.0.conv1`` -> ``decoder.0``);
    ``len(order)`` for a name outside it, 0 for None (the whole run)."""
    if name is None:
        return 0
    while name:
        if name in order:
            return order.index(name)
        name = name.rpartition(".")[0]
    return len(order)


def detect(records: RunRecords) -> list[Finding]:
    """Every pure detector on a run's records, ranked (:func:`~fnodiag.diagnostics.findings.rank`).

    Each finding's ``position`` is set from one order for the whole run (:meth:`RunRecords.order`, a
    module ranking with the activation layer that holds it, :func:`position`), so ties between kinds
    go upstream first.
    """
    order = records.order()
    out = collapse_findings(records.collapse, order) + nonfinite_findings(records)
    out += regime_findings({s: records.matrix("activation", s) for s in REGIME_STATS})
    layers, steps, mcs = records.matrix("activation", "min_channel_std")
    if layers:
        std, frac = records.matrix("activation", "std"), records.matrix("activation", "frac_near_zero")
        out += dead_findings(layers, steps, mcs, std=std, frac_near_zero=frac)
    out += gradient_findings(*records.matrix("grad", "norm"))
    lr = records.scalars.get(LR)
    out += update_ratio_findings(*records.matrix("param", "update_ratio"), lr=lr)
    out += drift_findings({s: records.matrix("param", s) for s in DRIFT_STATS})
    for (src, st), m in records.layers.items():
        if st == ABOVE_STAT and len(m[0]):
            out += spectral_findings(*m, source=src)
    return rank(replace(f, position=position(f.layer, order)) for f in out)


__all__ = [
    "DEAD_FRACTION",
    "RATIO_STATS",
    "RunRecords",
    "collapse_findings",
    "dead_findings",
    "detect",
    "gradient_findings",
    "nonfinite_findings",
    "position",
]
