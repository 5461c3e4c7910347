"""A real Ray cluster with no shared disk for the run stores: the worker node cannot see the driver's sweep folder.

The head node (no CPU: it trains nothing) and the driver share this mount namespace; the one worker
node runs in its own (``unshare --mount``, root only) with a private empty tmpfs over the driver's
folder, so whatever it wrote there would vanish. The runs must still all finish in the driver's
folder, each step stored once, the summary equal to ``--jobs 1``'s, and the driver's folder must show
them live while they train; only ``--storage`` (checkpoints, datasets) is a folder both see.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
from test_sweep_parallel import (  # noqa: F401 - `reference` is a fixture this module uses
    PY,
    _alive,
    _free_port,
    _stop_cluster,
    _tree,
    _wait_for_nodes,
    assert_each_step_once,
    assert_same_summary,
    reference,
)

from fnodiag.runs.reader import StoreReader


def _can_unshare() -> bool:
    if os.geteuid() != 0 or not shutil.which("unshare"):
        return False
    probe = tempfile.mkdtemp(prefix="b7u")
    try:
        r = subprocess.run(
            ["unshare", "--mount", "--propagation", "private", "mount", "-t", "tmpfs", "none", probe],
            capture_output=True,
            timeout=30,
        )
        return r.returncode == 0
    finally:
        os.rmdir(probe)


@pytest.fixture
def private_cluster(tmp_path):
    """Head node (0 CPUs) here; one worker node (2 CPUs) in its own mount namespace, ``tmp_path/driver`` hidden
    under an empty tmpfs there. Everything started is SIGKILLed at teardown, and none of it may survive."""
    pytest.importorskip("ray")
    if not _can_unshare():
        pytest.skip("needs root and `unshare --mount` to hide the driver's folder from the worker node")
    hidden = tmp_path / "driver"
    hidden.mkdir()
    ray_cli = PY.parent / "ray"
    temp = tempfile.mkdtemp(prefix="rt", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
    port = _free_port()
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_DISABLE_USAGE_STATS": "1", "RAY_AUTH_MODE": "disabled"}
    common = ["--node-ip-address", "127.0.0.1", "--disable-usage-stats", "--block"]
    logs = open(Path(temp) / "nodes.log", "w")
    head = [str(ray_cli), "start", "--head", "--port", str(port), "--temp-dir", temp, "--include-dashboard=false"]
    procs = {
        "head": subprocess.Popen(
            [*head, "--num-cpus", "0", *common], env=env, stdout=logs, stderr=subprocess.STDOUT, start_new_session=True
        )
    }
    seen: set[int] = set()
    try:
        _wait_for_nodes(port, 1, env, procs, temp, timeout=180)  # a loaded machine starts nodes slowly
        worker = [str(ray_cli), "start", "--address", f"127.0.0.1:{port}", "--num-cpus", "2", *common]
        procs["worker"] = subprocess.Popen(
            ["unshare", "--mount", "--propagation", "private", "sh", "-c", 'mount -t tmpfs none "$0" && exec "$@"']
            + [str(hidden), *worker],
            env=env,
            stdout=logs,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        _wait_for_nodes(port, 2, env, procs, temp, timeout=180)  # a loaded machine starts nodes slowly
        yield {"address": f"127.0.0.1:{port}", "procs": procs, "env": env, "seen": seen, "hidden": hidden}
    finally:
        _stop_cluster(procs, temp, seen, logs)


def _read(path: Path, default):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return default


@pytest.mark.ray
@pytest.mark.slow
def test_a_ray_sweep_whose_worker_cannot_see_the_driver_folder_stores_every_run_on_the_driver(
    reference,  # noqa: F811 - the fixture imported above
    private_cluster,
    tmp_path,
):
    toml, want = reference
    out, storage = private_cluster["hidden"] / "sweep", tmp_path / "storage"
    command = [str(PY), "-m", "fnodiag.cli", "sweep", str(toml), "--executor", "ray"]
    command += ["--address", private_cluster["address"], "--out", str(out), "--storage", str(storage)]
    driver = subprocess.Popen(
        command, env=private_cluster["env"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    worker_node = private_cluster["procs"]["worker"].pid
    live, blind = set(), set()  # runs seen training in the driver's folder; trainers that could not see it
    try:
        deadline = time.monotonic() + 300
        while driver.poll() is None and time.monotonic() < deadline:
            for name in ("control-s7", "stable_sgd-s7"):
                status = _read(out / name / "status.json", {})
                attempts = _read(out / name / "execution.json", {}).get("attempts", [])
                if status.get("state") != "running" or not attempts:
                    continue
                pid = attempts[-1]["pid"]
                if pid in _tree(worker_node):  # the trainer, on the worker node: the folder is empty for it
                    private_cluster["seen"].add(pid)
                    try:
                        if not any(Path(f"/proc/{pid}/root{private_cluster['hidden']}").iterdir()):
                            blind.add(name)
                    except OSError:
                        pass
                try:
                    with StoreReader(out / name / "run.sqlite") as reader:
                        if len(reader.scalars("train/loss")) > 0:
                            live.add(name)  # what the dashboard reads, beside the driver, while it trains
                except Exception:  # the store is not created yet
                    pass
            time.sleep(0.1)
        log, _ = driver.communicate(timeout=240)
    finally:
        driver.kill()
    assert driver.returncode == 0, log[-3000:]
    assert blind == live == {"control-s7", "stable_sgd-s7"}, log[-3000:]
    manifest = json.loads((out / "sweep.json").read_text())
    for run, rec in manifest["runs"].items():
        assert rec["state"] == "finished", (run, rec)
        assert len(json.loads((out / run / "history.json").read_text())["train_loss"]) == 4
        assert_each_step_once(out / run)
        for rel in ("checkpoints/last.ckpt", "model.pt", "capture/best.json"):
            assert (storage / run / rel).is_file() and (out / run / rel).is_file(), rel  # travelled, collected
    assert_same_summary(json.loads((out / "summary.json").read_text()), want)
