"""The driver-owned layout without Ray: records stream through a link to a receiver, files through a storage location.

A run trained through :class:`fnodiag.sweeps.remote.RemotePlace` (an in-process transport stands in
for the Ray actor) must leave the driver's run folder holding what a run trained in place holds; a
retried attempt resumes from the checkpoint in the storage location and stores each step once; a
superseded attempt's batches are dropped; a worker cannot run ahead of the driver unboundedly; a
run store on a network filesystem is refused in one line.
"""

from __future__ import annotations

import json
import math
import os
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from cluster_helpers import RECEIVERS, Deferred
from conftest import TINY
from lightning.pytorch.callbacks import Callback

from fnodiag.cli import main
from fnodiag.config import ConfigError, RunConfig
from fnodiag.ptycho.simulate import dataset_key, load_or_simulate
from fnodiag.runs import RunDir, RunStore, filesystems
from fnodiag.runs.remote import RecordLink, RecordReceiver, RemoteStore
from fnodiag.runs.storage import MARKER, Storage
from fnodiag.sweeps.remote import SCRATCH, collect, prepare
from fnodiag.sweeps.task import run_one

SETTINGS = {**TINY, "train.epochs": 3, "train.capture_every": 2, "train.frame_every": 3}


def _spec(out: Path, arm: str, cfg: RunConfig) -> dict:
    return {"out": str(out), "name": f"{arm}-s7", "arm": arm, "seed": 7, "label": arm, "config": cfg.to_dict()}


def _driver(tmp_path: Path, arm: str, cfg: RunConfig, *, storage: Path | None = None) -> tuple[dict, RecordReceiver]:
    """A driver folder with its dataset, a prepared storage location and a receiver reachable by name."""
    driver = tmp_path / "driver"
    load_or_simulate(cfg.data, driver / "datasets")
    placed = prepare(driver, str(storage) if storage else None, [dataset_key(cfg.data)])
    key = f"{tmp_path}:{arm}"
    RECEIVERS[key] = RecordReceiver(driver)
    records = {"transport": "cluster_helpers:loopback", "key": key}
    return {**_spec(driver, arm, cfg), "threads": 1, **placed, "records": records}, RECEIVERS[key]


def _rows(run: Path) -> dict:
    """Every record of a store by key: scalars by (scope, name, step), layer values by (step, source, stat, layer),
    frames by (role, channel, step)."""
    with sqlite3.connect(f"file:{run / 'run.sqlite'}?mode=ro", uri=True) as db:
        names = dict(db.execute("SELECT id, text FROM names"))
        out = {}
        for scope, name, step, value in db.execute("SELECT scope, name_id, step, value FROM scalars"):
            key = ("scalar", scope, names[name], step)
            assert key not in out, f"{key} stored twice"
            out[key] = value
        for step, src, stat, ids, vals in db.execute(
            "SELECT step, source_id, stat_id, layer_ids, vals FROM layer_stats"
        ):
            for lid, v in zip(np.frombuffer(ids, "<i4"), np.frombuffer(vals, "<f8")):
                key = ("layer", step, names[src], names[stat], names[int(lid)])
                assert key not in out, f"{key} stored twice"
                out[key] = float(v)
        for role, channel, step, data in db.execute("SELECT role, channel, step, data FROM frames"):
            out[("frame", role, channel, step)] = len(data)
    return out


def _same_records(got: dict, want: dict) -> None:
    """Same keys; equal values to float tolerance, times aside (``epoch/epoch_time_s``)."""
    assert set(got) == set(want), sorted(set(got) ^ set(want))[:5]
    bad = [
        k
        for k in want
        if not str(k[2]).endswith("_time_s")
        and not (
            got[k] == want[k]
            or (math.isnan(got[k]) and math.isnan(want[k]))
            or math.isclose(got[k], want[k], rel_tol=1e-6, abs_tol=1e-9)
        )
    ]
    assert not bad, [(k, got[k], want[k]) for k in bad[:5]]


@pytest.mark.slow
def test_a_run_streamed_to_the_driver_holds_what_a_run_trained_in_place_holds(tmp_path):
    cfg = RunConfig().override(SETTINGS).validate()
    local = run_one({**_spec(tmp_path / "local", "inplace", cfg), "threads": 1})
    spec, receiver = _driver(tmp_path, "streamed", cfg, storage=tmp_path / "storage")
    result = run_one(spec)
    batches = receiver.release(spec["name"])
    collect(tmp_path / "driver", spec["name"], spec["storage"])
    assert (local["state"], result["state"]) == ("finished", "finished") and result["trained"]
    want, got = tmp_path / "local" / "inplace-s7", tmp_path / "driver" / "streamed-s7"
    _same_records(_rows(got), _rows(want))
    assert batches > 10  # many flushes, each its own batch, all in order
    for name in ("history.json", "metrics.json"):
        a, b = json.loads((got / name).read_text()), json.loads((want / name).read_text())
        assert a.keys() == b.keys() and all(len(a[k]) == len(b[k]) for k in a if isinstance(a[k], list))
    assert json.loads((got / "status.json").read_text())["state"] == "finished"
    assert (
        json.loads((got / "collapse.json").read_text())["verdict"]
        == json.loads((want / "collapse.json").read_text())["verdict"]
    )  # written by the driver from its store: the worker had none
    effective = json.loads((got / "effective_config.json").read_text())
    assert effective["execution"]["attempt"] == 1 and effective["steps_per_epoch"] > 0
    for rel in ("checkpoints/last.ckpt", "checkpoints/best.ckpt", "model.pt", "recon.png", "capture/best.json"):
        assert (tmp_path / "storage" / "streamed-s7" / rel).is_file(), rel  # what travels went through storage
        assert (got / rel).is_file(), rel  # and was collected into the driver's run folder
    assert not (tmp_path / "storage" / "streamed-s7" / "status.json").exists()  # records never travel as files
    assert not list(SCRATCH.glob("streamed-s7-*"))  # the worker's scratch folder is gone
    assert (RunDir(got).dataset_cache() / effective["data"]["key"]).is_dir()
    elsewhere = RunDir(tmp_path / "driver" / "other-s1")  # trained on a node whose dataset copy is not here
    elsewhere.write_json("effective_config.json", {"data": {"cache_dir": "/on/another/node/datasets"}})
    assert elsewhere.dataset_cache() == tmp_path / "driver" / "datasets"


class _FailAt(Callback):
    """Fail training at the second batch of epoch ``epoch`` (after the checkpoint before it): a worker lost."""

    def __init__(self, epoch: int):
        self.epoch = epoch

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.current_epoch == self.epoch and batch_idx == 1:
            raise RuntimeError("worker lost")


def test_a_retried_attempt_resumes_from_the_storage_checkpoint_and_stores_each_step_once(tmp_path):
    cfg = RunConfig().override(SETTINGS).validate()
    spec, receiver = _driver(tmp_path, "retried", cfg, storage=tmp_path / "storage")
    first = run_one(spec, callbacks=[_FailAt(2)])
    receiver.release(spec["name"])
    assert first["state"] == "failed" and "worker lost" in first["message"]
    run = tmp_path / "driver" / "retried-s7"
    assert (tmp_path / "storage" / "retried-s7" / "checkpoints" / "last.ckpt").is_file()
    assert not (run / "checkpoints").exists()  # nothing was collected: the checkpoint is only in storage
    second = run_one(spec)
    receiver.release(spec["name"])
    assert second["state"] == "finished"
    effective = json.loads((run / "effective_config.json").read_text())
    assert effective["resumed_from"]["epoch"] == 2 and effective["execution"]["attempt"] == 2
    attempts = json.loads((run / "execution.json").read_text())["attempts"]
    assert [a["resumed"] for a in attempts] == [False, True]
    rows = _rows(run)  # raises on any key stored twice
    steps = sorted(k[3] for k in rows if k[:3] == ("scalar", 0, "train/loss"))
    assert steps == list(range(3 * effective["steps_per_epoch"]))
    assert len(json.loads((run / "history.json").read_text())["train_loss"]) == 3


def _loss_rows(step: int, name_id: int, *, new_name: bool) -> dict:
    """One batch as a worker's store packs it: one ``train/loss`` row at ``step`` (and the name, when new)."""
    names = [(name_id, "scalar", "train/loss")] if new_name else []
    return {"names": names, "index": [], "scalars": [(step, 0, 0, name_id, 1.0, 0.0)], "layers": [], "frames": []}


def test_the_receiver_writes_each_batch_once_in_order_and_drops_a_superseded_attempt(tmp_path):
    receiver = RecordReceiver(tmp_path)
    first = receiver.begin("a-s1")
    assert first["names"] == [] and first["files"] == {}
    batch = [("rows", _loss_rows(0, 1, new_name=True)), ("json", "status.json", {"state": "running"})]
    assert receiver.apply("a-s1", first["token"], 0, batch)
    second = receiver.begin("a-s1")  # a retry: the first attempt is presumed dead
    assert second["names"] == [(1, "scalar", "train/loss")] and second["files"]["status.json"] == {"state": "running"}
    assert not receiver.apply("a-s1", first["token"], 1, [("rows", _loss_rows(1, 1, new_name=False))])  # dropped
    assert receiver.truncate("a-s1", first["token"], 0) == -1  # and cannot delete anything
    with pytest.raises(RuntimeError, match="batch 1 arrived, batch 0 was expected"):
        receiver.apply("a-s1", second["token"], 1, [("rows", _loss_rows(1, 1, new_name=False))])
    other = RecordReceiver(tmp_path).begin("a-s1")  # a second driver on the folder
    assert "busy" in other and f"pid {os.getpid()} on" in other["busy"]  # the driver holding it
    receiver.close()
    assert list(_rows(tmp_path / "a-s1")) == [("scalar", 0, "train/loss", 0)]


def test_a_worker_waits_for_the_driver_once_max_in_flight_batches_are_unacknowledged(tmp_path):
    receiver = RecordReceiver(tmp_path)
    transport = Deferred(receiver)
    link = RecordLink(transport, "b-s1", max_in_flight=3)
    link.begin()
    store = RemoteStore(link, tmp_path / "scratch" / "run.sqlite", flush_every=None)
    for step in range(40):
        store.log_layer_stats(step, 0, "activation", {(f"layer{i}", "std"): float(step + i) for i in range(5)})
        store.flush()  # one batch each
    assert transport.most_pending <= 4  # begin done; at most max_in_flight + the one just sent
    assert store.truncate(30) == 10  # after every batch before it, on the driver's store
    store.close()
    link.end()
    receiver.release("b-s1")
    rows = _rows(tmp_path / "b-s1")
    assert sorted({k[1] for k in rows}) == list(range(30)) and len(rows) == 30 * 5


# -- storage --------------------------------------------------------------------------------------
@pytest.mark.parametrize("url", ["folder", "memory://fnodiag-test/sweep"])
def test_storage_writes_once_under_a_temporary_name_and_proves_its_marker(tmp_path, url):
    where = Storage(tmp_path / "shared" if url == "folder" else url)
    src = tmp_path / "local"
    (src / "checkpoints").mkdir(parents=True)
    (src / "checkpoints" / "last.ckpt").write_bytes(b"weights")
    (src / "model.pt").write_bytes(b"model")
    assert where.push(src, "r-s1") == ["checkpoints/last.ckpt", "model.pt"]
    assert where.files("r-s1") == ["checkpoints/last.ckpt", "model.pt"] and where.files("nothing") == []
    assert where.get("r-s1/model.pt", tmp_path / "back" / "model.pt") and not where.get("r-s1/no", tmp_path / "x")
    assert (tmp_path / "back" / "model.pt").read_bytes() == b"model"
    assert where.pull_folder("r-s1", tmp_path / "copy") and (tmp_path / "copy" / "checkpoints" / "last.ckpt").is_file()
    assert not where.pull_folder("nothing", tmp_path / "none") and not (tmp_path / "none").exists()
    assert not [p for p in (tmp_path / "copy").parent.iterdir() if p.name.endswith(".tmp")]
    where.mark("t1", {"out": "/driver/sweep"})
    where.check("t1")
    with pytest.raises(ConfigError, match="another sweep's") as err:
        where.check("t2")
    assert "--storage" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="is missing"):
        Storage(tmp_path / "elsewhere").check("t1")


def test_a_worker_that_cannot_see_the_storage_fails_the_run_loudly(tmp_path):
    cfg = RunConfig().override(SETTINGS).validate()
    spec, receiver = _driver(tmp_path, "blind", cfg)  # no --storage: the sweep folder itself
    blind = {**spec, "storage": str(tmp_path / "private-empty")}  # what a node that cannot see it has there
    result = run_one(blind)
    receiver.release(spec["name"])
    assert result["state"] == "failed" and "cannot see the sweep's storage location" in result["message"]
    assert "--storage" in result["message"] and MARKER in result["message"]
    status = json.loads((tmp_path / "driver" / "blind-s7" / "status.json").read_text())
    assert status["state"] == "failed" and "--storage" in status["message"]  # the driver shows it, not "stopped"
    assert not list(SCRATCH.glob("blind-s7-*"))


# -- network filesystems --------------------------------------------------------------------------
@pytest.fixture
def nfs(tmp_path, monkeypatch):
    """``tmp_path/nfs`` listed as an NFS mount in a fake mount table (with an escaped space in its name)."""
    folder = tmp_path / "nfs home"
    folder.mkdir()
    table = tmp_path / "mounts"
    table.write_text(
        f"/dev/vda / ext4 rw 0 0\nserver:/export {str(folder).replace(' ', chr(92) + '040')} nfs4 rw,vers=4.2 0 0\n"
    )
    monkeypatch.setattr(filesystems, "MOUNTS", str(table))
    return folder


def test_a_run_store_on_a_network_filesystem_is_refused_in_one_line(nfs, tmp_path, capsys):
    assert filesystems.filesystem_type(nfs / "runs" / "a" / "run.sqlite") == ("nfs4", str(nfs))
    assert filesystems.filesystem_type(tmp_path)[0] == "ext4"
    lustre = tmp_path / "lustre-table"
    lustre.write_text(f"/dev/vda / ext4 rw 0 0\n10.0.0.1@tcp:/scratch {tmp_path} lustre rw 0 0\n")
    with pytest.raises(ConfigError, match="on a lustre filesystem"):  # the table given as an argument
        filesystems.check_store_folder(tmp_path / "sweep", "--out folder", mounts=lustre)
    with pytest.raises(ConfigError) as err:
        RunStore(nfs / "runs" / "a" / "run.sqlite")
    message = str(err.value)
    assert "nfs4" in message and "--storage" in message and "driver" in message and "\n" not in message
    assert not (nfs / "runs").exists()  # refused before anything was written
    RunStore(tmp_path / "local" / "run.sqlite").close()  # a local disk is fine
    assert main(["train", "--out", str(nfs / "runs"), "--N", "32", "--object-size", "64", "--epochs", "1"]) == 2
    err_line = capsys.readouterr().err.strip()
    assert len(err_line.splitlines()) == 1 and "--storage" in err_line and "--out folder" in err_line
    assert not (nfs / "runs").exists()  # refused before the dataset was simulated or anything written


def test_the_wal_probe_failing_is_refused_in_one_line(tmp_path):
    class Refuses:
        def __init__(self, answer):
            self.answer = answer

        def execute(self, sql):
            if isinstance(self.answer, Exception):
                raise self.answer
            return self

        def fetchone(self):
            return (self.answer,)

    for answer in ("delete", sqlite3.OperationalError("locking protocol")):
        with pytest.raises(ConfigError, match="cannot use SQLite's WAL mode") as err:
            filesystems.enable_wal(Refuses(answer), tmp_path / "run.sqlite")
        assert "--storage" in str(err.value) and "\n" not in str(err.value)


def test_storage_is_a_ray_flag_and_a_sweep_folder_on_nfs_is_refused(nfs, tmp_path, capsys):
    assert main(["sweep", "quick", "--storage", str(tmp_path / "s"), "--out", str(tmp_path / "o")]) == 2
    assert "--storage is where a Ray cluster's workers put" in capsys.readouterr().err
    assert main(["sweep", "quick", "--out", str(nfs / "sweep")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--out folder" in err and "nfs4" in err
    assert not (nfs / "sweep").exists()
