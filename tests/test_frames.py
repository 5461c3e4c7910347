"""Live reconstruction frames: 8-bit encoding, the store's frames table, resume, the training callback."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from lightning.pytorch.callbacks import Callback

from fnodiag.config import ConfigError, RunConfig
from fnodiag.runs import RunStore, StoreReader
from fnodiag.runs.frames import amp_phase, decode, default_frame_every, encode, flatness
from fnodiag.training.run import train

REPO = Path(__file__).resolve().parents[1]
STEPS_PER_EPOCH = 81 // 8  # tiny train split, batch 8, drop_last


# ----------------------------------------------------------------------------- encoding
@pytest.mark.parametrize("scale, offset", [(1.0, 0.0), (1e-4, 3.0), (7.0, -np.pi), (1e5, 1e3)])
def test_round_trip_within_one_255th_of_each_images_range(scale, offset):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 16, 12)) * scale * np.array([1.0, 0.1, 10.0])[:, None, None] + offset
    data, lo, hi = encode(x)
    assert len(data) == x.size and lo.shape == hi.shape == (3,)
    np.testing.assert_allclose(lo, x.min(axis=(1, 2)))
    np.testing.assert_allclose(hi, x.max(axis=(1, 2)))
    back = decode(data, lo, hi, x.shape)
    err = np.abs(back - x).max(axis=(1, 2))
    assert back.dtype == np.float32 and back.shape == x.shape
    assert np.all(err <= (hi - lo) / 255 + 1e-6 * np.abs(x).max())
    assert np.all(err > 0)  # really quantised (not stored at full precision)


def test_constant_and_nonfinite_images():
    x = np.stack([np.full((4, 4), 0.25), np.arange(16.0).reshape(4, 4)])
    x[1, 0, 0] = np.nan
    x[1, 0, 1] = np.inf
    data, lo, hi = encode(x)
    back = decode(data, lo, hi, x.shape)
    np.testing.assert_array_equal(back[0], 0.25)  # a constant output comes back exactly constant
    assert (lo[1], hi[1]) == (2.0, 15.0) and np.all(np.isfinite(back))
    assert flatness(back[:1]) == 0.0 and flatness(back[1:]) > 1
    with pytest.raises(ValueError, match=r"\(P, H, W\)"):
        encode(np.zeros((4, 4)))
    with pytest.raises(ValueError, match="expected P\\*H\\*W"):
        decode(data[:-1], lo, hi, x.shape)


def test_amp_phase_and_default_period():
    obj = np.array([[[[1j, -2.0]]]])  # (P=1, C=1, 1, 2)
    amp, phase = amp_phase(obj)
    np.testing.assert_allclose(amp, [[[1.0, 2.0]]])
    np.testing.assert_allclose(phase, [[[np.pi / 2, np.pi]]], rtol=1e-6)
    assert default_frame_every(430, 20) == 29 and 200 <= 430 * 20 // RunConfig().train.frame_every <= 400
    with pytest.raises(ConfigError, match="train.frame_every"):
        RunConfig().override({"train.frame_every": -1}).validate()


# ----------------------------------------------------------------------------- store
def _image(step: int) -> np.ndarray:
    """(2, 8, 8): a ramp whose level encodes the step."""
    return np.stack([np.linspace(0, 1, 64).reshape(8, 8) * (k + 1) + step for k in range(2)])


def test_frames_table_round_trip_tail_replace_and_truncate(tmp_path):
    path = tmp_path / "run.sqlite"
    with RunStore(path, flush_every=None) as store:
        store.log_frame(-1, 0, {"amp": _image(100), "phase": -_image(100)}, role="truth")
        for step in (0, 10, 20):
            store.log_frame(step, step // 10, {"amp": _image(step), "phase": -_image(step)})
        store.log_scalars(20, 2, {"loss": 1.0})
        reader = StoreReader(path)
        assert len(reader.frames()) == 0 and reader.frame_truth() is None  # nothing flushed yet
        store.flush()
        f = reader.frames()
        assert f.step.tolist() == [0, 10, 20] and f.epoch.tolist() == [0, 1, 2]
        assert f.amp.shape == (3, 2, 8, 8)
        np.testing.assert_allclose(f.amp[1], _image(10), atol=2 / 255 + 1e-6)
        np.testing.assert_allclose(f.phase[2], -_image(20), atol=2 / 255 + 1e-6)
        truth = reader.frame_truth()
        np.testing.assert_allclose(truth[0], _image(100), atol=2 / 255 + 1e-6)
        store.log_frame(30, 3, {"amp": _image(30), "phase": _image(30)})
        store.log_frame(20, 2, {"amp": _image(25), "phase": _image(25)})  # step 20 rewritten: replaces
        store.flush()
        new = reader.frames(after=f.position)
        assert new.step.tolist() == [20, 30] and new.position > f.position
        np.testing.assert_allclose(reader.frames().amp[2], _image(25), atol=2 / 255 + 1e-6)
        assert reader.frame_steps().tolist() == [0, 10, 20, 30]
        assert reader.frames(steps=[10, 30]).step.tolist() == [10, 30]
        assert store.truncate(20) == 2 * 2 + 1  # 2 frames x 2 channels + 1 scalar
        assert reader.frame_steps().tolist() == [0, 10]
        assert reader.frame_truth() is not None  # the truth is written once and kept
        with pytest.raises(ValueError, match="channel"):
            store.log_frame(40, 4, {"intensity": _image(0)})


def test_version_1_store_is_read_and_upgraded(tmp_path):
    path = tmp_path / "run.sqlite"
    with RunStore(path) as store:
        store.log_scalars(0, 0, {"loss": 1.0})
    conn = sqlite3.connect(path)  # make it a store written before frames existed
    conn.executescript("DROP INDEX frames_key; DROP TABLE frames; PRAGMA user_version = 1;")
    conn.close()
    reader = StoreReader(path)
    assert reader.scalars("loss").value.tolist() == [1.0]
    assert len(reader.frames()) == 0 and reader.frame_truth() is None and len(reader.frame_steps()) == 0
    with RunStore(path) as store:  # a writer (e.g. a resume) upgrades it in place
        store.log_frame(5, 0, {"amp": _image(5), "phase": _image(5)})
    assert StoreReader(path).frame_steps().tolist() == [5]
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == 2


FRAME_WRITER = """
    import sys, time
    import numpy as np
    from fnodiag.runs import RunStore
    store = RunStore(sys.argv[1], flush_every=None)
    for step in range(0, 40, 4):
        img = np.stack([np.linspace(0, 1, 256).reshape(16, 16) + step] * 2)
        store.log_frame(step, 0, {"amp": img, "phase": -img})
        store.flush()
        print("flushed", step, flush=True)
        if step == 16:
            sys.stdin.readline()  # wait until the reader has read the first half
    time.sleep(60)
"""


def test_reader_tails_frames_another_process_writes(tmp_path):
    path = tmp_path / "run.sqlite"
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(FRAME_WRITER), str(path)],
        env=env,
        text=True,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        seen = []
        for line in proc.stdout:
            seen.append(line)
            if line.strip() == "flushed 16":
                break
        else:
            pytest.fail(f"writer exited early: {proc.stderr.read()}")
        reader = StoreReader(path)
        first = reader.frames()
        assert first.step.tolist() == [0, 4, 8, 12, 16]  # the writer is open and paused
        np.testing.assert_allclose(first.amp[:, 0, 0, 0], first.step, atol=1e-6)
        proc.stdin.write("go\n")
        proc.stdin.flush()
        for line in proc.stdout:
            if line.strip() == "flushed 36":
                break
        rest = reader.frames(after=first.position)
        assert rest.step.tolist() == [20, 24, 28, 32, 36]
        np.testing.assert_allclose(rest.phase[:, 1, -1, -1], -(rest.step + 1.0), atol=1 / 255 + 1e-6)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)


# ----------------------------------------------------------------------------- training
class Interrupt(Callback):
    def __init__(self, at: int):
        self.at = at

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.at:
            raise KeyboardInterrupt


@pytest.fixture(scope="module")
def framed_runs(tmp_path_factory, dataset_cache, tiny_cfg):
    out = tmp_path_factory.mktemp("frames")
    cfg = tiny_cfg.override({"train.epochs": 3, "train.frame_every": 3, "train.capture_every": 0}).validate()
    straight = train(cfg, out, name="straight", cache_dir=dataset_cache, progress=False)
    try:  # interrupted a few steps into epoch 2 (its frames from there are written, then dropped on resume)
        with pytest.raises(SystemExit):
            train(
                cfg,
                out,
                name="resumed",
                cache_dir=dataset_cache,
                progress=False,
                extra_callbacks=[Interrupt(STEPS_PER_EPOCH + 7)],
            )
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    interrupted = StoreReader(out / "resumed" / "run.sqlite").frame_steps().tolist()
    resumed = train(cfg, out, name="resumed", cache_dir=dataset_cache, progress=False, resume=True)
    return straight, resumed, interrupted


@pytest.mark.slow
def test_training_writes_frames_every_m_steps_with_the_truth(framed_runs, dataset_cache):
    from fnodiag.ptycho.simulate import load_or_simulate

    straight, _, _ = framed_runs
    effective = straight.read_json("effective_config.json")
    assert effective["frames"]["every"] == 3 and effective["frames"]["probe_batch"] == 2
    assert effective["frames"]["shape"] == [32, 32]
    reader = StoreReader(straight.store_path)
    f = reader.frames()
    assert f.step.tolist() == list(range(0, 3 * STEPS_PER_EPOCH, 3))
    assert f.amp.shape == (len(f), 2, 32, 32) and np.all(np.isfinite(f.phase))
    assert not np.allclose(f.amp[0], f.amp[-1], atol=0.02)  # the generator's output changes as it trains
    truth_amp, truth_phase = reader.frame_truth()
    data = load_or_simulate(straight.read_config().data, dataset_cache)
    # the truth is of the probe patches: |object patch| x |P_sim| is their Y_I, and their phase is Y_phi
    np.testing.assert_allclose(truth_amp * np.abs(data.probe), data.train.Y_I[:2], atol=2 / 255 * truth_amp.max())
    np.testing.assert_allclose(truth_phase, data.train.Y_phi[:2], atol=2 / 255 * np.ptp(truth_phase) + 1e-6)
    assert not np.allclose(truth_amp[0], truth_amp[1])  # two different patches


def test_resume_keeps_frames_consistent(framed_runs):
    straight, resumed, interrupted = framed_runs
    assert max(interrupted) >= STEPS_PER_EPOCH  # the interrupted process wrote frames past its checkpoint
    a, b = StoreReader(straight.store_path).frames(), StoreReader(resumed.store_path).frames()
    assert b.step.tolist() == a.step.tolist()  # each step once, none lost
    np.testing.assert_allclose(b.amp, a.amp, atol=1.5 / 255 * float(np.ptp(a.amp)) + 1e-6)


@pytest.mark.slow
def test_frames_off_and_cli_flag(tmp_path, dataset_cache, tiny_cfg):
    cfg = tiny_cfg.override({"train.epochs": 1, "train.frame_every": 0}).validate()
    run = train(cfg, tmp_path, name="off", cache_dir=dataset_cache, progress=False)
    assert run.read_json("effective_config.json")["frames"] == {"every": 0}
    assert len(StoreReader(run.store_path).frame_steps()) == 0
    exe = Path(sys.executable).with_name("fnodiag")  # the installed console script
    res = subprocess.run(
        [str(exe), "train", "--frame-every", "-2", "--out", str(tmp_path)], capture_output=True, text=True, timeout=120
    )
    assert res.returncode == 2 and "train.frame_every=-2" in res.stderr and "Traceback" not in res.stderr
