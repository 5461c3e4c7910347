"""The reference's Lightning CSV log (``lightning_logs/version_<k>/metrics.csv``) into a fnodiag run store.

Lightning's ``CSVLogger`` writes one row per logging call: the columns ``epoch`` and ``step`` plus
every metric ever logged (sorted), the cells of metrics that call did not log left empty. The
reference logs (brief §5.5) ``mae_train_loss_step`` / ``_epoch``, ``mae_val_loss``,
``learning_rate`` (at epoch start) and ``grad_norm_preclip_*`` / ``grad_norm_postclip_*``.
:func:`write_scalars` stores them under fnodiag's scalar names, so the dashboard's loss, gradient
norm, learning-rate and clip-fraction plots draw an imported run like one of fnodiag's own.
"""

from __future__ import annotations

import csv
from pathlib import Path

from fnodiag.config import ConfigError
from fnodiag.runs import RunDir
from fnodiag.runs.names import (
    CLIP_FRACTION,
    EPOCH,
    GRAD_CLIPPED,
    GRAD_NORM_POST,
    GRAD_NORM_PRE,
    LR,
    TRAIN_LOSS,
    TRAIN_LOSS_EPOCH,
    VAL_LOSS,
)

STEP_COLUMNS = {"grad_norm_preclip_step": GRAD_NORM_PRE, "grad_norm_postclip_step": GRAD_NORM_POST, "learning_rate": LR}


class ReferenceImportError(ConfigError):
    """A reference folder that cannot be imported; the message names the file and the fix."""


def _number(text: str, path: Path, line: int, column: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ReferenceImportError(
            f"{str(path)!r} line {line}: column {column!r} holds {text[:30]!r}, not a number; "
            "is it a Lightning CSVLogger metrics.csv?"
        ) from None


def read_metrics_csv(path: Path) -> list[tuple[int, int, dict[str, float]]]:
    """Rows ``(step, epoch, {column: value})`` of a Lightning ``metrics.csv`` (empty cells left out).

    A row without an epoch (what ``CSVLogger.log_metrics(metrics, step=...)`` writes outside a
    Trainer: an empty ``epoch`` cell, or no ``epoch`` column at all) takes the epoch of the last row
    that had one (0 before any).
    """
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            rows = list(csv.reader(fh))
    except (UnicodeDecodeError, csv.Error) as exc:
        raise ReferenceImportError(
            f"{str(path)!r} is not a readable CSV ({exc}); is it a Lightning CSVLogger metrics.csv?"
        ) from None
    if not rows or "step" not in rows[0]:
        header = ", ".join(rows[0][:6]) if rows else "(empty file)"
        raise ReferenceImportError(
            f"{str(path)!r} has no 'step' column (header: {header}); pass a Lightning CSVLogger metrics.csv"
        )
    header = rows[0]
    out, epoch = [], 0
    for line, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            raise ReferenceImportError(
                f"{str(path)!r} line {line} has {len(row)} fields, the header {len(header)}; "
                "the file is truncated or not a Lightning metrics.csv"
            )
        values = {c: _number(v, path, line, c) for c, v in zip(header, row) if v.strip() != ""}
        if "step" not in values:
            raise ReferenceImportError(
                f"{str(path)!r} line {line} has no step value; the file is malformed (every CSVLogger row has one)"
            )
        step = values.pop("step")
        epoch = int(values.pop("epoch", epoch))
        out.append((int(step), epoch, values))
    return out


def _scalar_name(column: str) -> tuple[str, str]:
    """(scope, fnodiag scalar name) of a CSV column."""
    if column in STEP_COLUMNS:
        return "step", STEP_COLUMNS[column]
    low = column.lower()
    if "train" in low and "loss" in low and low.endswith("_step"):
        return "step", TRAIN_LOSS
    if "val" in low and "loss" in low:
        return "epoch", VAL_LOSS
    if low.endswith("_epoch"):
        base = column[: -len("_epoch")]
        return "epoch", TRAIN_LOSS_EPOCH if ("train" in low and "loss" in low) else f"{EPOCH}{base}"
    return "step", f"reference/{column}"


def write_scalars(run: RunDir, rows) -> dict:
    """CSV rows into the run's store; returns what was found (last step, epochs with lr / clip fraction)."""
    lr_by_epoch: dict[int, float] = {}
    clipped: dict[int, list[float]] = {}
    last = -1
    with run.open_store(flush_every=None) as store:
        for step, epoch, values in rows:
            by_scope: dict[str, dict[str, float]] = {"step": {}, "epoch": {}}
            for column, value in values.items():
                scope, name = _scalar_name(column)
                by_scope[scope][name] = value
            step_values = by_scope["step"]
            if GRAD_NORM_PRE in step_values and GRAD_NORM_POST in step_values:
                pre, post = step_values[GRAD_NORM_PRE], step_values[GRAD_NORM_POST]
                step_values[GRAD_CLIPPED] = float(post < pre * (1 - 1e-6))
                clipped.setdefault(epoch, []).append(step_values[GRAD_CLIPPED])
            if LR in step_values:
                lr_by_epoch.setdefault(epoch, step_values[LR])
            for scope, vals in by_scope.items():
                if vals:
                    store.log_scalars(step, epoch, vals, scope=scope)
            last = max(last, step)
        for epoch, flags in sorted(clipped.items()):
            store.log_scalars(0, epoch, {CLIP_FRACTION: sum(flags) / len(flags)}, scope="epoch")
    return {"last_step": last, "lr_by_epoch": lr_by_epoch}
