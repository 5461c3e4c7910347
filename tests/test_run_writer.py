"""The one run-folder writer: buffered device scalars, one transfer per flush, the crash window, states, claims."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from transfers import NO_TRANSFER

from fnodiag.config import RunConfig
from fnodiag.runs import RunDir, StoreReader
from fnodiag.runs.names import GRAD_CLIPPED, GRAD_NORM_POST, GRAD_NORM_PRE, LR, TRAIN_LOSS
from fnodiag.runs.states import final_state
from fnodiag.runs.writer import RunWriter

REPO = Path(__file__).resolve().parent.parent


def _foreign(path, **kwargs) -> RunWriter:
    writer = RunWriter.claim(path, {"kind": "torch", "module": "tests.Net"}, history_keys=("train_loss",), **kwargs)
    writer.open()
    writer.start({"kind": "torch"})
    return writer


def test_steps_stay_on_the_device_until_a_flush_brings_them_in_one_transfer(tmp_path, count_transfers):
    writer = _foreign(tmp_path / "run", flush_every=4)
    losses = [torch.tensor(0.5 + k) for k in range(3)]
    calls = count_transfers(strict=True)
    for step, loss in enumerate(losses):
        writer.log(step, 0, {TRAIN_LOSS: loss, LR: 0.1, GRAD_NORM_PRE: torch.tensor(2.0), GRAD_NORM_POST: loss})
    assert not writer.due() and calls == NO_TRANSFER
    with StoreReader(RunDir(tmp_path / "run").store_path) as reader:
        assert len(reader.scalars(TRAIN_LOSS)) == 0  # nothing reached the store
        writer.log(3, 0, {TRAIN_LOSS: torch.tensor(9.0, dtype=torch.float64)})
        assert writer.due()
        writer.flush()
        assert calls == {**NO_TRANSFER, "tolist": 1}  # ONE transfer for the four steps
        assert reader.scalars(TRAIN_LOSS).value.tolist() == [0.5, 1.5, 2.5, 9.0]
        assert reader.scalars(LR).step.tolist() == [0, 1, 2]
        # clipped where the post-clip norm fell below the pre-clip norm (2.0): steps 0 and 1
        assert reader.scalars(GRAD_CLIPPED).value.tolist() == [1.0, 1.0, 0.0]
    writer.finish(step=4, epoch=0)
    writer.close()
    assert RunDir(tmp_path / "run").read_status()["state"] == "finished"


def test_a_flush_shared_with_a_capture_is_one_transfer(tmp_path, count_transfers):
    from fnodiag.diagnostics.stats import to_host

    writer = _foreign(tmp_path / "run")
    writer.log(0, 0, {TRAIN_LOSS: torch.tensor(1.25)})
    calls = count_transfers()
    host = writer.flush({"stats": torch.arange(6.0).reshape(2, 3)}, transfer=to_host)
    assert calls == {"cpu": 1, "item": 0, "tolist": 0}
    np.testing.assert_array_equal(host["stats"], np.arange(6.0).reshape(2, 3))
    writer.close()
    assert StoreReader(RunDir(tmp_path / "run").store_path).scalars(TRAIN_LOSS).value.tolist() == [1.25]


WRITER = """
    import sys, torch
    from fnodiag.runs.writer import RunWriter
    writer = RunWriter.claim(sys.argv[1], {"kind": "torch", "module": "m"}, flush_every=5)
    writer.open()
    writer.start({})
    for step in range(13):
        writer.log(step, 0, {"train/loss": torch.tensor(float(step))})
        if writer.due():
            writer.flush()
    print("logged", flush=True)
    sys.stdin.readline()
"""


def test_a_killed_run_loses_only_the_steps_since_the_last_flush(tmp_path):
    """flush_every=5, 13 steps logged, then kill -9: steps 0-9 are in the store, 10-12 are the crash window."""
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(WRITER), str(tmp_path / "run")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout.readline().strip() == "logged"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        proc.kill()
    run = RunDir(tmp_path / "run")
    assert StoreReader(run.store_path).scalars(TRAIN_LOSS).step.tolist() == list(range(10))
    assert run.read_status()["state"] == "stopped"  # its writer is gone without a final state


def test_divergence_is_found_at_the_flush_and_a_stopping_writer_writes_nothing_from_it(tmp_path):
    stops = []
    run = RunDir.create(tmp_path / "own", RunConfig())
    store = run.open_store()
    writer = RunWriter(run, store=store, stop_at_divergence=True, history_keys=("train_loss",))
    writer.on_diverged = stops.append
    writer.start({})
    for step, value in enumerate([1.0, 0.5, math.nan, math.nan, 0.1]):
        writer.log(step, 0, {TRAIN_LOSS: torch.tensor(value), LR: 0.1})
    assert stops == []  # nothing read before the flush
    writer.flush()
    assert stops == [writer.diverged] and writer.diverged["step"] == 2 and math.isnan(writer.diverged["loss"])
    writer.log(5, 0, {TRAIN_LOSS: torch.tensor(0.2)})  # after the stop: ignored
    status = writer.finish(step=6, epoch=0)
    store.close()
    assert status["state"] == "diverged" and status["step"] == 2 and "non-finite" in status["message"]
    reader = StoreReader(run.store_path)
    assert reader.scalars(TRAIN_LOSS).step.tolist() == [0, 1] and reader.scalars(LR).step.tolist() == [0, 1]

    recording = _foreign(tmp_path / "foreign")  # a foreign run records every step and ends diverged
    for step, value in enumerate([1.0, math.inf, 2.0]):
        recording.log(step, 0, {TRAIN_LOSS: torch.tensor(value)})
    assert recording.finish(step=3, epoch=0)["state"] == "diverged"
    recording.close()
    assert StoreReader(RunDir(tmp_path / "foreign").store_path).scalars(TRAIN_LOSS).step.tolist() == [0, 1, 2]


def test_the_final_state_rule():
    assert final_state() == "finished" and final_state(diverged=True) == "diverged"
    assert (
        final_state(KeyboardInterrupt()) == "interrupted" and final_state(RuntimeError("x"), diverged=True) == "failed"
    )


def test_a_folder_without_a_training_record_is_claimed_again_one_with_a_record_is_refused(tmp_path):
    path = tmp_path / "run"
    writer = _foreign(path)  # a start that never reached a step: status, config, empty store
    writer.finish(state="failed", step=0, epoch=0, exception=RuntimeError("boom"))
    writer.close()
    assert RunDir(path).training_record() is None
    again = _foreign(path)  # accepted, and its files start clean
    assert RunDir(path).read_status()["state"] == "running"
    again.log(0, 0, {TRAIN_LOSS: 1.0})
    again.finish(step=1, epoch=0)
    again.close()
    with pytest.raises(FileExistsError, match="training record .*step 0.*choose a new folder"):
        RunWriter.claim(path, {"kind": "torch"})
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    with pytest.raises(FileExistsError, match="not empty .*notes.txt"):
        RunWriter.claim(tmp_path / "mine", {"kind": "torch"})
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep"
    with pytest.raises(ValueError, match="one of lightning, torch"):
        RunWriter.claim(tmp_path / "x", {"kind": "other"})


def test_a_scalar_that_is_not_one_real_value_is_refused_at_log(tmp_path):
    writer = _foreign(tmp_path / "run")
    with pytest.raises(ValueError, match="one real value"):
        writer.log(0, 0, {"loss": torch.ones(3)})
    writer.close()
