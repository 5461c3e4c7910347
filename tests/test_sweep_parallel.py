"""Sweeps beyond one process: placement maths, run ownership, --jobs 2, and a real two-node Ray cluster
whose worker node is killed while it trains (every summary must equal the one-process sweep's)."""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from conftest import TINY

from fnodiag.cli import main
from fnodiag.config import ConfigError
from fnodiag.runs.lock import RunBusy, RunLock
from fnodiag.sweeps.definition import load_definition
from fnodiag.sweeps.executors import Resources, gpu_slots, threads_per_run
from fnodiag.sweeps.runner import run_sweep

ARMS = {
    "control": {"model.arch": "hybrid", "optim.name": "adam"},
    "stable_sgd": {"model.arch": "stable_hybrid", "optim.name": "sgd", "optim.momentum": 0.9},
}
EPOCHS = 4
PY = Path(sys.executable)


def write_definition(folder: Path) -> Path:
    """The 2-arm x 1-seed sweep "par" on the TINY configuration, 4 epochs, live capture every 3 steps."""
    entries = lambda fields: [f'"{k}" = {json.dumps(v)}' for k, v in fields.items()]
    lines = [
        'name = "par"',
        "seeds = [7]",
        "[shared]",
        *entries({**TINY, "train.epochs": EPOCHS, "train.capture_every": 3}),
    ]
    for arm, settings in ARMS.items():
        lines += [f"[arms.{arm}]", *entries(settings)]
    path = folder / "par.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The sweep trained the classic way (--jobs 1, in this process): (definition path, summary).

    One torch thread per run everywhere (as a 1-CPU Ray task has), so every placement computes the
    same sums in the same order; other thread counts agree to about 1e-4 after four epochs."""
    folder = tmp_path_factory.mktemp("reference")
    toml = write_definition(folder)
    out = run_sweep(load_definition(toml), folder / "jobs1", cpus_per_run=1, echo=lambda _: None)
    return toml, json.loads((out / "summary.json").read_text())


def assert_same_summary(got: dict, want: dict, rtol: float = 1e-6) -> None:
    """Every run row and arm statistic equal to float tolerance; wall times aside."""

    def same(a, b, where):
        if isinstance(a, dict) and isinstance(b, dict):
            assert set(a) == set(b), where
            for k in a:
                if k != "wall_time_s":
                    same(a[k], b[k], f"{where}.{k}")
        elif isinstance(a, list) and isinstance(b, list):
            assert len(a) == len(b), where
            for i, (x, y) in enumerate(zip(a, b)):
                same(x, y, f"{where}[{i}]")
        elif isinstance(a, float) and isinstance(b, float):
            assert math.isclose(a, b, rel_tol=rtol, abs_tol=1e-7) or (math.isnan(a) and math.isnan(b)), (
                f"{where}: {a} != {b}"
            )
        else:
            assert a == b, f"{where}: {a!r} != {b!r}"

    same(got["runs"], want["runs"], "runs")
    same(got["arms"], want["arms"], "arms")
    assert got["verdict"]["avoided_collapse"] == want["verdict"]["avoided_collapse"]
    assert got["warnings"] == want["warnings"] == []


def assert_each_step_once(run: Path) -> None:
    """The store holds every optimizer step once: no step written twice, none missing."""
    with sqlite3.connect(f"file:{run / 'run.sqlite'}?mode=ro", uri=True) as db:
        dup = db.execute(
            "SELECT scope, name_id, step FROM scalars GROUP BY scope, name_id, step HAVING COUNT(*) > 1"
        ).fetchall()
        dup += db.execute(
            "SELECT step, source_id, stat_id FROM layer_stats GROUP BY step, source_id, stat_id HAVING COUNT(*) > 1"
        ).fetchall()
        steps = [
            s
            for (s,) in db.execute(
                "SELECT s.step FROM scalars s JOIN names n ON n.id = s.name_id "
                "WHERE n.text = 'train/loss' ORDER BY s.step"
            )
        ]
    assert dup == [], f"{run.name}: rows written twice {dup[:5]}"
    per_epoch = json.loads((run / "effective_config.json").read_text())["steps_per_epoch"]
    assert steps == list(range(EPOCHS * per_epoch)), run.name


# -- placement and ownership ----------------------------------------------------------------------
def test_threads_and_gpu_slots_divide_the_machine():
    assert [threads_per_run(16, k) for k in (1, 2, 3, 4, 32)] == [16, 8, 5, 4, 1]
    assert gpu_slots(1, 0.25, 8) == ["0"] * 4
    assert gpu_slots(2, 0.5, 8) == ["0", "1", "0", "1"] and gpu_slots(2, 0.5, 3) == ["0", "1", "0"]
    assert gpu_slots(4, 1, 8) == ["0", "1", "2", "3"] and gpu_slots(4, 2, 8) == ["0,1", "2,3"]
    with pytest.raises(ConfigError, match="none is visible"):
        gpu_slots(0, 0.25, 2)
    with pytest.raises(ConfigError, match="whole number"):
        gpu_slots(4, 1.5, 2)
    cores = len(os.sched_getaffinity(0))
    plan = Resources.plan("local", jobs=2)
    assert plan.jobs == 2 and plan.threads == max(1, cores // 2) and plan.threads * plan.jobs <= cores
    for bad, match in (
        (dict(jobs=0), "--jobs"),
        (dict(gpus_per_run=-1), "--gpus-per-run"),
        (dict(jobs=2, cpus_per_run=cores), "exceed"),
        (dict(address="1.2.3.4:6379"), "--executor ray"),
    ):
        with pytest.raises(ConfigError, match=match):
            Resources.plan("local", **bad)


def test_a_task_travels_to_workers_by_name():
    from fnodiag.sweeps.executors import load_task, task_path
    from fnodiag.sweeps.task import run_one

    assert task_path(run_one) == "fnodiag.sweeps.task:run_one" and load_task("fnodiag.sweeps.task:run_one") is run_one
    with pytest.raises(ValueError, match="module-level function"):
        task_path(lambda spec, callbacks=(): {})
    with pytest.raises(ValueError, match="package.module:function"):
        load_task("fnodiag.sweeps.task.run_one")


def test_run_lock_is_exclusive_across_processes_and_freed_when_its_holder_dies(tmp_path):
    run = tmp_path / "arm-s1"
    holder = subprocess.Popen(
        [
            str(PY),
            "-c",
            "import sys, time; from fnodiag.runs.lock import RunLock; "
            f"RunLock({str(run)!r}).acquire({{'host': 'h', 'pid': 42}}); print('held', flush=True); "
            "time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        assert RunLock(run).is_held()
        with pytest.raises(RunBusy, match="pid 42 on h"):
            RunLock(run).acquire({"pid": os.getpid()})
    finally:
        holder.kill()
        holder.wait()
    assert not RunLock(run).is_held()
    with RunLock(run).acquire({"pid": os.getpid()}) as lock:
        assert lock.is_held() and lock.holder()["pid"] == os.getpid()


@pytest.mark.slow
def test_a_run_owned_by_another_process_is_left_alone(reference, tmp_path):
    toml, _ = reference
    out = tmp_path / "busy"
    lock = RunLock(out / "control-s7").acquire({"host": "elsewhere", "pid": 1})
    try:
        lines = []
        run_sweep(load_definition(toml), out, arms=["control"], echo=lines.append)
    finally:
        lock.release()
    assert any("busy" in line and "pid 1 on elsewhere" in line for line in lines)
    assert not (out / "control-s7" / "status.json").exists()  # nothing trained, nothing written into the run
    assert json.loads((out / "sweep.json").read_text())["runs"]["control-s7"]["state"] == "busy"


def test_cli_placement_errors_and_ray_missing_are_one_line(reference, tmp_path, monkeypatch, capsys):
    toml, _ = reference
    assert main(["sweep", str(toml), "--jobs", "0", "--out", str(tmp_path / "s")]) == 2
    assert "--jobs 0 must be a whole number >= 1" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()  # refused before anything was written
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    assert main(["sweep", str(toml), "--executor", "ray", "--out", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err
    assert "pip install 'fnodiag[ray]'" in err and len(err.strip().splitlines()) == 1


# -- two local worker processes -------------------------------------------------------------------
@pytest.mark.slow
def test_jobs_2_trains_two_runs_at_once_and_summarizes_like_jobs_1(reference, tmp_path):
    toml, want = reference
    out, lines = tmp_path / "jobs2", []
    run_sweep(load_definition(toml), out, jobs=2, cpus_per_run=1, echo=lines.append)
    assert any("running: control-s7, stable_sgd-s7" in line for line in lines)  # both workers at once
    assert any(line.startswith("[2/2] stable_sgd seed 7: epoch 4/4") for line in lines)  # progress of each
    assert_same_summary(json.loads((out / "summary.json").read_text()), want)
    pids = set()
    for name in ("control-s7", "stable_sgd-s7"):
        execution = json.loads((out / name / "effective_config.json").read_text())["execution"]
        assert execution["threads"] == execution["torch_threads"] == 1 and execution["jobs"] == 2
        pids.add(execution["pid"])
        assert_each_step_once(out / name)
    assert len(pids) == 2 and os.getpid() not in pids  # separate worker processes
    manifest = json.loads((out / "sweep.json").read_text())
    assert manifest["execution"]["executor"] == "local" and manifest["execution"]["jobs"] == 2
    lines.clear()  # again: a finished run is never trained twice
    run_sweep(load_definition(toml), out, jobs=2, cpus_per_run=1, echo=lines.append)
    assert sum("finished, skipped" in line for line in lines) == 2
    assert all(len(r["attempts"]) == 1 for r in json.loads((out / "sweep.json").read_text())["runs"].values())


# -- a real Ray cluster: a head and a worker node, the worker killed mid-run ----------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tree(pid: int) -> set[int]:
    """``pid`` and all its descendants (from /proc)."""
    children: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(d.name))
    out, todo = set(), [pid]
    while todo:
        p = todo.pop()
        out.add(p)
        todo += children.get(p, [])
    return out


def _alive(pids) -> set[int]:
    alive = set()
    for p in pids:
        try:
            state = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            alive.add(p)
    return alive


def _with_text(text: str) -> set[int]:
    """Processes whose command line mentions ``text`` (the cluster's temp dir: gcs, raylets, monitors)."""
    found = set()
    for d in Path("/proc").iterdir():
        if d.name.isdigit() and int(d.name) != os.getpid():
            try:
                if text.encode() in (d / "cmdline").read_bytes():
                    found.add(int(d.name))
            except OSError:
                pass
    return found


def _kill(pids) -> None:
    for p in pids:
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.fixture
def ray_cluster():
    """`ray start --head` and one `ray start --address` worker node (1 CPU each) on 127.0.0.1, each in its
    own session; everything they started is SIGKILLed at teardown, and none of it may survive."""
    pytest.importorskip("ray")
    ray_cli = PY.parent / "ray"
    temp = tempfile.mkdtemp(prefix="rt", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
    port = _free_port()
    env = {
        **os.environ,
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_DISABLE_USAGE_STATS": "1",
        "RAY_AUTH_MODE": "disabled",  # a loopback test cluster: no token
        "RAY_health_check_period_ms": "500",
        "RAY_health_check_failure_threshold": "4",
    }  # a dead node seen in ~2 s
    common = ["--num-cpus", "1", "--node-ip-address", "127.0.0.1", "--disable-usage-stats", "--block"]
    logs = open(Path(temp) / "nodes.log", "w")
    procs = {
        "head": subprocess.Popen(
            [
                str(ray_cli),
                "start",
                "--head",
                "--port",
                str(port),
                "--temp-dir",
                temp,
                "--include-dashboard=false",
                *common,
            ],
            env=env,
            stdout=logs,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    }
    seen: set[int] = set()
    try:
        _wait_for_nodes(port, 1, env, procs, temp)
        procs["worker"] = subprocess.Popen(
            [str(ray_cli), "start", "--address", f"127.0.0.1:{port}", *common],
            env=env,
            stdout=logs,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        _wait_for_nodes(port, 2, env, procs, temp)
        yield {"address": f"127.0.0.1:{port}", "procs": procs, "temp": temp, "env": env, "seen": seen}
    finally:
        _stop_cluster(procs, temp, seen, logs)


def _stop_cluster(procs: dict, temp: str, seen: set, logs) -> None:
    """SIGKILL everything a test cluster started (and its temp folder); none of it may survive."""
    for _ in range(3):  # the trees first (ray workers rename their command lines), then by temp dir
        doomed = set().union(*(_tree(p.pid) for p in procs.values())) | _with_text(temp) | _alive(seen)
        seen |= doomed
        _kill(doomed)
        time.sleep(0.5)
    for p in procs.values():
        p.wait(10)
    logs.close()
    left = _alive(seen) | _with_text(temp)
    subprocess.run(["rm", "-rf", temp])
    assert not left, f"Ray processes left running: {sorted(left)}"


def _wait_for_nodes(port: int, n: int, env: dict, procs: dict, temp: str, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    probe = (
        "import ray, sys; ray.init(address=sys.argv[1], logging_level='ERROR'); "
        "print(sum(x['Alive'] for x in ray.nodes()))"
    )
    while time.monotonic() < deadline:
        dead = [k for k, p in procs.items() if p.poll() is not None]
        if dead:
            log = (Path(temp) / "nodes.log").read_text()[-2000:]
            raise AssertionError(f"`ray start` of the {dead[0]} node exited with {procs[dead[0]].returncode}:\n{log}")
        try:
            r = subprocess.run(
                [str(PY), "-c", probe, f"127.0.0.1:{port}"], env=env, capture_output=True, text=True, timeout=90
            )
        except subprocess.TimeoutExpired:
            continue
        if r.returncode == 0 and r.stdout.strip().splitlines()[-1:] == [str(n)]:
            return
        time.sleep(1)
    raise AssertionError(f"the Ray cluster on port {port} did not reach {n} nodes in {timeout:.0f} s")


@pytest.mark.ray
@pytest.mark.slow
def test_ray_sweep_survives_a_killed_worker_node(reference, ray_cluster, tmp_path):
    toml, want = reference
    out = tmp_path / "ray"
    driver = subprocess.Popen(
        [
            str(PY),
            "-m",
            "fnodiag.cli",
            "sweep",
            str(toml),
            "--executor",
            "ray",
            "--address",
            ray_cluster["address"],
            "--out",
            str(out),
        ],
        env=ray_cluster["env"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    worker_node = ray_cluster["procs"]["worker"].pid
    killed = None
    try:
        deadline = time.monotonic() + 180
        while killed is None and driver.poll() is None and time.monotonic() < deadline:
            for name in ("control-s7", "stable_sgd-s7"):  # the run training on the worker node, past epoch 1
                attempts = _read(out / name / "execution.json", {}).get("attempts", [])
                status = _read(out / name / "status.json", {})
                tree = _tree(worker_node)
                if (
                    attempts
                    and attempts[-1]["pid"] in tree
                    and status.get("state") == "running"
                    and status["epoch"] >= 1
                    and (out / name / "checkpoints" / "last.ckpt").is_file()
                ):
                    ray_cluster["seen"].update(tree)
                    _kill(tree)  # the whole node: raylet, its agents and the worker training the run
                    killed = (name, attempts[-1]["node"], status["epoch"])
                    break
            time.sleep(0.05)
        log, _ = driver.communicate(timeout=240)
    finally:
        driver.kill()
    assert killed, f"no run trained on the worker node long enough to be killed:\n{log[-3000:]}"
    assert driver.returncode == 0, log[-3000:]
    name, dead_node, epoch = killed
    manifest = json.loads((out / "sweep.json").read_text())
    for run, rec in manifest["runs"].items():
        assert rec["state"] == "finished" and rec["host"] == socket.gethostname()
        history = json.loads((out / run / "history.json").read_text())
        assert len(history["train_loss"]) == EPOCHS
        assert_each_step_once(out / run)
        if run == name:  # retried elsewhere, resumed from the checkpoint the killed worker left
            assert [a["node"] for a in rec["attempts"]][0] == dead_node and rec["node"] != dead_node
            assert len(rec["attempts"]) == 2 and rec["attempts"][1]["resumed"]
            effective = json.loads((out / run / "effective_config.json").read_text())
            assert effective["resumed_from"]["epoch"] >= epoch and effective["execution"]["attempt"] == 2
        else:
            assert len(rec["attempts"]) == 1
    assert len({r["attempts"][0]["node"] for r in manifest["runs"].values()}) == 2  # the runs used both nodes
    assert manifest["execution"] == {**manifest["execution"], "executor": "ray", "address": ray_cluster["address"]}
    assert_same_summary(json.loads((out / "summary.json").read_text()), want)


def _read(path: Path, default):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return default


@pytest.mark.slow
def test_a_worker_that_dies_without_a_word_is_marked_by_the_driver(reference, tmp_path, monkeypatch):
    """The executor runs the task it is given, imported by name in its worker; the worker exits mid-run
    (no result line): the driver marks the run interrupted and records it in sweep.json."""
    from sweep_tasks import die_while_running

    from fnodiag.runs import RunDir

    toml, _ = reference
    tests = str(Path(__file__).parent)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (tests, os.environ.get("PYTHONPATH")) if p))
    out, lines = tmp_path / "dies", []
    run_sweep(
        load_definition(toml), out, arms=["control"], jobs=2, cpus_per_run=1, task=die_while_running, echo=lines.append
    )
    message = "worker exited with code 9; run the same command again to resume"
    assert f"[1/1] control seed 7 died: {message}" in lines
    status = RunDir(out / "control-s7").read_status(raw=True)
    assert (status["state"], status["step"], status["message"]) == ("interrupted", 3, message)
    assert json.loads((out / "sweep.json").read_text())["runs"]["control-s7"]["state"] == "died"
    assert json.loads((out / "summary.json").read_text())["runs"][0]["state"] == "interrupted"
