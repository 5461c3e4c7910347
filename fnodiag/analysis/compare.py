"""Arms compared layer by layer: seed mean and spread of a per-layer statistic, and log-ratios against a reference arm.

Pure numpy over the ``(layers, steps, values)`` pivots that :meth:`fnodiag.runs.StoreReader.layer_matrix`
returns (one per run); the dashboard's *Compare* tab and notebooks draw what these give.

Alignment rules, so every number is well defined:

- **layers** keep network order: the order the first seed's store logged them, then any layer only
  a later seed logged, in its order (:func:`layer_union`);
- **steps** of an arm are the steps *every* seed logged (a seed still training limits the arm to
  what all of them have); of a comparison, the steps both arms hold;
- a seed mean / spread at a (layer, step) uses the seeds with a finite value there (``count``);
- ``log_ratio`` is ``ln(mean_A / mean_ref)``, NaN where either mean is not finite and positive.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "ArmStats",
    "layer_union",
    "seed_stats",
    "log_ratio",
    "values_at",
    "step_at",
    "last_step_of_epoch",
    "layer_table",
    "ratio_table",
]


@dataclass(frozen=True)
class ArmStats:
    """Seed aggregate of one statistic of one arm, on the steps every seed logged.

    ``mean``, ``std`` (population, ddof 0), ``lo`` (min), ``hi`` (max) are (LAYER, STEP) float64,
    NaN where no seed has a finite value; ``count`` (LAYER, STEP) int64 is how many seeds do.
    """

    layers: list[str]
    steps: np.ndarray  # (STEP,) int64, increasing
    mean: np.ndarray
    std: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    count: np.ndarray
    seeds: int


def layer_union(layer_lists: Sequence[Sequence[str]]) -> list[str]:
    """Layers of several runs in network order: the first run's order, then newcomers in their own order."""
    return list(dict.fromkeys(name for layers in layer_lists for name in layers))


def seed_stats(matrices: Sequence[tuple]) -> ArmStats:
    """Mean and spread over seeds of one arm.

    Parameters
    ----------
    matrices : sequence of ``(layers, steps, values)``
        One per seed: list of LAYER_s str, (STEP_s,) int, (LAYER_s, STEP_s) float (a
        :class:`~fnodiag.runs.LayerMatrix`). Runs without records (no layers) are ignored.

    Returns
    -------
    ArmStats over :func:`layer_union` of the layers and the steps common to every seed that has records.
    """
    mats = [(list(names), np.asarray(s, np.int64), np.asarray(v, np.float64)) for names, s, v in matrices if len(names)]
    if not mats:
        z = np.zeros((0, 0))
        return ArmStats([], np.zeros(0, np.int64), z, z, z, z, np.zeros((0, 0), np.int64), 0)
    layers = layer_union([m[0] for m in mats])
    steps = mats[0][1]
    for _, s, _ in mats[1:]:
        steps = np.intersect1d(steps, s)
    cube = np.full((len(mats), len(layers), len(steps)), np.nan)
    row_of = {name: i for i, name in enumerate(layers)}
    for k, (names, s, v) in enumerate(mats):
        cols = np.searchsorted(s, steps)  # every common step is in s (s sorted, unique)
        cube[k, [row_of[n] for n in names]] = v[:, cols]
    finite = np.isfinite(cube)
    cube[~finite] = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices stay NaN
        mean, std = np.nanmean(cube, axis=0), np.nanstd(cube, axis=0)
        lo, hi = np.nanmin(cube, axis=0), np.nanmax(cube, axis=0)
    return ArmStats(layers, steps, mean, std, lo, hi, finite.sum(axis=0).astype(np.int64), len(mats))


def log_ratio(arm: ArmStats, reference: ArmStats) -> tuple[list[str], np.ndarray, np.ndarray]:
    """``ln(mean_arm / mean_reference)`` per layer x step on what both arms hold.

    Returns
    -------
    (layers, steps, values)
        Layers of ``arm`` (its order) that ``reference`` also has; (STEP,) int64 steps both hold;
        (LAYER, STEP) float64, NaN where either seed mean is not finite and > 0.
    """
    ref_row = {name: i for i, name in enumerate(reference.layers)}
    layers = [name for name in arm.layers if name in ref_row]
    steps = np.intersect1d(arm.steps, reference.steps)
    a = arm.mean[[arm.layers.index(n) for n in layers]][:, np.searchsorted(arm.steps, steps)]
    b = reference.mean[[ref_row[n] for n in layers]][:, np.searchsorted(reference.steps, steps)]
    ok = np.isfinite(a) & np.isfinite(b) & (a > 0) & (b > 0)
    out = np.full(a.shape, np.nan)
    out[ok] = np.log(a[ok] / b[ok])
    return layers, steps, out


def step_at(steps: np.ndarray, step: int | None) -> int | None:
    """The last of ``steps`` (STEP,) at or before ``step`` (the first one if none is; the last if ``step`` is None)."""
    steps = np.asarray(steps)
    if len(steps) == 0:
        return None
    if step is None:
        return int(steps[-1])
    k = int(np.searchsorted(steps, step, side="right")) - 1
    return int(steps[max(k, 0)])


def values_at(arm: ArmStats, step: int | None) -> dict:
    """Each layer's seed mean / std / min / max / count at :func:`step_at` ``step``.

    Returns
    -------
    dict with ``step`` (int or None) and ``mean``, ``std``, ``lo``, ``hi`` (LAYER,) float64, ``count`` (LAYER,) int64.
    """
    at = step_at(arm.steps, step)
    if at is None:
        empty = np.zeros(len(arm.layers))
        return {
            "step": None,
            "mean": empty + np.nan,
            "std": empty + np.nan,
            "lo": empty + np.nan,
            "hi": empty + np.nan,
            "count": np.zeros(len(arm.layers), np.int64),
        }
    j = int(np.searchsorted(arm.steps, at))
    return {"step": at, **{k: getattr(arm, k)[:, j] for k in ("mean", "std", "lo", "hi", "count")}}


def last_step_of_epoch(steps, epochs, epoch: int) -> int | None:
    """The last of ``steps`` (ROW,) logged in ``epoch`` (``epochs`` (ROW,) the epoch of each); None if none."""
    steps, epochs = np.asarray(steps), np.asarray(epochs)
    inside = steps[epochs == epoch]
    return int(inside.max()) if len(inside) else None


def layer_table(arms: dict[str, ArmStats], step: int | None) -> list[dict]:
    """Rows ``arm, step, layer, order, mean, std, min, max, seeds`` of each arm's layers at ``step``: what the
    side-by-side bars show (one row per arm x layer, layers in network order)."""
    rows = []
    for label, arm in arms.items():
        v = values_at(arm, step)
        for i, name in enumerate(arm.layers):
            rows.append(
                {
                    "arm": label,
                    "step": v["step"],
                    "layer": name,
                    "order": i,
                    "mean": float(v["mean"][i]),
                    "std": float(v["std"][i]),
                    "min": float(v["lo"][i]),
                    "max": float(v["hi"][i]),
                    "seeds": int(v["count"][i]),
                }
            )
    return rows


def ratio_table(layers: Sequence[str], steps, values) -> list[dict]:
    """Rows ``layer, order, step, log_ratio`` of a :func:`log_ratio` result (finite cells only): what the
    difference map shows."""
    values = np.asarray(values, np.float64)
    row, col = np.nonzero(np.isfinite(values))
    steps = np.asarray(steps)
    return [
        {"layer": layers[r], "order": int(r), "step": int(steps[c]), "log_ratio": float(values[r, c])}
        for r, c in zip(row, col)
    ]
