"""Tests for fnodiag.runs: run directories, atomic JSON, the SQLite store and its cross-process reader."""

from __future__ import annotations

import json
import math
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from fnodiag.config import RunConfig
from fnodiag.runs import RunDir, RunStore, StoreReader, list_runs

REPO = Path(__file__).resolve().parents[1]


def _python(code: str, *args: str, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        **kwargs,
    )


def _integrity(path: Path) -> str:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return conn.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        conn.close()


# ----------------------------------------------------------------------------- run directory
def test_config_status_history_metrics_round_trip(tmp_path):
    cfg = RunConfig().override({"optim.lr": 3e-4, "data.probe_npz": None, "train.epochs": 7})
    run = RunDir.create(tmp_path / "arm" / "seed1", cfg)
    assert run.checkpoints_dir.is_dir() and run.config_path.is_file()
    assert RunDir(run.path).read_config() == cfg
    assert run.read_status() is None and run.read_history() == {} and run.read_metrics() == {}

    written = run.write_status("running", step=np.int64(12), epoch=1, message="warming up")
    status = run.read_status()
    assert status == written and status["state"] == "running" and status["step"] == 12
    assert status["updated"].endswith("+00:00")
    with pytest.raises(ValueError, match="collapsed.*running"):
        run.write_status("collapsed", step=1, epoch=0)
    run.status_path.write_text(json.dumps({**status, "state": "bogus"}))
    with pytest.raises(ValueError, match="bogus"):
        run.read_status()

    history = {"train_loss": np.array([1.0, 0.5, float("nan")]), "val_loss": [1.2, 0.7, 0.6], "lr": [1e-3] * 3}
    run.write_history(history)
    got = run.read_history()
    assert got["val_loss"] == [1.2, 0.7, 0.6] and got["lr"] == [1e-3] * 3 and math.isnan(got["train_loss"][2])
    with pytest.raises(TypeError, match="per-epoch"):
        run.write_history({"train_loss": 0.5})

    best = {"amp_ssim": np.float32(0.5), "phase_ssim": 0.25}
    run.write_metrics(best, {"amp_ssim": 0.4, "phase_ssim": 0.2})
    assert run.read_metrics() == {
        "best": {"amp_ssim": 0.5, "phase_ssim": 0.25},
        "last": {"amp_ssim": 0.4, "phase_ssim": 0.2},
    }
    run.write_json("effective_config.json", {"optimizer": {"class": "Adam"}, "seed": 3})
    assert run.read_json("effective_config.json")["optimizer"]["class"] == "Adam"
    assert run.read_json("collapse.json", default="none") == "none"
    with pytest.raises(ValueError, match="inside the run directory"):
        run.write_json("../escape.json", {})


def test_paths_follow_the_contract(tmp_path):
    run = RunDir(tmp_path)
    names = {
        run.config_path: "config.json",
        run.effective_config_path: "effective_config.json",
        run.status_path: "status.json",
        run.store_path: "run.sqlite",
        run.history_path: "history.json",
        run.metrics_path: "metrics.json",
        run.model_path: "model.pt",
        run.recon_path: "recon.png",
        run.collapse_path: "collapse.json",
        run.best_ckpt_path: "checkpoints/best.ckpt",
        run.last_ckpt_path: "checkpoints/last.ckpt",
    }
    for path, rel in names.items():
        assert path == tmp_path / rel


def test_atomic_write_keeps_old_file_when_replace_fails(tmp_path, monkeypatch):
    run = RunDir.create(tmp_path / "r", RunConfig())
    run.write_status("running", step=1, epoch=0)
    before = run.status_path.read_bytes()

    def crash(src, dst):
        raise OSError("simulated crash before rename")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="simulated"):
        run.write_status("finished", step=99, epoch=9)
    monkeypatch.undo()
    assert run.status_path.read_bytes() == before
    assert run.read_status()["state"] == "running"
    assert not [p for p in run.path.iterdir() if p.name.endswith(".tmp")], "temporary file left behind"


def test_refuses_foreign_run_directory(tmp_path):
    a = RunConfig()
    b = a.override({"optim.lr": 0.05})
    RunDir.create(tmp_path / "run", a)
    with pytest.raises(FileExistsError, match="already exists.*exist_ok"):
        RunDir.create(tmp_path / "run", a)
    assert RunDir.create(tmp_path / "run", a, exist_ok=True).read_config() == a
    with pytest.raises(FileExistsError, match=r"run.*another run's config.*optim\.lr"):
        RunDir.create(tmp_path / "run", b, exist_ok=True)
    with pytest.raises(FileExistsError, match="another run's config"):
        RunDir(tmp_path / "run").write_config(b)
    assert RunDir(tmp_path / "run").read_config() == a  # untouched by the refusals
    assert RunDir.create(tmp_path / "run", b, resume=True).read_config() == b
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("not a run")
    with pytest.raises(FileExistsError, match="other"):
        RunDir.create(tmp_path / "other", a)
    with pytest.raises(FileNotFoundError, match="no config.json"):
        RunDir(tmp_path / "other").read_config()


def test_list_runs_finds_nested_run_dirs(tmp_path):
    for rel in ("sweep/adam/s1", "sweep/adam/s2", "sweep/sgd/s1", "single"):
        RunDir.create(tmp_path / rel, RunConfig())
    (tmp_path / "sweep" / "cache").mkdir()
    runs = list_runs(tmp_path)
    assert [r.path.relative_to(tmp_path).as_posix() for r in runs] == [
        "single",
        "sweep/adam/s1",
        "sweep/adam/s2",
        "sweep/sgd/s1",
    ]
    assert runs[0] == RunDir(tmp_path / "single")
    assert list_runs(tmp_path / "sweep" / "cache") == []
    with pytest.raises(FileNotFoundError, match="missing"):
        list_runs(tmp_path / "missing")


# ----------------------------------------------------------------------------- store
def test_scalars_round_trip_nan_inf_and_tail(tmp_path):
    path = tmp_path / "run.sqlite"
    with RunStore(path, flush_every=None) as store:
        store.log_scalars(0, 0, {"train/loss": 1.5, "lr": 1e-3})
        store.log_scalars(1, 0, {"train/loss": float("nan"), "lr": float("inf")})
        store.log_scalars(1, 0, {"val/loss": -float("inf")}, scope="epoch")
        with pytest.raises(ValueError, match="scope 'batch'"):
            store.log_scalars(2, 0, {"x": 1.0}, scope="batch")
    reader = StoreReader(path)
    assert reader.scalar_names() == ["train/loss", "lr", "val/loss"]
    loss = reader.scalars("train/loss")
    assert loss.step.tolist() == [0, 1] and loss.value[0] == 1.5 and math.isnan(loss.value[1])
    lr = reader.scalars("lr")
    assert lr.value[1] == math.inf and lr.name.tolist() == ["lr", "lr"]
    ep = reader.scalars(scope="epoch")
    assert ep.name.tolist() == ["val/loss"] and ep.value[0] == -math.inf and ep.scope.tolist() == ["epoch"]
    everything = reader.scalars()
    assert len(everything) == 5 and everything.wall.min() > 1e9
    assert len(reader.scalars(after=everything.position)) == 0
    assert reader.scalars(after=everything.position).position == everything.position
    assert len(reader.scalars("never-logged")) == 0 and reader.last_step() == 1
    reader.close()


def test_layer_stats_and_matrix_pivot(tmp_path):
    path = tmp_path / "run.sqlite"
    with RunStore(path, flush_every=None) as store:
        for step in (10, 20, 30):
            vals = {
                (layer, stat): step + i + (0.5 if stat == "std" else 0.0)
                for i, layer in enumerate(["enc.0", "enc.1", "dec.0"])
                for stat in ("mean", "std")
            }
            if step == 20:
                del vals[("enc.1", "mean")]
                vals[("dec.0", "mean")] = float("nan")
            store.log_layer_stats(step, step // 10, "activation", vals)
        store.log_layer_stats(30, 3, "grad", {("enc.0", "norm"): 7.0})
        store.log_layer_stats(30, 3, "activation", {("enc.0", "mean"): -1.0})  # rewrite of step 30 wins
        with pytest.raises(ValueError, match="source 'weights'"):
            store.log_layer_stats(1, 0, "weights", {("a", "b"): 1.0})
    r = StoreReader(path)
    layers, steps, values = r.layer_matrix("activation", "mean")
    assert layers == ["enc.0", "enc.1", "dec.0"] and steps.tolist() == [10, 20, 30]
    expected = np.array([[10, 20, -1.0], [11, np.nan, 31], [12, np.nan, 32]])
    np.testing.assert_array_equal(values, expected)
    assert r.layers() == ["enc.0", "enc.1", "dec.0"] and r.layers("grad") == ["enc.0"]
    assert r.stats("activation") == ["mean", "std"] and r.stats() == ["mean", "std", "norm"]
    g = r.layer_stats(source="grad")
    assert g.layer.tolist() == ["enc.0"] and g.stat.tolist() == ["norm"] and g.value.tolist() == [7.0]
    one = r.layer_stats(layer="dec.0", stat="std")
    assert one.step.tolist() == [10, 20, 30] and one.value.tolist() == [12.5, 22.5, 32.5]
    assert one.source.tolist() == ["activation"] * 3 and one.epoch.tolist() == [1, 2, 3]
    m = r.layer_matrix("activation", "std")
    tail = r.layer_matrix("activation", "std", after=m.position)
    assert tail.layers == [] and tail.values.shape == (0, 0) and tail.position == m.position
    assert len(r.layer_stats(source="param")) == 0 and r.layers("param") == []


def test_layer_matrix_keeps_each_sources_own_layer_order(tmp_path):
    """Layer names are shared by sources: grads of lifter.conv1 logged after activations of later layers
    still come first in the grad matrix (network order), as the grad source logged them."""
    path = tmp_path / "run.sqlite"
    with RunStore(path, flush_every=None) as store:
        for step in (0, 1):
            store.log_layer_stats(step, 0, "activation", {("enc.0", "std"): 1.0, ("head", "std"): 2.0})
            store.log_layer_stats(
                step, 0, "grad", {("lifter.conv1", "norm"): 3.0 + step, ("enc.0", "norm"): 4.0, ("head", "norm"): 5.0}
            )
    with StoreReader(path) as r:
        m = r.layer_matrix("grad", "norm")
        assert m.layers == ["lifter.conv1", "enc.0", "head"]
        np.testing.assert_array_equal(m.values, [[3.0, 4.0], [4.0, 4.0], [5.0, 5.0]])
        assert r.layer_matrix("activation", "std").layers == ["enc.0", "head"]


def test_reader_in_other_process_tails_open_writer(tmp_path):
    path = tmp_path / "run.sqlite"
    code = """
        import json, sys
        from fnodiag.runs import StoreReader
        r = StoreReader(sys.argv[1])
        s = r.scalars("loss", after=int(sys.argv[2]))
        m = r.layer_matrix("grad", "norm", after=int(sys.argv[3]))
        print(json.dumps({"steps": s.step.tolist(), "pos": s.position, "mpos": m.position,
                          "msteps": m.steps.tolist(), "layers": m.layers}))
    """
    store = RunStore(path, flush_every=None)
    for step in range(3):
        store.log_scalars(step, 0, {"loss": 1.0 / (step + 1)})
        store.log_layer_stats(step, 0, "grad", {("l0", "norm"): step, ("l1", "norm"): 2 * step})
    store.flush()
    store.log_scalars(99, 0, {"loss": 0.0})  # buffered only: must stay invisible
    out, err = _python(code, str(path), "0", "0").communicate(timeout=60)
    first = json.loads(out or err)
    assert first["steps"] == [0, 1, 2] and first["msteps"] == [0, 1, 2] and first["layers"] == ["l0", "l1"]
    store.log_scalars(3, 1, {"loss": 0.2})
    store.log_layer_stats(3, 1, "grad", {("l0", "norm"): 3.0})
    store.flush()  # the writer keeps its connection open
    out, err = _python(code, str(path), str(first["pos"]), str(first["mpos"])).communicate(timeout=60)
    second = json.loads(out or err)
    assert second["steps"] == [99, 3] and second["msteps"] == [3] and second["layers"] == ["l0"]
    assert second["pos"] > first["pos"]
    store.close()


WRITER = """
    import sys, time
    from fnodiag.runs import RunStore
    store = RunStore(sys.argv[1], flush_every=None)
    K, batches, mode = 50, int(sys.argv[2]), sys.argv[3]
    for b in range(batches):
        for i in range(K):
            step = b * K + i
            store.log_scalars(step, b, {"loss": float(step)})
            store.log_layer_stats(step, b, "activation", {(f"l{j}", "mean"): step + j for j in range(8)})
        store.flush()
        print("flushed", b, flush=True)
    if mode == "buffer":
        for step in range(batches * K, batches * K + 30):
            store.log_scalars(step, batches, {"loss": float(step)})
        print("buffered", flush=True)
    time.sleep(60)
"""


def _kill_after(path: Path, batches: int, mode: str, until: str, while_writing=None) -> None:
    proc = _python(WRITER, str(path), str(batches), mode)
    try:
        for line in proc.stdout:
            if line.startswith(until):
                break
        else:
            pytest.fail(f"writer exited early: {proc.stderr.read()}")
        if while_writing is not None:
            while_writing()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL


def test_sigkilled_writer_keeps_every_flushed_row(tmp_path):
    path = tmp_path / "run.sqlite"
    _kill_after(path, 3, "buffer", "buffered")
    assert _integrity(path) == "ok"
    with StoreReader(path) as r:
        s = r.scalars("loss")
        assert s.step.tolist() == list(range(150)) and s.value.tolist() == [float(i) for i in range(150)]
        layers, steps, values = r.layer_matrix("activation", "mean")
        assert steps.tolist() == list(range(150)) and len(layers) == 8
        np.testing.assert_array_equal(values, np.arange(8)[:, None] + np.arange(150)[None, :])


def test_sigkill_during_continuous_writes_leaves_whole_transactions(tmp_path):
    path = tmp_path / "run.sqlite"
    seen = []

    def read_during_writes():
        with StoreReader(path) as r:
            for _ in range(5):
                seen.append(r.scalars("loss", after=0).step)

    # the writer keeps flushing while this process reads and then kills it
    _kill_after(path, 100_000, "loop", "flushed 5", while_writing=read_during_writes)
    assert all(len(s) >= 300 and len(s) % 50 == 0 and s.tolist() == list(range(len(s))) for s in seen)
    assert _integrity(path) == "ok"
    with StoreReader(path) as r:
        steps = r.scalars("loss").step
        assert len(steps) >= 300 and len(steps) % 50 == 0
        assert steps.tolist() == list(range(len(steps)))
        m = r.layer_matrix("activation", "mean")
        assert m.steps.tolist() == steps.tolist() and not np.isnan(m.values).any()
    # the store can be reopened and appended to after the crash
    with RunStore(path) as store:
        store.log_scalars(len(steps), 0, {"loss": -1.0})
    with StoreReader(path) as r:
        assert r.scalars("loss").value[-1] == -1.0 and r.layers() == [f"l{j}" for j in range(8)]


def test_automatic_flush_by_time_and_size(tmp_path):
    path = tmp_path / "run.sqlite"
    store = RunStore(path, flush_every=0.0)
    reader = StoreReader(path)
    store.log_scalars(0, 0, {"a": 1.0})
    assert len(reader.scalars("a")) == 1
    store.close()
    sized = RunStore(path, flush_every=None, max_buffer=5)
    sized.log_scalars(1, 0, {"a": 2.0, "b": 3.0})
    assert len(reader.scalars()) == 1  # two values buffered, below max_buffer
    sized.log_layer_stats(1, 0, "param", {(f"l{i}", "norm"): i for i in range(3)})
    assert len(reader.scalars()) == 3 and reader.layer_stats().layer.tolist() == ["l0", "l1", "l2"]
    sized.close()
    sized.close()
    with pytest.raises(RuntimeError, match="closed"):
        sized.log_scalars(2, 0, {"a": 1.0})
    reader.close()


def test_disabled_store_writes_nothing(tmp_path):
    path = tmp_path / "sub" / "run.sqlite"
    with RunStore(path, enabled=False) as store:
        store.log_scalars(0, 0, {"loss": 1.0})
        store.log_layer_stats(0, 0, "grad", {("l", "norm"): 1.0})
        store.flush()
    assert not path.exists() and not path.parent.exists() and not store.closed


def test_reader_errors_and_empty_store(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.sqlite"):
        StoreReader(tmp_path / "nope.sqlite")
    (tmp_path / "junk.sqlite").write_text("this is not a database " * 20)
    with pytest.raises(ValueError, match="not a usable run store"):
        RunStore(tmp_path / "junk.sqlite")
    run = RunDir.create(tmp_path / "r", RunConfig())
    run.open_store().close()
    with run.open_reader() as r:
        assert r.last_step() is None and len(r.scalars()) == 0 and r.layer_matrix("grad", "norm").layers == []
        with pytest.raises(ValueError, match="scope"):
            r.scalars(scope="batch")


def test_jsonable_is_the_one_sanitiser(tmp_path):
    import torch

    from fnodiag.runs import jsonable

    record = {"a": np.float64("nan"), 1: (np.int64(3), torch.tensor([1.5, 2.0])), "p": tmp_path / "x", "b": True}
    assert jsonable(record, nonfinite="null") == {"a": None, "1": [3, [1.5, 2.0]], "p": str(tmp_path / "x"), "b": True}
    assert math.isnan(jsonable(record)["a"])  # kept unless asked: json writes NaN
    assert jsonable({"f": object}) == {"f": repr(object)}
    with pytest.raises(TypeError, match="type is not JSON serialisable"):
        jsonable({"f": object}, unknown="error")
    run = RunDir.create(tmp_path / "r", RunConfig())
    with pytest.raises(TypeError, match="not JSON serialisable"):
        run.write_json("bad.json", {"f": object})
    assert not (run.path / "bad.json").exists()


def test_every_record_writer_is_the_one_fsyncing_atomic_write(tmp_path, monkeypatch):
    from fnodiag import files
    from fnodiag.interop import checkpoint_export as export
    from fnodiag.ptycho import simulate
    from fnodiag.runs import atomic_write

    assert simulate.atomic_write is atomic_write and export.atomic_write is atomic_write
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd))[1])
    path = tmp_path / "a.npz"
    atomic_write(path, lambda fh: np.savez(fh, x=np.arange(3)))
    assert len(synced) == 2  # the file, then its folder
    with np.load(path) as f:
        assert f["x"].tolist() == [0, 1, 2]
    files.atomic_write_text(path, "text")
    assert path.read_text() == "text" and len(synced) == 4
    with pytest.raises(ZeroDivisionError):
        atomic_write(path, lambda fh: (fh.write(b"half"), 1 / 0))
    assert path.read_text() == "text" and [p.name for p in tmp_path.iterdir()] == ["a.npz"]


def test_dataset_cache_is_the_recorded_one_else_the_runs_folders(tmp_path):
    run = RunDir.create(tmp_path / "runs" / "r", RunConfig())
    assert run.dataset_cache() == tmp_path / "runs" / "datasets"  # nothing recorded: the default of train/sweep
    run.write_json("effective_config.json", {"data": {"key": "k", "cache_dir": str(tmp_path / "elsewhere")}})
    assert run.dataset_cache() == tmp_path / "elsewhere"
