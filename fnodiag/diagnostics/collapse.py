"""Collapse detection: did a run's output become a spatially constant amplitude, when, and where first?

A collapsed run (brief §4.3, §8.4) outputs the same amplitude at every pixel: its metrics equal the
dataset's *constant-output fingerprint* (amp SSIM 0.2771, MAE 0.5131 at N=64) and the ``spatial_std``
of the output amplitude falls by orders of magnitude (to ~3e-8 in the reference) and stays there.
The maths here are pure numpy functions on the arrays :class:`~fnodiag.runs.StoreReader` returns;
:func:`detect_collapse` reads one run directory and :func:`write_collapse` saves ``collapse.json``.

Conventions shared by the series functions:

* a series is ``values (STEP,) float`` at ``steps (STEP,) int``, sorted by step;
* non-finite values are *missing* captures (``StoreReader.layer_matrix`` fills gaps with NaN, so a
  NaN cannot be told from "not logged"); they are skipped, never read as 0. A run that diverged is
  reported by the ``nonfinite`` activation stat, the ``grad/norm_preclip`` scalar and ``status.json``,
  not by these functions;
* "collapsed" means fell below ``drop`` x the running peak *and stayed below to the last capture*
  for at least ``min_points`` captures: a dip that recovers is not a collapse.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from fnodiag.diagnostics.selection import best_epochs, best_weights
from fnodiag.runs import RunDir, StoreReader, jsonable
from fnodiag.runs.names import GRAD_NORM_PRE

__all__ = [
    "DEFAULTS",
    "collapse_onset",
    "earliest_collapsing_layer",
    "dead_channels",
    "gradient_health",
    "metrics_at_fingerprint",
    "detect_collapse",
    "write_collapse",
]

DEFAULTS = {
    "drop": 1e-2,  # onset: value < drop x running peak (two orders of magnitude)
    "min_points": 2,  # ... for >= 2 captures through the last one (one point is ambiguous)
    "fingerprint_tol": 0.03,  # |amp_ssim - fingerprint| <= tol
    "mae_factor": 0.9,  # and amp_mae >= 0.9 x fingerprint amp_mae (no better than a constant)
    "dead_atol": 1e-6,  # dead channel: min_channel_std <= atol + rtol x layer std
    "dead_rtol": 1e-4,
    "grad_vanish_abs": 1e-8,  # vanishing: last norm < 1e-8 ...
    "grad_vanish_drop": 1e4,  # ... or < peak / 1e4
    "grad_explode_factor": 1e3,  # exploding: norm > 1e3 x median, or +-inf
    "crash_ssim_below": 0.5,  # the reference's crash heuristic (reported, not used for the verdict)
    "crash_val_above": 0.15,
}


def _series(values, steps) -> tuple[np.ndarray, np.ndarray]:
    v, s = np.asarray(values, dtype=np.float64), np.asarray(steps)
    if v.ndim != 1 or s.shape != v.shape:
        raise ValueError(
            f"values and steps must be 1-D arrays of equal length (STEP,), got shapes {v.shape} and {s.shape}"
        )
    return v, s


def _trailing_run_start(mask: np.ndarray) -> int:
    """Index where the final run of True in ``mask`` starts (``len(mask)`` when the last is False)."""
    false = np.flatnonzero(~mask)
    return int(false[-1]) + 1 if len(false) else 0


def collapse_onset(
    values, steps, *, drop: float = DEFAULTS["drop"], min_points: int = DEFAULTS["min_points"]
) -> int | None:
    """Step where a non-negative series fell below ``drop`` x its running peak for good.

    Parameters
    ----------
    values : (STEP,) float
        E.g. one layer's ``spatial_std``. Non-finite entries (NaN, +-inf) are missing captures and
        are skipped: a NaN tail leaves the verdict to the last finite captures.
    steps : (STEP,) int
        Optimizer step of each value, ascending.
    drop : float
        A capture is collapsed when ``value < drop * max(values so far)`` (and that peak is > 0).
    min_points : int
        The collapsed captures must run to the last finite one and number at least this many.

    Returns
    -------
    int or None
        Step of the first capture of that final collapsed run; None when the series ends healthy,
        only dipped, never rose above 0, or has too few finite captures.
    """
    if not 0 < drop < 1:
        raise ValueError(f"drop must be in (0, 1), got {drop!r}; e.g. 1e-2 for two orders of magnitude")
    v, s = _series(values, steps)
    keep = np.isfinite(v)
    v, s = v[keep], s[keep]
    if len(v) == 0:
        return None
    peak = np.maximum.accumulate(v)
    below = (peak > 0) & (v < drop * peak)
    start = _trailing_run_start(below)
    if len(v) - start < max(1, int(min_points)):
        return None
    return int(s[start])


def earliest_collapsing_layer(
    layers: Sequence[str], steps, matrix, *, drop: float = DEFAULTS["drop"], min_points: int = DEFAULTS["min_points"]
):
    """The layer whose collapse began first.

    Parameters
    ----------
    layers : list of LAYER str
        In network order, upstream first (ties go to the upstream layer).
    steps : (STEP,) int
    matrix : (LAYER, STEP) float
        One statistic per layer and capture, e.g. ``spatial_std``; NaN where not logged.
    drop, min_points
        As in :func:`collapse_onset`.

    Returns
    -------
    layer : str or None
    step : int or None
    per_layer : dict[str, int | None]
        Every layer's :func:`collapse_onset`.
    """
    m = np.asarray(matrix, dtype=np.float64)
    if m.size == 0 and not len(layers):
        m = m.reshape(0, len(steps))
    if m.shape != (len(layers), len(steps)):
        raise ValueError(
            f"matrix must have shape (LAYER, STEP) = ({len(layers)}, {len(steps)}), got {np.shape(matrix)}"
        )
    per_layer = {name: collapse_onset(m[i], steps, drop=drop, min_points=min_points) for i, name in enumerate(layers)}
    hits = [(step, i) for i, step in enumerate(per_layer.values()) if step is not None]
    if not hits:
        return None, None, per_layer
    step, i = min(hits)
    return layers[i], step, per_layer


def _last_finite(row: np.ndarray) -> int | None:
    idx = np.flatnonzero(np.isfinite(row))
    return int(idx[-1]) if len(idx) else None


def dead_channels(
    layers: Sequence[str],
    steps,
    min_channel_std,
    *,
    reference=None,
    atol: float = DEFAULTS["dead_atol"],
    rtol: float = DEFAULTS["dead_rtol"],
) -> list[dict]:
    """Layers with a channel that no longer varies at their last capture.

    A layer is listed when its last finite ``min_channel_std`` is ``<= atol + rtol * ref``, ``ref``
    being the layer's ``reference`` value (e.g. its overall ``std``) at that capture, or 0 where
    unknown. ``atol`` 1e-6 is ~float32 rounding of O(1) activations; ``rtol`` 1e-4 keeps the test
    scale-free for layers whose activations are much larger or smaller than 1.

    Parameters
    ----------
    layers : list of LAYER str
    steps : (STEP,) int
    min_channel_std : (LAYER, STEP) float
        Smallest per-channel std of each layer's activation; NaN where not logged.
    reference : (LAYER, STEP) float, optional
        Same axes as ``min_channel_std``.

    Returns
    -------
    list of dict
        ``{"layer", "step", "min_channel_std", "threshold"}`` in layer order.
    """
    m = np.asarray(min_channel_std, dtype=np.float64).reshape(len(layers), len(steps))
    ref = None if reference is None else np.asarray(reference, dtype=np.float64).reshape(m.shape)
    out = []
    for i, name in enumerate(layers):
        j = _last_finite(m[i])
        if j is None:
            continue
        r = ref[i, j] if ref is not None and np.isfinite(ref[i, j]) else 0.0
        threshold = atol + rtol * abs(r)
        if m[i, j] <= threshold:
            out.append(
                {"layer": name, "step": int(steps[j]), "min_channel_std": float(m[i, j]), "threshold": float(threshold)}
            )
    return out


def gradient_health(
    layers: Sequence[str],
    steps,
    grad_matrix,
    *,
    vanish_abs: float = DEFAULTS["grad_vanish_abs"],
    vanish_drop: float = DEFAULTS["grad_vanish_drop"],
    explode_factor: float = DEFAULTS["grad_explode_factor"],
) -> dict[str, list[dict]]:
    """Vanishing and exploding per-module gradient norms.

    * vanishing: the last finite norm is ``< vanish_abs`` or ``< peak / vanish_drop``; ``step`` is
      where that final vanished stretch began.
    * exploding: a norm ``> explode_factor x median`` or ``+-inf``; ``step`` is the first such
      capture. The median is taken over the finite, positive norms *before* any vanished tail, so
      a layer whose gradients died is not also called exploding for its healthy past.

    NaN entries are missing captures (skipped); use the ``grad/norm_preclip`` scalar for NaN gradients.

    Parameters
    ----------
    layers : list of LAYER str
    steps : (STEP,) int
    grad_matrix : (LAYER, STEP) float
        Pre-clip gradient L2 norm per module and capture.

    Returns
    -------
    dict
        ``{"vanishing": [{"layer", "step", "last", "peak", "reason"}],
        "exploding": [{"layer", "step", "value", "median", "reason"}]}``.
    """
    g = np.asarray(grad_matrix, dtype=np.float64).reshape(len(layers), len(steps))
    steps = np.asarray(steps)
    vanishing, exploding = [], []
    for i, name in enumerate(layers):
        row = g[i]
        fin = np.isfinite(row)
        v, s = row[fin], steps[fin]
        tail = len(v)
        if len(v):
            peak = np.maximum.accumulate(v)
            low = (v < vanish_abs) | (v < peak / vanish_drop)
            tail = _trailing_run_start(low)
            if tail < len(v):
                reason = f"< {vanish_abs:g}" if v[-1] < vanish_abs else f"fell > {vanish_drop:g}x from its peak"
                vanishing.append(
                    {
                        "layer": name,
                        "step": int(s[tail]),
                        "last": float(v[-1]),
                        "peak": float(peak[-1]),
                        "reason": reason,
                    }
                )
        healthy = v[:tail][v[:tail] > 0]
        median = float(np.median(healthy)) if len(healthy) else math.nan
        big = np.isinf(row) | (row > explode_factor * median if np.isfinite(median) else False)
        hit = np.flatnonzero(big)
        if len(hit):
            j = hit[0]
            reason = "non-finite" if np.isinf(row[j]) else f"> {explode_factor:g}x median"
            exploding.append(
                {"layer": name, "step": int(steps[j]), "value": float(row[j]), "median": median, "reason": reason}
            )
    return {"vanishing": vanishing, "exploding": exploding}


def metrics_at_fingerprint(
    metrics: Mapping[str, float] | None,
    fingerprint: Mapping[str, float],
    *,
    tol: float = DEFAULTS["fingerprint_tol"],
    mae_factor: float = DEFAULTS["mae_factor"],
) -> bool:
    """Whether ``metrics`` score like a spatially constant amplitude.

    True when ``|amp_ssim - fingerprint amp_ssim| <= tol`` and ``amp_mae >= mae_factor x fingerprint
    amp_mae`` (an output that reconstructs the amplitude better than a constant is not collapsed,
    whatever its SSIM). Missing or non-finite metrics (e.g. ``None`` for an unevaluated checkpoint,
    NaN for an all-zero output) give False.

    Parameters
    ----------
    metrics : dict or None
        One entry of ``metrics.json`` (``best`` or ``last``).
    fingerprint : dict
        :func:`fnodiag.ptycho.metrics.constant_output_fingerprint` of the run's test object.
    """
    try:
        fp_ssim, fp_mae = float(fingerprint["amp_ssim"]), float(fingerprint["amp_mae"])
    except (KeyError, TypeError):
        raise ValueError(f"fingerprint must hold amp_ssim and amp_mae, got {fingerprint!r}") from None
    if not metrics:
        return False
    ssim, mae = (math.nan if metrics.get(k) is None else float(metrics[k]) for k in ("amp_ssim", "amp_mae"))
    if not (math.isfinite(ssim) and math.isfinite(mae)):
        return False
    return abs(ssim - fp_ssim) <= tol and mae >= mae_factor * fp_mae


# -- run level ---------------------------------------------------------------------------------------


def _read_store(run: RunDir) -> dict:
    """The matrices and scalars collapse detection needs (empty ones when there is no store)."""
    empty = ([], np.zeros(0, np.int64), np.zeros((0, 0)))
    names = ("spatial_std", "min_channel_std", "std", "nonfinite")
    rec = {n: empty for n in names} | {"grad": empty, "epochs": {}, "preclip": None}
    if not run.store_path.is_file():
        return rec
    with StoreReader(run.store_path) as reader:
        for n in names:
            rec[n] = tuple(reader.layer_matrix("activation", n))
        rec["grad"] = tuple(reader.layer_matrix("grad", "norm"))
        r = reader.layer_stats(source="activation", stat="spatial_std")
        rec["epochs"] = dict(zip(r.step.tolist(), r.epoch.tolist()))
        pre = reader.scalars(GRAD_NORM_PRE)
        rec["preclip"] = (pre.step, pre.value)
    return rec


def _align(src: tuple, layers: Sequence[str], steps: np.ndarray) -> np.ndarray:
    """``src`` = (layers, steps, values) re-indexed to ``layers`` x ``steps`` (NaN where absent)."""
    out = np.full((len(layers), len(steps)), np.nan)
    s_layers, s_steps, s_values = src
    col = {int(st): j for j, st in enumerate(s_steps)}
    row = {name: i for i, name in enumerate(s_layers)}
    for i, name in enumerate(layers):
        if name in row:
            for j, st in enumerate(steps):
                if int(st) in col:
                    out[i, j] = s_values[row[name], col[int(st)]]
    return out


def _metric_entry(m: Mapping | None, fingerprint: Mapping | None, criteria: dict) -> dict | None:
    if not m:
        return None
    at = (
        None
        if fingerprint is None
        else metrics_at_fingerprint(m, fingerprint, tol=criteria["fingerprint_tol"], mae_factor=criteria["mae_factor"])
    )
    return {**m, "at_fingerprint": at}


def _best_weights_entry(
    criterion: str, chosen: Mapping | None, best: Mapping | None, fingerprint: Mapping | None, criteria: dict
) -> dict | None:
    """The best weights the verdict uses: ``best`` (best.ckpt) or the gain-free best epoch ``chosen``."""
    if chosen is None:
        return None
    if "epoch" not in chosen:  # best.ckpt's own scores, already judged
        return {
            "criterion": criterion,
            "epoch": None,
            "amp_ssim": best.get("amp_ssim"),
            "amp_mae": best.get("amp_mae"),
            "at_fingerprint": best.get("at_fingerprint"),
        }
    ssim, mae = chosen.get("amp_ssim"), chosen.get("amp_mae")
    at = None
    if fingerprint is not None and ssim is not None:
        at = (
            metrics_at_fingerprint(
                chosen, fingerprint, tol=criteria["fingerprint_tol"], mae_factor=criteria["mae_factor"]
            )
            if mae is not None
            else abs(ssim - float(fingerprint["amp_ssim"])) <= criteria["fingerprint_tol"]
        )
    return {"criterion": criterion, "epoch": chosen["epoch"], "amp_ssim": ssim, "amp_mae": mae, "at_fingerprint": at}


def detect_collapse(
    run: RunDir, *, fingerprint: Mapping[str, float] | None = None, drop: float = DEFAULTS["drop"]
) -> dict:
    """Collapse report of one run directory (its store, ``metrics.json``, ``history.json``).

    The verdict is ``"collapsed"`` when either criterion holds, ``"healthy"`` when the criteria
    that could be evaluated do not, ``"insufficient_data"`` when neither could be evaluated:

    1. *output amplitude*: the ``spatial_std`` of the ``output`` activation layer (the most
       downstream layer when none is called ``output``) has a :func:`collapse_onset` - it fell by
       ``1/drop`` from its peak and stayed there. This sees the collapse while training runs and
       dates it (``onset_step`` / ``onset_epoch``).
    2. *last metrics at the fingerprint*: :func:`metrics_at_fingerprint` on ``metrics.json["last"]``.
       This catches a run that never varied (no peak to fall from) and runs recorded without live
       capture. The fingerprint is ``fingerprint`` or ``effective_config.json["data"]["fingerprint"]``;
       without either the criterion is skipped with a note.

    ``learned_then_collapsed`` (brief §8.4): the best weights are not at the fingerprint, the last
    are. "Best weights" are those of ``best.ckpt`` (lowest validation loss), except under the batch
    gain (``forward_gain='batch'``), whose validation loss depends on the batch size: there they are
    the epoch with the highest validation amp SSIM, scored by the per-epoch amp SSIM / MAE recorded
    in ``history.json`` (:func:`fnodiag.diagnostics.selection.best_weights`; amp SSIM alone, within
    ``fingerprint_tol``, for a history without ``val_amp_mae``). ``best_weights`` in the report
    names the criterion and epoch, ``best_selection`` both best epochs. The reference's crash heuristic
    (amp_ssim < 0.5 or final val loss > 0.15, brief §8.5) is reported beside, not used: its loss
    threshold only holds for the reference's loss scale, and it also flags runs that are merely under-trained.

    Parameters
    ----------
    run : RunDir
    fingerprint : dict, optional
        Constant-output metrics of the run's test object (``amp_ssim``, ``amp_mae``).
    drop : float
        As in :func:`collapse_onset`.

    Returns
    -------
    dict
        JSON-ready; keys ``verdict, collapsed, onset_step, onset_epoch, earliest_layer,
        per_layer_onset, output_spatial_std, metrics, learned_then_collapsed, dead_channels,
        gradients, criteria, criteria_met, reference_crash_heuristic, notes, best_weights,
        best_selection``.
    """
    criteria = {**DEFAULTS, "drop": float(drop)}
    notes: list[str] = []
    rec = _read_store(run)
    layers, steps, ss = rec["spatial_std"]
    if not layers:
        notes.append("no activation spatial_std records in the run store (live capture off or not started)")

    # 1. the output amplitude
    onset = onset_epoch = out_layer = output_std = None
    activation_ok = False
    if layers:
        out_layer = "output" if "output" in layers else layers[-1]
        if out_layer != "output":
            notes.append(f"no 'output' activation layer; used the most downstream layer {out_layer!r}")
        row = ss[layers.index(out_layer)]
        fin = np.flatnonzero(np.isfinite(row))
        if len(fin):
            p = fin[np.argmax(row[fin])]
            output_std = {
                "peak": row[p],
                "peak_step": int(steps[p]),
                "last": row[fin[-1]],
                "last_step": int(steps[fin[-1]]),
            }
        activation_ok = len(fin) > criteria["min_points"]
        if not activation_ok:
            notes.append(f"only {len(fin)} finite captures of {out_layer!r}: too few to date a collapse")
        onset = collapse_onset(row, steps, drop=drop, min_points=criteria["min_points"])
        onset_epoch = rec["epochs"].get(onset) if onset is not None else None
    earliest, earliest_step, per_layer = earliest_collapsing_layer(
        layers, steps, ss, drop=drop, min_points=criteria["min_points"]
    )

    nf_layers, nf_steps, nf = rec["nonfinite"]
    if out_layer in nf_layers:
        bad = np.flatnonzero(nf[nf_layers.index(out_layer)] > 0)
        if len(bad):
            notes.append(
                f"output held non-finite values from step {int(nf_steps[bad[0]])}: a divergence, "
                "not counted as a collapse"
            )

    # 2. metrics against the fingerprint
    source = "argument" if fingerprint is not None else None
    if fingerprint is None:
        fingerprint = ((run.read_json("effective_config.json", {}) or {}).get("data") or {}).get("fingerprint") or None
        source = "effective_config" if fingerprint else None
    if fingerprint is None:
        notes.append(
            "no constant-output fingerprint (argument or effective_config data.fingerprint): metric criterion skipped"
        )
    metrics = run.read_metrics() or {}
    best, last = (
        _metric_entry(metrics.get("best"), fingerprint, criteria),
        _metric_entry(metrics.get("last"), fingerprint, criteria),
    )
    if not metrics:
        notes.append("no metrics.json (run not evaluated yet)")
    metric_ok = last is not None and fingerprint is not None
    last_at = last["at_fingerprint"] if metric_ok else None
    history = run.read_history() or {}
    effective = run.read_json("effective_config.json", {}) or {}
    config = run.read_json(run.config_path.name, {}) or {}
    criterion, chosen = best_weights(history, effective, metrics.get("best"), config)
    best_w = _best_weights_entry(criterion, chosen, best, fingerprint, criteria)
    learned_then_collapsed = bool(best_w is not None and metric_ok and best_w["at_fingerprint"] is False and last_at)

    if not (activation_ok or metric_ok):
        verdict = "insufficient_data"
    else:
        verdict = "collapsed" if (onset is not None or last_at) else "healthy"
    if verdict == "healthy" and earliest is not None:
        notes.append(f"layer {earliest!r} collapsed at step {earliest_step} but the output did not")

    # reference crash heuristic, dead channels, gradients
    val = [v for v in history.get("val_loss", []) if v is not None]
    final_val = float(val[-1]) if val else None
    last_ssim = (last or {}).get("amp_ssim")
    crash = {
        "amp_ssim_below": last_ssim is not None and last_ssim < criteria["crash_ssim_below"],
        "final_val_above": final_val is not None and final_val > criteria["crash_val_above"],
        "final_val_loss": final_val,
    }
    crash["flag"] = crash["amp_ssim_below"] or crash["final_val_above"]

    mc_layers, mc_steps, mc = rec["min_channel_std"]
    dead = (
        dead_channels(mc_layers, mc_steps, mc, reference=_align(rec["std"], mc_layers, mc_steps)) if mc_layers else []
    )
    gradients = gradient_health(
        *rec["grad"],
        vanish_abs=criteria["grad_vanish_abs"],
        vanish_drop=criteria["grad_vanish_drop"],
        explode_factor=criteria["grad_explode_factor"],
    )
    if rec["preclip"] is not None and len(rec["preclip"][0]):
        pre_steps, pre = rec["preclip"]
        bad = np.flatnonzero(~np.isfinite(pre))
        gradients["nonfinite_global_steps"] = pre_steps[bad].tolist()
    if not rec["grad"][0]:
        notes.append("no per-module gradient records")

    return jsonable(
        {
            "verdict": verdict,
            "collapsed": verdict == "collapsed",
            "onset_step": onset,
            "onset_epoch": onset_epoch,
            "output_layer": out_layer,
            "earliest_layer": earliest,
            "earliest_step": earliest_step,
            "per_layer_onset": per_layer,
            "output_spatial_std": output_std,
            "metrics": {"best": best, "last": last},
            "learned_then_collapsed": learned_then_collapsed,
            "best_weights": best_w,
            "best_selection": best_epochs(history, effective, config),
            "dead_channels": dead,
            "gradients": gradients,
            "criteria": {
                **criteria,
                "fingerprint": dict(fingerprint) if fingerprint else None,
                "fingerprint_source": source,
            },
            "criteria_met": {
                "output_spatial_std": (onset is not None) if activation_ok else None,
                "last_metrics_at_fingerprint": last_at,
            },
            "reference_crash_heuristic": crash,
            "notes": notes,
        },
        nonfinite="null",
    )


def write_collapse(run: RunDir, **kwargs) -> dict:
    """:func:`detect_collapse` (same keywords) written to the run's ``collapse.json``; returns the report."""
    report = detect_collapse(run, **kwargs)
    run.write_json(run.collapse_path.name, report)
    return report
