"""The regime detectors: a series leaving its own early range for good, and the findings built on that rule.

The rule (:func:`departure`), shared by the "left its usual range" detectors: the baseline is
the first ``max(min_baseline, ceil(baseline_frac * n))`` finite captures of a series; its centre is
their median ``m`` and its spread ``s = 1.4826 * MAD`` (of ``log10`` values for positive statistics).
A capture is *outside* when ``|x - m| > max(log10(factor), k * s)`` (``max(delta, k * s)`` on a linear
scale; by default ``factor = 100``, two orders of magnitude as in collapse detection, and ``k = 5``:
the output std of a healthy tiny run grows 12x from its first captures, so 10 would call that a
change); the series *left its regime* at the first capture of the final stretch of outside captures,
which must run to the last capture and hold at least ``min_points`` captures: a spike that comes back
is not a finding. An event inside the baseline window is not seen against it.

Detectors: a layer's activation statistics leaving their early regime (:func:`regime_findings`),
update-to-weight ratios per unit of learning rate (:func:`update_ratio_findings`), LayerScale /
normalisation affine drift (:func:`drift_findings`) and spectral energy moving above the kept modes
(:func:`spectral_findings`). Inputs are ``(layers, steps, values)`` matrices as in
:mod:`fnodiag.diagnostics.detectors`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from fnodiag.diagnostics.findings import SPECTRA_TAB, Finding, finding, fmt, strength, times, trailing_start
from fnodiag.diagnostics.spectra import ABOVE_STAT

REGIME = {"baseline_frac": 0.2, "min_baseline": 5, "factor": 100.0, "k": 5.0, "min_points": 2}
#: Activation statistics watched for a layer leaving its early regime (ratios: log scale).
REGIME_STATS = ("std", "spatial_std", "p99", "spectral_local_ratio")
#: LayerScale / InstanceNorm affine statistics watched for drift (by magnitude, log scale).
DRIFT_STATS = ("layerscale_abs_max", "weight_abs_min", "weight_mean")
DRIFT_FACTORS = {"layerscale_abs_max": 100.0, "weight_abs_min": 10.0, "weight_mean": 10.0}
SPECTRAL_DELTA = 0.1  # spectral: the share above the kept modes rose by at least this much


@dataclass(frozen=True)
class Departure:
    """Where a series left its early regime for good (:func:`departure`)."""

    index: int  # capture index (into the given arrays) where the final outside stretch starts
    step: int
    last_step: int
    baseline: float  # the baseline median, in the series' units
    value: float  # the value at ``step``
    extreme: float  # the value furthest from the baseline in the stretch
    direction: str  # "up" or "down" (of the value at ``step``)

    @property
    def ratio(self) -> float:
        """``extreme / baseline`` (inf for a rise from 0)."""
        with np.errstate(divide="ignore", invalid="ignore"):
            return float(np.float64(self.extreme) / np.float64(self.baseline)) if self.baseline else math.inf


def departure(
    values,
    steps,
    *,
    log: bool = True,
    direction: str = "both",
    factor: float = REGIME["factor"],
    delta: float = 0.1,
    k: float = REGIME["k"],
    baseline_frac: float = REGIME["baseline_frac"],
    min_baseline: int = REGIME["min_baseline"],
    min_points: int = REGIME["min_points"],
) -> Departure | None:
    """Where a series left its own early regime for good (the rule in the module docstring).

    Parameters
    ----------
    values : (STEP,) float
        NaN entries are missing captures (skipped); on the log scale negative entries too. ``+-inf`` and
        (log scale) 0 are kept: they lie infinitely far from any finite baseline.
    steps : (STEP,) int
        Ascending.
    log : bool
        Compare ``log10`` values (ratios; for non-negative statistics) or the values themselves.
    direction : {"both", "up", "down"}
        Which departures count.
    factor, delta : float
        Smallest departure on the log scale (a ratio ``factor``) or the linear one (``delta``).
    k : float
        Departures must also exceed ``k`` robust standard deviations of the baseline.
    baseline_frac, min_baseline : float, int
        Baseline length: ``max(min_baseline, ceil(baseline_frac * n))`` captures of the ``n`` kept.
    min_points : int
        Captures the final outside stretch must hold.

    Returns
    -------
    Departure or None
        None for too few captures, a baseline without a finite centre, or no lasting departure.
    """
    if direction not in ("both", "up", "down"):
        raise ValueError(f"direction must be 'both', 'up' or 'down', got {direction!r}")
    v, s = np.asarray(values, dtype=np.float64), np.asarray(steps)
    keep = ~np.isnan(v) & ((v >= 0) if log else True)
    v, s = v[keep], s[keep]
    n_base = max(int(min_baseline), math.ceil(baseline_frac * len(v)))
    if len(v) < n_base + max(1, int(min_points)):
        return None
    with np.errstate(divide="ignore", invalid="ignore"):
        x = np.log10(v) if log else v
        centre = float(np.median(x[:n_base]))
        spread = 1.4826 * float(np.median(np.abs(x[:n_base] - centre)))
        if not (math.isfinite(centre) and math.isfinite(spread)):
            return None
        tol = max(math.log10(factor) if log else delta, k * spread)
        dev = x - centre
    out = {"both": np.abs(dev) > tol, "up": dev > tol, "down": dev < -tol}[direction]
    start = trailing_start(out)
    if len(v) - start < max(1, int(min_points)):
        return None
    j = start + int(np.argmax(np.abs(dev[start:])))
    return Departure(
        index=int(np.flatnonzero(keep)[start]),
        step=int(s[start]),
        last_step=int(s[-1]),
        baseline=float(10**centre) if log else centre,
        value=float(v[start]),
        extreme=float(v[j]),
        direction="up" if dev[start] > 0 else "down",
    )


# --------------------------------------------------------------------------- detectors


def _departures(
    kind, matrices: Mapping, *, source, describe, tab=None, magnitude=False, per_stat=None, **rule
) -> list[Finding]:
    """One finding per layer: the earliest (then largest) :func:`departure` over the statistics in ``matrices``.

    ``per_stat`` = ``{stat: {rule keyword: value}}`` overrides ``rule`` for one statistic.
    """
    best: dict[str, tuple] = {}
    order: list[str] = []
    for stat, (layers, steps, values) in matrices.items():
        v = np.asarray(values, dtype=np.float64).reshape(len(layers), len(steps))
        stat_rule = {**rule, **(per_stat or {}).get(stat, {})}
        for i, name in enumerate(layers):
            order += [name] if name not in order else []
            d = departure(np.abs(v[i]) if magnitude else v[i], steps, **stat_rule)
            if d is not None:
                key = (d.step, -strength(d.ratio))
                if name not in best or key < best[name][0]:
                    best[name] = (key, stat, d)
    out = []
    for name, (_, stat, d) in best.items():
        text = describe(name, stat, d)
        out.append(
            finding(kind, text, name, d.step, d.last_step, stat, source, d.ratio, order.index(name), tab,
                     baseline=d.baseline, value=d.value, extreme=d.extreme, direction=d.direction)
        )  # fmt: skip
    return out


def regime_findings(matrices: Mapping, **rule) -> list[Finding]:
    """Layers whose activation statistics (``{stat: (layers, steps, values)}``, e.g. :data:`REGIME_STATS`)
    left their early regime for good (log scale, :func:`~fnodiag.diagnostics.findings.departure`)."""

    def describe(name, stat, d):
        return (
            f"{name}'s {stat} left its early range at step {d.step} ({fmt(d.value)} against an early median of "
            f"{fmt(d.baseline)}) and never came back; at most {times(d.ratio)}."
        )

    return _departures("regime_change", matrices, source="activation", describe=describe, **rule)


def update_ratio_findings(layers, steps, ratios, *, lr=None, **rule) -> list[Finding]:
    """Modules whose update-to-weight ratio, per unit of learning rate, left its early range for good.

    Dividing by the learning rate in effect at each capture (``lr`` = the ``(steps, values)`` of the store's
    ``lr`` scalar; the last value at or before the capture) keeps a scheduled change of the learning rate
    from reading as an anomaly: under Adam the update per unit of learning rate stays put when the rate
    is raised, and an update that grows without it stands out. Without ``lr`` the raw ratios are used.
    """
    steps = np.asarray(steps)
    r = np.asarray(ratios, dtype=np.float64).reshape(len(layers), len(steps))
    stat = "update_ratio"
    if lr is not None and len(lr[0]):
        lr_steps, lr_values = np.asarray(lr[0]), np.asarray(lr[1], dtype=np.float64)
        order = np.argsort(lr_steps, kind="stable")
        at = np.searchsorted(lr_steps[order], steps, side="right") - 1
        rate = np.where(at >= 0, lr_values[order][np.clip(at, 0, None)], np.nan)
        with np.errstate(divide="ignore", invalid="ignore"):
            r = r / np.where(rate > 0, rate, np.nan)

    def describe(name, _, d):
        per = " per unit of learning rate" if lr is not None else ""
        return (
            f"The update-to-weight ratio of {name}{per} left its usual range at step {d.step} and stayed out "
            f"({times(d.ratio)} than its early median)."
        )

    return _departures("update_ratio", {stat: (layers, steps, r)}, source="param", describe=describe, **rule)


def drift_findings(matrices: Mapping, *, factors=None, **rule) -> list[Finding]:
    """LayerScale / InstanceNorm affine values (``{stat: (layers, steps, values)}``, e.g. :data:`DRIFT_STATS`)
    whose magnitude left its early range for good (log scale).

    The smallest departure is a factor ``factors[stat]`` (:data:`DRIFT_FACTORS`): 10 for the norm weights,
    which start at 1 and should stay near it (the reference's failed arm had them at ``|0.09|``), 100 for
    LayerScale, which starts small (1e-3) and is meant to grow (40x over 40 healthy tiny steps).
    """

    def describe(name, stat, d):
        return (
            f"{name}'s {stat} drifted from about {fmt(d.baseline)} to {fmt(d.value)} at step {d.step} "
            f"and stayed away ({times(d.ratio)} at most)."
        )

    per_stat = {stat: {"factor": f} for stat, f in {**DRIFT_FACTORS, **(factors or {})}.items()}
    return _departures(
        "affine_drift", matrices, source="param", magnitude=True, describe=describe, per_stat=per_stat, **rule
    )


def spectral_findings(layers, steps, above, *, delta=SPECTRAL_DELTA, source="activation", **rule) -> list[Finding]:
    """Layers whose share of energy above the kept modes (:data:`~fnodiag.diagnostics.spectra.ABOVE_STAT`)
    rose by at least ``delta`` (absolute share) over its early median, for good."""

    def describe(name, _, d):
        return (
            f"The share of {name}'s energy above the modes the next spectral layer keeps rose from "
            f"{fmt(d.baseline)} to {fmt(d.value)} at step {d.step} and stayed up."
        )

    rule = {"log": False, "direction": "up", "delta": delta, **rule}
    m = {ABOVE_STAT: (layers, steps, above)}
    return _departures("spectral_above", m, source=source, tab=SPECTRA_TAB, describe=describe, **rule)


__all__ = [
    "DRIFT_FACTORS",
    "DRIFT_STATS",
    "REGIME",
    "REGIME_STATS",
    "SPECTRAL_DELTA",
    "Departure",
    "departure",
    "drift_findings",
    "regime_findings",
    "spectral_findings",
    "update_ratio_findings",
]
