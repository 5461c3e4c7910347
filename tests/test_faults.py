"""Faults and bad input (issue 26): each numbered case of the fault probe, reproduced, and what must happen.

The README's fault table lists every case with the test here that guards it.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from lightning.pytorch.loggers import CSVLogger
from reference_arm import build_reference_arm

from fnodiag.cli import main
from fnodiag.interop.reference_log import read_metrics_csv
from fnodiag.runs import RunDir, StoreReader, states
from fnodiag.runs.names import TRAIN_LOSS


@pytest.fixture(scope="module")
def arm(tmp_path_factory):
    return build_reference_arm(tmp_path_factory.mktemp("ref") / "arm_stable_sgd")


# -- 13: a CSVLogger file whose rows carry a step but no epoch is a valid file --------------------------------------


def _csvlogger_file(root, *, with_trainer_epoch: bool):
    """A metrics.csv written by Lightning's own CSVLogger through ``log_metrics(..., step=...)`` (no Trainer)."""
    logger = CSVLogger(root, name="x")
    for step in range(4):
        logger.log_metrics({"mae_train_loss_step": 1.0 / (step + 1)}, step=step)
    if with_trainer_epoch:  # what a Trainer adds at epoch end: a row that carries the epoch
        logger.log_metrics({"mae_val_loss": 0.5, "epoch": 0}, step=3)
    logger.save()
    return root / "x" / "version_0" / "metrics.csv"


@pytest.mark.parametrize("with_trainer_epoch", [False, True], ids=["no-epoch-column", "empty-epoch-cells"])
def test_13_csvlogger_rows_without_an_epoch_are_read(tmp_path, with_trainer_epoch):
    path = _csvlogger_file(tmp_path, with_trainer_epoch=with_trainer_epoch)
    rows = read_metrics_csv(path)
    assert [(step, epoch) for step, epoch, _ in rows][:4] == [(0, 0), (1, 0), (2, 0), (3, 0)]
    assert rows[0][2] == {"mae_train_loss_step": 1.0}


def test_13_import_of_an_arm_whose_log_has_no_epochs(arm, tmp_path, capsys):
    bad = tmp_path / "arm"
    shutil.copytree(arm, bad)
    logs = bad / "lightning_logs"
    shutil.rmtree(logs)
    written = _csvlogger_file(tmp_path / "log", with_trainer_epoch=False)
    (logs / "version_0").mkdir(parents=True)
    shutil.copy(written, logs / "version_0" / "metrics.csv")
    out = tmp_path / "runs" / "imported"
    assert main(["import", str(bad), "--out", str(out), "--no-capture"]) == 0, capsys.readouterr().err
    with StoreReader(RunDir(out).store_path) as reader:
        assert reader.scalars(TRAIN_LOSS).step.tolist() == [0, 1, 2, 3]


# -- 6: a decompression bomb is refused before it is inflated, in bounded memory ------------------------------------

BOMB_BYTES = 1 << 30  # what the crafted record inflates to


def _bomb(path):
    """A torch.save archive whose one data record is replaced by 1 GiB of zeros, deflated (~4.7 MB on disk)."""
    import zipfile

    import torch

    small = path.with_suffix(".small")
    torch.save({"generator.head.weight": torch.zeros(4)}, small)
    with zipfile.ZipFile(small) as src, zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as dst:
        for info in src.infolist():
            if info.filename.endswith("/data/0"):
                with dst.open(info.filename, "w", force_zip64=True) as out:
                    chunk = bytes(64 << 20)
                    for _ in range(BOMB_BYTES // len(chunk)):
                        out.write(chunk)
            else:
                dst.writestr(info, src.read(info.filename))
    small.unlink()
    return path


def _peak_growth(argv: list[str], cwd) -> tuple[int, str, int]:
    """``(exit status, stderr, peak memory growth in bytes)`` of ``fnodiag ARGV`` in a fresh process."""
    import subprocess
    import sys

    code = (
        "import resource, sys, contextlib, io\nimport fnodiag.cli\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "err = io.StringIO()\nwith contextlib.redirect_stderr(err):\n    rc = fnodiag.cli.main(sys.argv[1:])\n"
        "after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "print(rc, (after - before) * 1024)\nprint(err.getvalue(), file=sys.stderr)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=600, cwd=cwd)
    rc, growth = proc.stdout.split()[-2:]
    return int(rc), proc.stderr.strip(), int(growth)


@pytest.fixture(scope="module")
def bomb(tmp_path_factory):
    return _bomb(tmp_path_factory.mktemp("bomb") / "model.pt")


@pytest.mark.slow
def test_6_capture_refuses_a_decompression_bomb_in_bounded_memory(bomb, tmp_path):
    size = bomb.stat().st_size
    rc, err, growth = _peak_growth(["capture", "--checkpoint", str(bomb), "--output", str(tmp_path / "o")], tmp_path)
    assert rc == 2 and "was not inflated" in err and len(err.splitlines()) == 1, err
    assert growth < 10 * size, f"peak memory grew {growth:,} bytes for a {size:,}-byte file"


@pytest.mark.slow
def test_6_import_refuses_a_decompression_bomb_in_bounded_memory(arm, bomb, tmp_path):
    bad = tmp_path / "arm"
    shutil.copytree(arm, bad)
    models = list(bad.glob("runs/pinn_*/model.pt"))
    assert models
    for model in models:
        shutil.copy(bomb, model)
    size = bomb.stat().st_size
    out = tmp_path / "runs" / "x"
    rc, err, growth = _peak_growth(["import", str(bad), "--out", str(out)], tmp_path)
    assert growth < 10 * size, f"peak memory grew {growth:,} bytes for a {size:,}-byte file"
    # the import goes on without the capture of model.pt and records why
    assert rc == 0, err
    assert any("was not inflated" in item for item in RunDir(out).read_json("imported.json")["missing"])


# -- 10: messages that name the problem and the fix ---------------------------------------------------------------


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["--lr", "inf"], "optim.lr=inf must be a finite number > 0"),
        (
            ["--seed", "99999999999999999999999"],
            "train.seed=99999999999999999999999 must be an integer in [0, 4294967295] (--seed",
        ),
    ],
)
def test_10_setting_messages_name_the_setting_and_the_range(argv, expected, tmp_path, capsys):
    assert main(["train", "--preset", "quick", "--out", str(tmp_path), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert expected in err and len(err.splitlines()) == 1, err
    assert not any(tmp_path.iterdir())  # nothing written


def test_10_a_non_utf8_record_is_named(tmp_path):
    run = RunDir(tmp_path / "r")
    run.path.mkdir()
    (run.path / "metrics.json").write_bytes(b'{"best": "\\xff\\xfe"}' + bytes([0xFF, 0xFE]))
    with pytest.raises(ValueError, match=r"metrics.json' is not UTF-8 text"):
        run.read_json("metrics.json")


# -- 4: one damaged run does not stop the summary or the dashboard -------------------------------------------------


@pytest.fixture(scope="module")
def small_sweep(tmp_path_factory, tiny_cfg, dataset_cache):
    """A sweep folder ``sw`` of three finished one-epoch runs (arms a, b, c; seed 1) and its ``sweep.json``."""
    from fnodiag.training.run import train

    folder = tmp_path_factory.mktemp("faults") / "sw"
    cfg = tiny_cfg.override({"train.epochs": 1, "train.seed": 1})
    for arm in ("a", "b", "c"):
        train(cfg, folder, name=f"{arm}-s1", cache_dir=dataset_cache, progress=False)
    runs = {f"{arm}-s1": {"arm": arm, "seed": 1, "path": f"{arm}-s1"} for arm in ("a", "b", "c")}
    (folder / "sweep.json").write_text(json.dumps({"name": "sw", "seeds": [1], "arms": ["a", "b", "c"], "runs": runs}))
    return folder


def _copy(folder, dest):
    shutil.copytree(folder, dest, ignore=shutil.ignore_patterns("datasets"))
    return dest


def _truncate_store(run_path):
    """Fold the WAL into ``run.sqlite`` and cut the file in half: what a full disk or a killed copy leaves."""
    store = run_path / "run.sqlite"
    with sqlite3.connect(store) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    for extra in ("run.sqlite-wal", "run.sqlite-shm"):
        (run_path / extra).unlink(missing_ok=True)
    os.truncate(store, store.stat().st_size // 2)


@pytest.fixture
def damaged_sweep(small_sweep, tmp_path):
    """``small_sweep`` with a truncated store in a-s1 and a metrics.json that does not parse in b-s1."""
    folder = _copy(small_sweep, tmp_path / "runs" / "sw")
    _truncate_store(folder / "a-s1")
    (folder / "b-s1" / "metrics.json").write_text('{"best": {')
    return folder


def test_4_summarize_reports_a_damaged_run_and_summarizes_the_others(damaged_sweep, capsys):
    assert main(["summarize", str(damaged_sweep)]) == 0, capsys.readouterr().err
    summary = json.loads((damaged_sweep / "summary.json").read_text())
    rows = {r["run"]: r for r in summary["runs"]}
    assert rows["a-s1"]["state"] == rows["b-s1"]["state"] == states.DAMAGED
    assert "a-s1/run.sqlite' is damaged" in rows["a-s1"]["message"]
    assert "b-s1/metrics.json' is not valid JSON" in rows["b-s1"]["message"]
    assert rows["c-s1"]["state"] == states.FINISHED and rows["c-s1"]["last_amp_ssim"] is not None
    warned = [w for w in summary["warnings"] if "damaged" in w]
    assert len(warned) == 2 and any("run.sqlite" in w for w in warned) and any("metrics.json" in w for w in warned)
    assert "| a-s1 | damaged |" in (damaged_sweep / "summary.md").read_text()


def test_4_dashboard_rows_and_views_go_on_past_a_damaged_run(damaged_sweep):
    from bokeh.document import Document

    from fnodiag.dashboard.dashboard import Dashboard

    dash = Dashboard(damaged_sweep.parent)
    store = dash.store
    store.arms, store.seeds = store.param.arms.objects, [1]
    rows = {r["arm"]: r for r in store.rows}
    assert rows["b"]["state"] == states.DAMAGED and "metrics.json" in rows["b"]["message"]
    assert rows["c"]["state"] == states.FINISHED
    for tab in range(len(dash.views)):  # every view draws; the store found damaged while drawing is left out
        dash.tabs.active = tab
        dash.tick()
    assert [e.arm for e in store.selected()] == ["c"]
    assert store.row(store.catalog.entries("sw", arms={"a"})[0])["state"] == states.DAMAGED
    assert "run.sqlite" in {r["arm"]: r for r in store.rows}["a"]["message"]
    dash.layout().get_root(Document())


# -- 9: the summary never follows a run path of sweep.json out of the sweep folder --------------------------------


def test_9_summarize_refuses_run_paths_outside_the_sweep_folder(small_sweep, tmp_path, capsys):
    folder = _copy(small_sweep, tmp_path / "sw")
    outside = _copy(small_sweep / "a-s1", tmp_path / "elsewhere")  # a real run, which must not be read
    manifest = json.loads((folder / "sweep.json").read_text())
    manifest["runs"]["a-s1"]["path"] = "../elsewhere"
    manifest["runs"]["b-s1"]["path"] = str(outside)
    (folder / "sweep.json").write_text(json.dumps(manifest))
    assert main(["summarize", str(folder)]) == 0, capsys.readouterr().err
    rows = {r["run"]: r for r in json.loads((folder / "summary.json").read_text())["runs"]}
    for name, path in (("a-s1", "../elsewhere"), ("b-s1", str(outside))):
        assert rows[name]["state"] == states.DAMAGED and rows[name]["last_amp_ssim"] is None
        assert f"names run path {path!r}, which is not inside the sweep folder" in rows[name]["message"]
    assert rows["c-s1"]["state"] == states.FINISHED


# -- 1: one writer per run, for `fnodiag train --resume` as for a sweep's task -----------------------------------------


@pytest.fixture(scope="module")
def one_epoch_run(tmp_path_factory, tiny_cfg, dataset_cache):
    """A finished one-epoch run ``r`` (seed 1) in its own runs folder."""
    from fnodiag.training.run import train

    out = tmp_path_factory.mktemp("one")
    train(
        tiny_cfg.override({"train.epochs": 1, "train.seed": 1}), out, name="r", cache_dir=dataset_cache, progress=False
    )
    return out / "r"


def _half_done(one_epoch_run, dest):
    """A copy of ``one_epoch_run`` that reads as a 2-epoch run interrupted after its first epoch."""
    run = RunDir(_copy(one_epoch_run, dest))
    config = run.read_json("config.json")
    config["train"]["epochs"] = 2
    run.write_json("config.json", config)
    run.write_status(states.INTERRUPTED, step=run.read_status()["step"], epoch=0)
    return run


def _steps(run):
    with StoreReader(run.store_path) as reader:
        return reader.scalars(TRAIN_LOSS).step.tolist()


@pytest.mark.slow
def test_1_a_resume_refuses_a_run_another_process_trains(one_epoch_run, tmp_path, dataset_cache, capsys):
    from fnodiag.runs.lock import RunLock

    run = _half_done(one_epoch_run, tmp_path / "runs" / "r")
    first = _steps(run)
    exe = Path(sys.executable).with_name("fnodiag")
    # another trainer owns the run while its status.json still reads "interrupted": the window two resumes raced in
    with RunLock(run.path).acquire({"host": "here", "pid": os.getpid()}):
        done = subprocess.run(
            [str(exe), "train", "--resume", str(run.path), "--cache-dir", str(dataset_cache), "--no-progress"],
            capture_output=True,
            text=True,
            timeout=600,
        )
    assert done.returncode == 2, done.stderr
    assert f"is being trained by pid {os.getpid()} on here" in done.stderr and "Traceback" not in done.stderr
    assert _steps(run) == first and run.read_status(raw=True)["state"] == states.INTERRUPTED
    # once that process is gone, the resume trains the second epoch: every step once
    assert main(["train", "--resume", str(run.path), "--cache-dir", str(dataset_cache), "--no-progress"]) == 0
    steps = _steps(run)
    assert len(steps) == 2 * len(first) and len(set(steps)) == len(steps)
    assert run.read_status()["state"] == states.FINISHED and len(run.read_history()["train_loss"]) == 2


# -- 3: a damaged last.ckpt: resume from the newest whole checkpoint, or refuse in one line; writes are atomic --------


def test_3_a_truncated_last_ckpt_resumes_from_best(one_epoch_run, tmp_path, dataset_cache, capsys):
    run = _half_done(one_epoch_run, tmp_path / "runs" / "r")
    first = _steps(run)
    os.truncate(run.last_ckpt_path, run.last_ckpt_path.stat().st_size // 2)
    (run.checkpoints_dir / ".last.ckpt.123.abcd.tmp").write_bytes(b"half")  # what a kill during a write leaves
    assert main(["train", "--resume", str(run.path), "--cache-dir", str(dataset_cache), "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "last.ckpt' is damaged" in err and "resuming from" in err and "best.ckpt' (epoch 1)" in err
    steps = _steps(run)
    assert len(steps) == 2 * len(first) and len(set(steps)) == len(steps)
    assert run.read_status()["state"] == states.FINISHED and len(run.read_history()["train_loss"]) == 2
    assert not list(run.checkpoints_dir.glob(".*.tmp"))


class _Hostile:
    def __reduce__(self):
        return (print, ("ran",))


@pytest.mark.parametrize("damage", ["truncated", "pickled-object"])
def test_3_a_damaged_last_ckpt_without_a_whole_one_is_refused_in_one_line(
    one_epoch_run, tmp_path, dataset_cache, capsys, damage
):
    import torch

    run = _half_done(one_epoch_run, tmp_path / "runs" / "r")
    first = _steps(run)
    run.best_ckpt_path.unlink()
    if damage == "truncated":
        os.truncate(run.last_ckpt_path, 200_000 if run.last_ckpt_path.stat().st_size > 400_000 else 2_000)
    else:
        torch.save({"epoch": 0, "global_step": 1, "state_dict": {}, "extra": _Hostile()}, run.last_ckpt_path)
    assert main(["train", "--resume", str(run.path), "--cache-dir", str(dataset_cache), "--no-progress"]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1 and "ran" not in captured.out
    assert f"checkpoint {str(run.last_ckpt_path)!r} is damaged" in err and f"rm {run.last_ckpt_path}" in err
    assert _steps(run) == first and run.read_status(raw=True)["state"] == states.INTERRUPTED  # nothing touched


def test_3_a_checkpoint_write_is_whole_or_absent(tmp_path, monkeypatch):
    import torch

    from fnodiag.training import checkpointing
    from fnodiag.training.checkpointing import RunCheckpointIO

    def through_tmpdir(*args, **kwargs):  # a commit from $TMPDIR is a copy on another filesystem, which a kill cuts
        raise AssertionError("the checkpoint was written through $TMPDIR")

    monkeypatch.setattr(tempfile, "mkstemp", through_tmpdir)
    monkeypatch.setattr(tempfile, "NamedTemporaryFile", through_tmpdir)
    io, path = RunCheckpointIO(), tmp_path / "checkpoints" / "last.ckpt"
    io.save_checkpoint({"epoch": 0, "global_step": 4}, path)
    assert not list(path.parent.glob(".*.tmp"))

    def killed(obj, fh):  # half the bytes, then the process is gone
        fh.write(b"PK\x03\x04 half a checkpoint")
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpointing.torch, "save", killed)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"epoch": 1, "global_step": 8}, path)
    monkeypatch.undo()
    assert torch.load(path, weights_only=True) == {"epoch": 0, "global_step": 4}  # the previous one, whole
    assert not list(path.parent.glob(".*.tmp"))


# -- 2 and 5: device requests checked against the machine before anything starts, one line each --------------------


def _no_gpu():
    from fnodiag.diagnostics.devices import gpu_count

    return gpu_count() == 0


@pytest.mark.parametrize(
    "flags, expected",
    [
        pytest.param(["--accelerator", "gpu"], "--accelerator gpu asks for a GPU", id="gpu-on-cpu"),
        pytest.param(["--accelerator", "cpu", "--devices", "0"], "--devices 0 trains on no device", id="devices-0"),
        pytest.param(
            ["--accelerator", "cpu", "--devices", "99"], "--devices 99 asks for 99 CPU processes", id="cpu-99"
        ),
        pytest.param(["--accelerator", "tpu"], "--accelerator 'tpu' is not one of", id="tpu"),
        pytest.param(["--accelerator", "cpu", "--devices", "0,1"], "takes a count of processes, not ids", id="cpu-ids"),
    ],
)
def test_2_5_train_device_requests_are_checked_first(tmp_path, capsys, flags, expected):
    if "gpu" in flags and not _no_gpu():
        pytest.skip("this machine has a GPU")
    if "99" in flags and os.cpu_count() >= 99:
        pytest.skip("this machine has 99 cores")
    assert main(["train", *flags, "--out", str(tmp_path / "runs"), "--name", "x", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert expected in err and len(err.splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "runs").exists()  # nothing was written or started


@pytest.mark.parametrize("device", ["bogus", "cuda", "cuda:99"])
def test_5_capture_device_requests_are_checked_first(one_epoch_run, tmp_path, capsys, device):
    if device == "cuda" and not _no_gpu():
        pytest.skip("this machine has a GPU")
    ckpt = str(RunDir(one_epoch_run).last_ckpt_path)
    assert main(["capture", "--checkpoint", ckpt, "--device", device, "--output", str(tmp_path / "cap")]) == 2
    err = capsys.readouterr().err.strip()
    assert f"--device {device}" in err.replace("'", "") and len(err.splitlines()) == 1 and "Traceback" not in err
    assert "use --device cpu" in err


# -- 12: sweep workers die with their sweep; the run reads as stopped, not failed --------------------------------------


@pytest.mark.slow
def test_12_workers_of_a_sigkilled_sweep_die_with_it(tmp_path, tiny_sweep):
    import signal
    import time

    from fnodiag.runs.liveness import pid_alive
    from fnodiag.sweeps.summary import write_summary

    definition = tiny_sweep({"control": {"model.arch": "hybrid"}}, {"train.epochs": 50, "train.capture_every": 0})
    out = tmp_path / "sw"
    exe = Path(sys.executable).with_name("fnodiag")
    sweep = subprocess.Popen(  # --jobs 2: the run trains in a worker process of the sweep
        [str(exe), "sweep", str(definition), "--out", str(out), "--jobs", "2"],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    status_path, worker = out / "control-s7" / "status.json", None
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and sweep.poll() is None and worker is None:
            status = json.loads(status_path.read_text()) if status_path.is_file() else {}
            if status.get("state") == states.RUNNING and status.get("pid") not in (None, sweep.pid):
                worker = status["pid"]
            time.sleep(0.1)
        assert worker is not None, "the worker never started training"
        sweep.send_signal(signal.SIGKILL)
        sweep.wait(timeout=30)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and pid_alive(worker):
            time.sleep(0.1)
        assert not pid_alive(worker), "the worker outlived its sweep"
    finally:
        if worker is not None and pid_alive(worker):
            os.kill(worker, signal.SIGKILL)
    assert json.loads(status_path.read_text())["state"] == states.RUNNING  # never rewritten as failed
    assert write_summary(out)["runs"][0]["state"] == states.STOPPED


# -- 8: the Launch tab opens no definition file outside the runs folder, nor says whether one exists ----------------


def test_8_launch_definition_paths_outside_the_runs_folder_are_not_opened(tmp_path, tiny_sweep, monkeypatch):
    from fnodiag.dashboard import launch
    from fnodiag.dashboard.dashboard import Dashboard

    outside = tiny_sweep({"control": {"model.arch": "hybrid"}})  # a valid definition beside the runs folder
    root = tmp_path / "runs"
    root.mkdir()
    view = Dashboard(root).launch

    def opened(spec):
        raise AssertionError(f"opened {spec}")

    monkeypatch.setattr(launch, "load_definition", opened)
    said = {}
    for typed in (str(outside), str(tmp_path / "missing.toml"), "../tiny.toml", "/etc/passwd"):
        view.definition_path = typed
        said[typed] = view.feedback.object
        assert "is outside the runs folder" in said[typed] and view.arm is None
        assert view.start_arm() is None and "outside the runs folder" in view.feedback.object
        with pytest.raises(ValueError, match="outside the runs folder"):
            view.launcher.start_sweep(typed, "control", 7)
    # an existing file and a missing one read alike: nothing says whether a path outside exists
    assert said[str(outside)].replace(str(outside), "X") == said[str(tmp_path / "missing.toml")].replace(
        str(tmp_path / "missing.toml"), "X"
    )
    assert not view.launcher.runs


# -- 10: messages that name the problem and the fix ------------------------------------------------------------------


def test_10_toml_seeds_that_are_no_list_are_named(tmp_path, capsys):
    path = tmp_path / "d.toml"
    path.write_text('name = "d"\nseeds = "1,2"\n[arms.a]\n"model.arch" = "hybrid"\n')
    assert main(["sweep", str(path), "--out", str(tmp_path / "sw")]) == 2
    err = capsys.readouterr().err.strip()
    assert "seeds must be a TOML list of integers, e.g. seeds = [1, 2]; got '1,2'" in err and "int()" not in err


@pytest.mark.parametrize("kind", ["file-as-parent", "read-only"])
def test_10_import_into_a_folder_that_cannot_be_written(arm, tmp_path, capsys, kind):
    parent = tmp_path / "ro"
    if kind == "file-as-parent":
        parent.write_text("a file")
    else:
        if os.geteuid() == 0:
            pytest.skip("root writes into read-only folders")
        parent.mkdir()
        parent.chmod(0o555)
    try:
        assert main(["import", str(arm), "--out", str(parent / "run"), "--no-capture"]) == 2
    finally:
        if parent.is_dir():
            parent.chmod(0o755)
    err = capsys.readouterr().err.strip()
    assert f"--out's parent folder {str(parent)!r} is not writable" in err and "choose another folder" in err
    assert "[Errno" not in err and len(err.splitlines()) == 1


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["train", "--config", "{d}"], "config file '{d}' is a folder, not a file"),
        (["simulate", "--probe-npz", "{d}", "--out", "{d}/ds"], "data.probe_npz: file '{d}' is a folder, not a file"),
        (["capture", "--checkpoint", "{d}", "--output", "{d}/cap"], "checkpoint '{d}' is a folder, not a file"),
    ],
    ids=["config", "probe", "checkpoint"],
)
def test_10_an_existing_folder_is_not_reported_missing(tmp_path, capsys, argv, expected):
    d = str(tmp_path)
    assert main([a.format(d=d) for a in argv]) == 2
    err = capsys.readouterr().err.strip()
    assert expected.format(d=d) in err and "does not exist" not in err and len(err.splitlines()) == 1
