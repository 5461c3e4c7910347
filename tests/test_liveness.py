"""A dead run is not "running": heartbeat, writer host/pid, and the one liveness rule every reader applies."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from fnodiag.runs import RunDir, live_status
from fnodiag.runs.liveness import HOST, Heartbeat

TINY_ARGS = [
    "--N",
    "32",
    "--object-size",
    "64",
    "--set-phi",
    "--blocks",
    "2",
    "--width",
    "4",
    "--modes",
    "4",
    "--batch-size",
    "8",
    "--infer-batch-size",
    "16",
    "--capture-every",
    "0",
    "--accelerator",
    "cpu",
    "--no-progress",
]


def _status(state="running", age_s=1.0, host=HOST, pid=None):
    updated = datetime.now(UTC) - timedelta(seconds=age_s)
    return {
        "state": state,
        "step": 7,
        "epoch": 1,
        "updated": updated.isoformat(timespec="milliseconds"),
        "host": host,
        "pid": os.getpid() if pid is None else pid,
        "message": "epoch 1/4 done",
    }


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_live_status_rule():
    assert live_status(_status())["state"] == "running"  # this process, fresh heartbeat
    assert live_status(_status(host="elsewhere", age_s=30))["state"] == "running"  # other node, fresh enough
    gone = live_status(_status(pid=_dead_pid(), age_s=0.5), path="runs/r")  # dead on this host: stopped at once
    assert gone["state"] == "stopped" and "is gone" in gone["message"]
    assert "fnodiag train --resume runs/r" in gone["message"] and gone["last_message"] == "epoch 1/4 done"
    stale = live_status(_status(host="elsewhere", age_s=120))
    assert stale["state"] == "stopped" and "120 s old" in stale["message"]
    assert live_status(_status(age_s=120))["state"] == "stopped"  # a live pid does not excuse a stale heartbeat
    for state in ("finished", "failed", "interrupted", "diverged"):
        assert live_status(_status(state, age_s=1e6, pid=_dead_pid()))["state"] == state
    assert live_status(None) is None
    legacy = {k: v for k, v in _status(age_s=1e4).items() if k not in ("host", "pid")}  # written before heartbeats
    assert live_status(legacy)["state"] == "stopped"


def test_heartbeat_rewrites_until_stopped():
    writes = []
    beat = Heartbeat(lambda **f: writes.append((time.monotonic(), f)), period=0.05)
    beat.beat(step=3, epoch=0, message="m")
    time.sleep(0.4)
    beat.stop()
    n = len(writes)
    assert n >= 4 and all(f == {"step": 3, "epoch": 0, "message": "m"} for _, f in writes)
    time.sleep(0.2)
    assert len(writes) == n  # nothing after stop, so a final state is never overwritten
    beat.beat(step=4, epoch=0, message="late")
    assert len(writes) == n


@pytest.mark.slow
def test_sigkilled_run_reads_as_stopped_and_resumes(tmp_path, dataset_cache):
    """kill -9 a real training process: its status stays 'running' on disk, every reader says 'stopped',
    and ``fnodiag train --resume`` finishes it."""
    exe = Path(sys.executable).with_name("fnodiag")
    run_dir = tmp_path / "runs" / "k"
    epochs = 12  # long enough that the kill lands while it trains, on a quiet machine too
    proc = subprocess.Popen(
        [
            str(exe),
            "train",
            *TINY_ARGS,
            "--epochs",
            str(epochs),
            "--out",
            str(tmp_path / "runs"),
            "--name",
            "k",
            "--cache-dir",
            str(dataset_cache),
        ],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    run = RunDir(run_dir)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and not run.last_ckpt_path.is_file() and proc.poll() is None:
        time.sleep(0.1)
    first = run.read_status(raw=True)
    live = first
    while time.monotonic() < deadline and live["updated"] == first["updated"] and proc.poll() is None:
        time.sleep(0.02)  # until the status is rewritten (heartbeat or epoch end) while it trains
        live = run.read_status()
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert live["state"] == "running" and live["pid"] == proc.pid and live["host"] == HOST
    assert live["updated"] > first["updated"]  # the heartbeat moved while it trained
    raw = json.loads(run.status_path.read_text())
    assert raw["state"] == "running"  # nothing final was written ...
    status = run.read_status()  # ... but no reader believes it
    assert status["state"] == "stopped" and f"fnodiag train --resume {run_dir}" in status["message"]

    res = subprocess.run(
        [str(exe), "train", "--resume", str(run_dir), "--no-progress", "--cache-dir", str(dataset_cache)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    assert run.read_status()["state"] == "finished"
    assert run.read_json("effective_config.json")["resumed_from"]["epoch"] >= 1
    assert len(run.read_history()["train_loss"]) == epochs
