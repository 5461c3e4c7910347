"""Validation batching and best-checkpoint selection under the reference's batch gain (issue 17),
and the kept partial training batch (issue 12's reference condition)."""

from __future__ import annotations

import json

import lightning as L
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from fnodiag.config import val_batch_size
from fnodiag.diagnostics.collapse import write_collapse
from fnodiag.diagnostics.selection import LOSS_CRITERION, SSIM_CRITERION, best_epochs
from fnodiag.ptycho.simulate import load_or_simulate
from fnodiag.runs import RunDir, StoreReader
from fnodiag.sweeps.summary import _selection_md, run_row
from fnodiag.training.data import AmplitudeDataset, GridLinesDataModule, describe_loader
from fnodiag.training.run import train
from fnodiag.training.system import ReconstructionSystem


class Scaled(torch.nn.Module):
    """The generator with its object divided by ``g``: what training under a gain ``g`` calibrates."""

    def __init__(self, inner: torch.nn.Module, g: float):
        super().__init__()
        self.inner, self.g = inner, g

    def forward(self, x):
        return self.inner(x) / self.g


def numpy_val_loss(objects: np.ndarray, probe: np.ndarray, a_obs: np.ndarray, batch: int, gains) -> float:
    """Independent epoch validation loss: numpy FFT forward, per-batch normalised MAE, batch-size-weighted mean.

    objects (n, N, N) complex; a_obs (n, N, N); ``gains[b]`` multiplies batch b's predicted amplitude.
    """
    n, losses, sizes = len(objects), [], []
    for b, i in enumerate(range(0, n, batch)):
        o, a = objects[i : i + batch], a_obs[i : i + batch].astype(np.float64)
        pred = gains[b] * np.abs(np.fft.fftshift(np.fft.fft2(o * probe, norm="ortho"), axes=(-2, -1)))
        losses.append(np.abs(pred - a).mean() / (a.mean() + 1e-8))
        sizes.append(len(o))
    return float(np.dot(losses, sizes) / n)


@pytest.fixture(scope="module")
def val_setup(tiny_cfg, dataset_cache):
    data = load_or_simulate(tiny_cfg.data, dataset_cache)
    torch.manual_seed(0)
    system = ReconstructionSystem(tiny_cfg.to_dict(), probe=data.probe)
    x = torch.from_numpy(data.test.diffraction).unsqueeze(1)
    with torch.no_grad():
        objects = system.generator.eval()(x)[:, 0].numpy().astype(np.complex128)
    return data, system, objects


def lightning_val_loss(tiny_cfg, data, generator, *, gain: str, batch: int, val_batching: str = "auto") -> float:
    """``val/loss`` of a real ``Trainer.validate`` over the run's own val loader."""
    cfg = tiny_cfg.override({"train.forward_gain": gain, "train.batch_size": batch, "train.val_batching": val_batching})
    system = ReconstructionSystem(cfg.to_dict(), probe=data.probe)
    system.generator = generator
    dm = GridLinesDataModule(data, batch_size=batch, infer_batch_size=val_batch_size(cfg.train))
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
    )
    (out,) = trainer.validate(system, datamodule=dm, verbose=False)
    return out["val/loss"]


@pytest.mark.parametrize("g", [1, 2, 4, 8, 16])
def test_matched_gain_and_batch_give_the_gain_free_per_sample_loss(tiny_cfg, val_setup, g):
    """16 test patches, validation batch = training batch g (no partial batch): the model training
    calibrated under gain g (object / g) validated at batch g scores exactly the gain-free loss."""
    data, system, objects = val_setup
    assert val_batch_size(tiny_cfg.override({"train.forward_gain": "batch", "train.batch_size": g}).train) == g
    gained = lightning_val_loss(tiny_cfg, data, Scaled(system.generator, g), gain="batch", batch=g)
    plain = lightning_val_loss(tiny_cfg, data, system.generator, gain="none", batch=g, val_batching="train")
    expected = numpy_val_loss(objects, data.probe, data.test.diffraction, g, [1.0] * 16)
    assert gained == pytest.approx(expected, rel=1e-5) and plain == pytest.approx(expected, rel=1e-5)
    # independent of the batch size up to the per-batch mean(A_obs) normaliser; g=1 is the per-sample mean
    per_sample = numpy_val_loss(objects, data.probe, data.test.diffraction, 1, [1.0] * 16)
    assert gained == pytest.approx(per_sample, rel=0.02)


def test_partial_last_validation_batch_is_judged_at_its_own_gain(tiny_cfg, val_setup):
    """Batch 5 over 16 patches: batches 5, 5, 5, 1. The last is predicted at gain 1, i.e. at 1/5 of the
    amplitude training calibrated, as the reference's 1-sample last batch (1 089 mod 16, brief §2.2)."""
    data, system, objects = val_setup
    got = lightning_val_loss(tiny_cfg, data, Scaled(system.generator, 5), gain="batch", batch=5)
    expected = numpy_val_loss(objects, data.probe, data.test.diffraction, 5, [1.0, 1.0, 1.0, 1 / 5])
    matched = numpy_val_loss(objects, data.probe, data.test.diffraction, 5, [1.0] * 4)
    assert got == pytest.approx(expected, rel=1e-5)
    assert abs(got - matched) > 1e-3 * matched  # the partial batch really shifts it
    # validated at another batch than training's (infer 16 for a model calibrated at 4): every prediction x4
    mismatched = numpy_val_loss(objects, data.probe, data.test.diffraction, 16, [4.0])
    cfg = tiny_cfg.override({"train.forward_gain": "batch", "train.batch_size": 4, "train.val_batching": "infer"})
    assert val_batch_size(cfg.train) == 16
    sys4 = ReconstructionSystem(cfg.to_dict(), probe=data.probe)
    sys4.generator = Scaled(system.generator, 4)
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
    )
    (out,) = trainer.validate(
        sys4, dataloaders=DataLoader(AmplitudeDataset(data.test.diffraction), batch_size=16), verbose=False
    )
    assert out["val/loss"] == pytest.approx(mismatched, rel=1e-5) and abs(mismatched - matched) > 0.05 * matched


def test_describe_loader_counts_the_partial_batch():
    ds = AmplitudeDataset(np.zeros((81, 4, 4), np.float32))
    assert describe_loader(DataLoader(ds, batch_size=7)) == {
        "batch_size": 7,
        "drop_last": False,
        "n_samples": 81,
        "num_batches": 12,
        "last_batch_size": 4,
    }
    assert describe_loader(DataLoader(ds, batch_size=7, drop_last=True))["num_batches"] == 11
    assert describe_loader(DataLoader(ds, batch_size=9))["last_batch_size"] == 9


@pytest.fixture(scope="module")
def gain_run(tiny_cfg, dataset_cache, tmp_path_factory):
    """A real tiny run under the gain with the partial train batch kept: 81 train patches at batch 7
    (11 full + 4), 16 test patches validated at 7 (7, 7, 2)."""
    cfg = tiny_cfg.override(
        {"train.forward_gain": "batch", "train.keep_partial_batch": True, "train.batch_size": 7, "train.epochs": 3}
    )
    return train(cfg, tmp_path_factory.mktemp("gain"), name="gain", cache_dir=dataset_cache, progress=False)


def test_kept_partial_batch_trains_once_per_epoch_at_its_size(gain_run):
    eff = gain_run.read_json("effective_config.json")
    assert eff["train_loader"] == {
        "batch_size": 7,
        "drop_last": False,
        "n_samples": 81,
        "num_batches": 12,
        "last_batch_size": 4,
    }
    assert eff["val_loader"] == {
        "batching": "auto",
        "batch_size": 7,
        "drop_last": False,
        "n_samples": 16,
        "num_batches": 3,
        "last_batch_size": 2,
    }
    assert eff["steps_per_epoch"] == 12 and eff["reference_quirks"] == ["forward_gain", "partial_batch"]
    assert eff["best_checkpoint"]["monitor"] == "val/loss" and eff["best_checkpoint"]["mode"] == "min"
    r = StoreReader(gain_run.store_path).scalars("train/batch_size")
    for epoch in range(3):
        assert r.value[r.epoch == epoch].tolist() == [7.0] * 11 + [4.0]
    hist = json.loads((gain_run.path / "history.json").read_text())  # the gain-free series, per epoch
    assert len(hist["val_amp_ssim"]) == len(hist["val_amp_mae"]) == 3 and np.isfinite(hist["val_amp_mae"]).all()


def test_defaults_drop_the_partial_batch_and_validate_at_infer_size(tiny_cfg, dataset_cache, tmp_path):
    run = train(tiny_cfg.override({"train.epochs": 1}), tmp_path, name="plain", cache_dir=dataset_cache, progress=False)
    eff = run.read_json("effective_config.json")
    assert eff["train_loader"] == {
        "batch_size": 8,
        "drop_last": True,
        "n_samples": 81,
        "num_batches": 10,
        "last_batch_size": 8,
    }
    assert eff["val_loader"]["batch_size"] == 16 and eff["val_loader"]["num_batches"] == 1
    assert StoreReader(run.store_path).scalars("train/batch_size").value.tolist() == [8.0] * 10


def _edit_to_differ(run: RunDir) -> dict:
    """Records of a finished run edited so best.ckpt (lowest val loss, epoch 0) scores like a constant
    output while the highest validation amp SSIM (epoch 2) is healthy; the last weights are constant."""
    fp = run.read_json("effective_config.json")["data"]["fingerprint"]
    hist = run.read_history()
    hist.update(
        val_loss=[0.10, 0.30, 0.20], val_amp_ssim=[fp["amp_ssim"], 0.6, 0.9], val_amp_mae=[fp["amp_mae"], 0.3, 0.1]
    )
    run.write_history(hist)
    constant = {**run.read_metrics()["last"], "amp_ssim": fp["amp_ssim"], "amp_mae": fp["amp_mae"]}
    run.write_metrics(constant, constant)
    return fp


def test_best_by_loss_and_by_ssim_differ_and_both_are_reported(gain_run):
    _edit_to_differ(gain_run)
    report = write_collapse(gain_run)
    assert report["best_weights"]["criterion"] == SSIM_CRITERION and report["best_weights"]["epoch"] == 2
    assert report["best_weights"]["at_fingerprint"] is False and report["learned_then_collapsed"] is True
    sel = report["best_selection"]
    assert (sel["by_loss"]["epoch"], sel["by_ssim"]["epoch"], sel["differ"]) == (0, 2, True)
    row = run_row(gain_run, "stable", 7)
    assert row["best_selection"]["criterion"] == LOSS_CRITERION and row["best_weights_criterion"] == SSIM_CRITERION
    md = "\n".join(_selection_md([row]))
    assert "| gain | val_loss (min) ⚑ gain | 0 (0.1000) | 2 (0.900) ≠ best.ckpt | val_amp_ssim (max) |" in md
    from fnodiag.dashboard.catalog import RunEntry, summarize

    cols = summarize(RunEntry("s", "stable", 7, gain_run))
    assert (cols["best_ckpt_by"], cols["best_ssim_epoch"]) == ("val loss (min), ep 0 ⚑ gain", "2 (0.900)")


def test_without_the_gain_the_verdict_keeps_best_ckpt(gain_run):
    """The same records with the gain off: best.ckpt (at the fingerprint) is the best weights, so the
    run never learned rather than learned then collapsed."""
    _edit_to_differ(gain_run)
    eff = gain_run.read_json("effective_config.json")
    gain_run.write_json("effective_config.json", {**eff, "forward_gain": "none"})
    try:
        report = write_collapse(gain_run)
    finally:
        gain_run.write_json("effective_config.json", eff)
    assert report["best_weights"]["criterion"] == LOSS_CRITERION and report["best_weights"]["at_fingerprint"] is True
    assert report["learned_then_collapsed"] is False
    assert best_epochs(gain_run.read_history(), {**eff, "forward_gain": "none"})["verdict_criterion"] == LOSS_CRITERION
