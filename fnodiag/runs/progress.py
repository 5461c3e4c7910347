"""Progress of a run at a glance: step / total steps, epoch, elapsed, time left, heartbeat age.

:func:`run_progress` is pure (status + effective configuration + recent step times in, a dict
out); :func:`read_progress` gathers those from a run directory and its store. The time left is
the steps still to train over the recent step rate (the last :data:`RATE_WINDOW` logged steps,
so a resumed run's pause and the first steps' start-up do not count); validation time is not
in the rate, so it is an estimate.
"""

from __future__ import annotations

import math
import sqlite3
import time

import numpy as np

from fnodiag.runs import states
from fnodiag.runs.liveness import heartbeat_age_s
from fnodiag.runs.reader import StoreReader

RATE_WINDOW = 200  # recent steps the rate is measured over


def run_progress(
    status: dict | None,
    effective: dict | None,
    steps=None,
    walls=None,
    *,
    started: float | None = None,
    now: float | None = None,
) -> dict:
    """Where a run stands.

    Parameters
    ----------
    status : dict or None
        ``RunDir.read_status()`` (a dead ``running`` run reads ``stopped``).
    effective : dict or None
        ``effective_config.json`` (``steps_per_epoch``, ``max_epochs``, ``wall_time_s``).
    steps, walls : (ROW,) arrays, optional
        Recent per-step rows of the store (step number, unix time), oldest first.
    started : float, optional
        Unix time of the store's first step (the elapsed time of a running run counts from it).
    now : float, optional
        Unix time of the reading (default: now).

    Returns
    -------
    dict
        ``state``, ``step`` (latest known), ``total_steps``, ``epoch``, ``epochs``, ``fraction``
        (step / total, 0..1; None when unknown), ``elapsed_s``, ``eta_s`` (running runs only),
        ``steps_per_s``, ``heartbeat_age_s``, and ``text``: one line for people.
    """
    status, effective = status or {}, effective or {}
    now = time.time() if now is None else now
    state = status.get("state", "pending")
    per_epoch, epochs = effective.get("steps_per_epoch"), effective.get("max_epochs")
    total = (
        int(per_epoch * epochs)
        if isinstance(per_epoch, (int, float)) and isinstance(epochs, int) and per_epoch > 0
        else None
    )
    steps = np.asarray([] if steps is None else steps, np.float64)
    walls = np.asarray([] if walls is None else walls, np.float64)
    step = status.get("step")
    if len(steps):
        step = max(int(steps[-1]) + 1, step or 0)  # steps done (the store's rows are 0-based)
    rate = None
    if len(steps) >= 2 and walls[-1] > walls[0]:
        rate = float((steps[-1] - steps[0]) / (walls[-1] - walls[0]))
    running = state == states.RUNNING
    elapsed = effective.get("wall_time_s") if not running else None
    if running and (started is not None or len(walls)):
        elapsed = now - float(started if started is not None else walls[0])
    eta = None
    if running and rate and total is not None and step is not None:
        eta = max(0.0, (total - step) / rate - (now - float(walls[-1])))
    age = heartbeat_age_s(status) if status else None
    fraction = None if total is None or step is None else min(1.0, step / total)
    if state == states.FINISHED and total is not None:
        fraction = 1.0
    out = {
        "state": state,
        "step": step,
        "total_steps": total,
        "epoch": status.get("epoch"),
        "epochs": epochs,
        "fraction": fraction,
        "elapsed_s": elapsed,
        "eta_s": eta,
        "steps_per_s": rate,
        "heartbeat_age_s": age,
    }
    out["text"] = progress_text(out)
    return out


def duration(seconds: float | None) -> str:
    """``1h02m``, ``3m07s``, ``12s``; ``?`` when unknown."""
    if seconds is None or not math.isfinite(seconds):
        return "?"
    s = max(0, int(round(seconds)))
    if s >= 3600:
        return f"{s // 3600}h{s // 60 % 60:02d}m"
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


def progress_text(p: dict) -> str:
    """One line for people, e.g.
    ``running · step 1234 / 8600 (14%) · epoch 3 / 20 · 2m10s elapsed · ~5m12s left · heartbeat 2s ago``."""
    parts = [p["state"]]
    if p.get("step") is not None:
        of = f" / {p['total_steps']}" if p.get("total_steps") else ""
        pct = f" ({100 * p['fraction']:.0f}%)" if p.get("fraction") is not None else ""
        parts.append(f"step {p['step']}{of}{pct}")
    if p.get("epoch") is not None:
        parts.append(f"epoch {p['epoch']}" + (f" / {p['epochs']}" if p.get("epochs") else ""))
    if p.get("elapsed_s") is not None:
        parts.append(f"{duration(p['elapsed_s'])} elapsed")
    if p["state"] == states.RUNNING:
        parts.append(f"~{duration(p['eta_s'])} left" if p.get("eta_s") is not None else "time left: measuring")
    if p.get("heartbeat_age_s") is not None and p["state"] in states.UNFINISHED:
        parts.append(f"heartbeat {duration(p['heartbeat_age_s'])} ago")
    return " · ".join(parts)


def read_progress(run, *, now: float | None = None) -> dict:
    """:func:`run_progress` of a :class:`~fnodiag.runs.RunDir` (its status, effective configuration, store)."""
    status = run.read_status() or {}
    effective = run.read_json("effective_config.json", {}) or {}
    steps = walls = started = None
    if status.get("state") in states.UNFINISHED and run.store_path.is_file():
        try:
            with StoreReader(run.store_path) as reader:
                steps, walls = reader.step_walls(last=RATE_WINDOW)
                started = reader.first_wall()
        except (ValueError, OSError, sqlite3.Error):  # an unreadable store: progress from the status alone
            pass
    return run_progress(status, effective, steps, walls, started=started, now=now)
