"""Best-checkpoint selection: which criterion chose ``best.ckpt``, and the gain-free best epoch.

``best.ckpt`` is the checkpoint of the epoch with the lowest validation loss (the live
``ModelCheckpoint`` records its ``monitor`` and ``mode`` in ``effective_config.json``
``best_checkpoint``). Under the reference's batch gain (``train.forward_gain='batch'``, brief §2.2)
that loss depends on the batch size: predictions carry the size of the batch they were computed in
as a gain, so a loss at another batch size than training's, or a partial batch, measures the batch
size as much as the model. The validation amplitude SSIM of test image 0, recorded per epoch in
``history.json`` (``val_amp_ssim``; ``val_amp_mae`` beside it), never passes through the forward
model and is gain-free. Under the gain this module therefore also names the best epoch by that SSIM,
and :func:`best_weights` makes it the one a collapse verdict's "best weights" rest on.

Epochs are 0-based indices into the ``history.json`` series (Lightning's ``current_epoch``).
Pure functions on the plain dicts of a run directory; no torch, no Lightning.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

__all__ = ["LOSS_CRITERION", "SSIM_CRITERION", "checkpoint_criterion", "gain_dependent", "best_epochs", "best_weights"]

LOSS_CRITERION = "val_loss (min)"
SSIM_CRITERION = "val_amp_ssim (max)"
_MONITOR_LABELS = {"val/loss": "val_loss", "val/amp_ssim": "val_amp_ssim"}


def _finite(v) -> float | None:
    return float(v) if v is not None and isinstance(v, (int, float)) and math.isfinite(v) else None


def checkpoint_criterion(effective: Mapping | None) -> str:
    """``'<series> (min|max)'`` the run's live checkpoint callback chose ``best.ckpt`` by.

    Read from ``effective_config.json`` ``best_checkpoint`` {``monitor``, ``mode``}; a run recorded
    before that key existed was chosen by the validation loss (the only criterion fnodiag has used).
    """
    best = (effective or {}).get("best_checkpoint") or {}
    monitor, mode = best.get("monitor"), best.get("mode")
    if not monitor:
        return LOSS_CRITERION
    return f"{_MONITOR_LABELS.get(monitor, monitor)} ({mode or 'min'})"


def gain_dependent(effective: Mapping | None, config: Mapping | None = None) -> bool:
    """Whether the run's validation loss carries the batch gain (``forward_gain == 'batch'``)."""
    gain = (effective or {}).get("forward_gain")
    if gain is None:
        gain = ((config or {}).get("train") or {}).get("forward_gain")
    return gain == "batch"


def _arg_best(series, sign: float) -> int | None:
    """First index of the best finite value (``sign`` +1: max, -1: min); None without any."""
    best = None
    for i, v in enumerate(series or []):
        v = _finite(v)
        if v is not None and (best is None or sign * v > sign * best[1]):
            best = (i, v)
    return None if best is None else best[0]


def _at(history: Mapping, i: int | None) -> dict | None:
    if i is None:
        return None

    def get(key):
        s = history.get(key) or []
        return _finite(s[i]) if i < len(s) else None

    return {
        "epoch": i,
        "val_loss": get("val_loss"),
        "val_amp_ssim": get("val_amp_ssim"),
        "val_amp_mae": get("val_amp_mae"),
    }


def best_epochs(history: Mapping | None, effective: Mapping | None = None, config: Mapping | None = None) -> dict:
    """The best epoch by the criterion that chose ``best.ckpt`` and by the gain-free amp SSIM.

    Parameters
    ----------
    history : dict
        ``history.json``: per-epoch lists ``val_loss``, ``val_amp_ssim`` (and ``val_amp_mae``).
    effective, config : dict, optional
        ``effective_config.json`` and ``config.json`` of the run (criterion and forward gain).

    Returns
    -------
    dict
        ``criterion`` (what chose ``best.ckpt``), ``gain_dependent`` (its loss carries the batch
        gain), ``by_loss`` and ``by_ssim`` (each None or ``{"epoch", "val_loss", "val_amp_ssim",
        "val_amp_mae"}``), ``differ`` (both known and on different epochs) and ``verdict_criterion``
        (the criterion :func:`best_weights` uses: the SSIM under the gain, else the checkpoint's).
    """
    history = history or {}
    criterion = checkpoint_criterion(effective)
    by_loss = _at(history, _arg_best(history.get("val_loss"), -1.0))
    by_ssim = _at(history, _arg_best(history.get("val_amp_ssim"), 1.0))
    gained = gain_dependent(effective, config)
    return {
        "criterion": criterion,
        "gain_dependent": gained,
        "by_loss": by_loss,
        "by_ssim": by_ssim,
        "differ": bool(by_loss and by_ssim and by_loss["epoch"] != by_ssim["epoch"]),
        "verdict_criterion": SSIM_CRITERION if gained else criterion,
    }


def best_weights(
    history: Mapping | None, effective: Mapping | None, metrics_best: Mapping | None, config: Mapping | None = None
) -> tuple[str, dict | None]:
    """The "best weights" a collapse verdict rests on, and the criterion that chose them.

    Without the batch gain: ``metrics.json["best"]`` (the scores of ``best.ckpt``). Under the gain:
    the epoch with the highest validation amp SSIM, scored by the per-epoch ``val_amp_ssim`` /
    ``val_amp_mae`` of test image 0 that validation recorded (the same image and metrics as
    ``metrics.json``), so no loss that depends on the batch size enters the verdict. A history
    without per-epoch amp MAE gives only ``amp_ssim``.

    Returns
    -------
    criterion : str
        :data:`SSIM_CRITERION` under the gain, else :func:`checkpoint_criterion`.
    metrics : dict or None
        ``{"amp_ssim", "amp_mae", "epoch"}`` under the gain (None without any SSIM record), else
        ``metrics_best`` unchanged.
    """
    sel = best_epochs(history, effective, config)
    if not sel["gain_dependent"]:
        return sel["criterion"], (dict(metrics_best) if metrics_best else None)
    b = sel["by_ssim"]
    if b is None:
        return SSIM_CRITERION, None
    return SSIM_CRITERION, {"amp_ssim": b["val_amp_ssim"], "amp_mae": b["val_amp_mae"], "epoch": b["epoch"]}
