"""``fnodiag export RUN --tensorboard DIR``: a real tiny run's store written as TensorBoard events and read back
with TensorBoard's own ``EventAccumulator``; bad input exits 2 with one line."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("tensorboard")


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_cfg, dataset_cache):
    from fnodiag.training.run import train

    cfg = tiny_cfg.override({"train.capture_every": 3, "train.epochs": 1})
    return train(cfg, tmp_path_factory.mktemp("tb-runs"), name="tiny", cache_dir=dataset_cache, progress=False)


def _accumulate(folder):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0})  # 0: keep every value
    acc.Reload()
    return acc


def test_export_writes_every_scalar_and_layer_statistic(run, tmp_path):
    from fnodiag.cli import main
    from fnodiag.runs import StoreReader

    out = tmp_path / "tb"
    assert main(["export", str(run.path), "--tensorboard", str(out)]) == 0
    acc = _accumulate(out / "tiny")
    tags = set(acc.Tags()["scalars"])
    with StoreReader(run.store_path) as reader:
        s = reader.scalars()
        layer = reader.layer_stats()
        names = reader.scalar_names()
    assert {
        "scalars/train/loss",
        "scalars/lr",
        "scalars/epoch/val_loss",
        "activation/spatial_std/output",
        "grad/norm/head",
        "param/weight_norm/head",
    } <= tags
    for name in names:
        events = acc.Scalars(f"scalars/{name}")
        keep = s.name == name
        assert [e.step for e in events] == s.step[keep].tolist()
        np.testing.assert_allclose([e.value for e in events], s.value[keep], rtol=1e-6)  # float32 in the events
    keys = sorted(set(zip(layer.source, layer.stat, layer.layer)))
    assert len(tags) == len(names) + len(keys)
    for source, stat, name in keys[:: max(1, len(keys) // 25)]:  # a spread of the per-layer tags
        keep = (layer.source == source) & (layer.stat == stat) & (layer.layer == name)
        events = acc.Scalars(f"{source}/{stat}/{name}")
        assert [e.step for e in events] == layer.step[keep].tolist()
        np.testing.assert_allclose([e.value for e in events], layer.value[keep], rtol=1e-6)
    assert sum(len(acc.Scalars(t)) for t in tags) == len(s) + len(layer)


@pytest.mark.slow
def test_export_bad_input_is_one_line_and_exit_2(run, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("keep me")
    cases = [
        ([str(tmp_path / "missing"), "--tensorboard", str(tmp_path / "tb")], "does not exist"),
        ([str(tmp_path), "--tensorboard", str(tmp_path / "tb")], "holds no run store"),
        ([str(run.path), "--tensorboard", str(blocker / "tb")], "is not writable"),
    ]
    for args, words in cases:
        p = subprocess.run(
            [sys.executable, "-m", "fnodiag.cli", "export", *args], capture_output=True, text=True, timeout=120
        )
        assert p.returncode == 2 and words in p.stderr, p.stderr
        assert len(p.stderr.strip().splitlines()) == 1 and "Traceback" not in p.stderr
    assert blocker.read_text() == "keep me"
