"""Progress at a glance (fnodiag.runs.progress): step / total, epoch, elapsed, time left, heartbeat age."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import numpy as np

from fnodiag.config import RunConfig
from fnodiag.runs import RunDir, RunStore
from fnodiag.runs.progress import duration, read_progress, run_progress

EFFECTIVE = {"steps_per_epoch": 10, "max_epochs": 5}


def _status(state="running", step=18, epoch=1, age_s=3.0, pid=None):
    updated = (datetime.now(UTC) - timedelta(seconds=age_s)).isoformat()
    return {"state": state, "step": step, "epoch": epoch, "updated": updated, "host": "elsewhere", "pid": pid}


def test_running_run_has_step_of_total_eta_and_heartbeat():
    steps = np.arange(20)
    walls = 1000.0 + 0.5 * steps  # 2 steps / s
    p = run_progress(_status(), EFFECTIVE, steps, walls, started=990.0, now=walls[-1] + 1.0)
    assert (p["step"], p["total_steps"], p["epoch"], p["epochs"]) == (20, 50, 1, 5)  # the store is ahead of the status
    assert p["fraction"] == 0.4 and p["steps_per_s"] == 2.0
    assert p["eta_s"] == (50 - 20) / 2.0 - 1.0
    assert p["elapsed_s"] == walls[-1] + 1.0 - 990.0
    assert 2.5 < p["heartbeat_age_s"] < 60
    for part in ("running", "step 20 / 50 (40%)", "epoch 1 / 5", "~14s left", "heartbeat 3s ago", "elapsed"):
        assert part in p["text"], (part, p["text"])


def test_states_other_than_running_have_no_eta():
    done = run_progress({"state": "finished", "step": 50, "epoch": 5}, {**EFFECTIVE, "wall_time_s": 125.0})
    assert done["fraction"] == 1.0 and done["eta_s"] is None and done["elapsed_s"] == 125.0
    assert "left" not in done["text"] and "2m05s elapsed" in done["text"]
    stopped = run_progress(_status("stopped", age_s=90.0), EFFECTIVE, np.arange(5), 1000.0 + np.arange(5))
    assert (
        stopped["eta_s"] is None and stopped["text"].startswith("stopped") and "heartbeat 1m30s ago" in stopped["text"]
    )
    fresh = run_progress(_status(step=0), EFFECTIVE)  # running, nothing in the store yet
    assert "time left: measuring" in fresh["text"] and fresh["fraction"] == 0.0
    assert run_progress(None, None)["text"] == "pending"
    assert [duration(x) for x in (None, 5.2, 65, 3725)] == ["?", "5s", "1m05s", "1h02m"]


def test_read_progress_of_a_live_and_a_dead_run(tmp_path):
    run = RunDir.create(tmp_path / "r", RunConfig())
    run.write_json("effective_config.json", EFFECTIVE)
    run.write_status("running", step=3, epoch=0)  # this process: alive
    with RunStore(run.store_path) as store:
        for step in range(4):
            store.log_scalars(step, 0, {"train/loss": 1.0})
    p = read_progress(run)
    assert p["state"] == "running" and p["step"] == 4 and p["total_steps"] == 50 and p["elapsed_s"] >= 0
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    status = run.read_status(raw=True)
    run.write_json("status.json", {**status, "pid": int(dead.stdout)})  # its writer is gone
    p = read_progress(run)
    assert p["state"] == "stopped" and p["eta_s"] is None and p["step"] == 4
    assert os.getpid() != int(dead.stdout)
