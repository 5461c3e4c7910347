"""Reference conditions as explicit options: forward gain, frozen schedule, attribution sweep."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from fnodiag.config import reference_quirks, without_quirks
from fnodiag.ptycho.forward import ForwardModel
from fnodiag.ptycho.simulate import simulate
from fnodiag.runs import StoreReader
from fnodiag.sweeps.definition import load_definition
from fnodiag.sweeps.runner import run_sweep
from fnodiag.training.run import train
from fnodiag.training.system import ReconstructionSystem

TINY_OVERRIDES = {
    "data.object_size": 64,
    "model.blocks": 2,
    "model.width": 4,
    "model.modes": 4,
    "train.epochs": 1,
    "train.infer_batch_size": 16,
    "train.capture_every": 0,
    "train.accelerator": "cpu",
    "train.devices": "1",
}


@pytest.mark.parametrize("B", [16, 9, 1])
def test_batch_gain_multiplies_each_prediction_by_its_batch_size(tiny_cfg, B):
    data = simulate(tiny_cfg.data)
    system = ReconstructionSystem(tiny_cfg.override({"train.forward_gain": "batch"}).to_dict(), probe=data.probe)
    x = torch.from_numpy(data.train.diffraction[:B]).unsqueeze(1)
    with torch.no_grad():
        obj = system.generator(x)
        gained = system.forward_model(obj)
        correct = ForwardModel(data.probe)(obj[:1])  # one sample alone, batch-independent physics
    torch.testing.assert_close(gained[0], B * correct[0], rtol=1e-5, atol=1e-6)


def test_quirk_detection_and_removal(tiny_cfg):
    cfg = tiny_cfg.override(
        {
            "train.forward_gain": "batch",
            "schedule.frozen": True,
            "model.spectral_layout": "reference",
            "clip.algorithm": "norm",
            "clip.value": 1.0,
            "train.keep_partial_batch": True,
        }
    )
    assert reference_quirks(cfg) == ["forward_gain", "frozen_schedule", "reference_layout", "clipping", "partial_batch"]
    assert reference_quirks(without_quirks(cfg)) == [] and without_quirks(cfg) == tiny_cfg
    assert reference_quirks(tiny_cfg) == []


def test_frozen_schedule_keeps_the_construction_time_lr(tiny_cfg, dataset_cache, tmp_path):
    """warmup_cosine built but never stepped: 0.1·lr at every step of every epoch (brief §5.4)."""
    cfg = tiny_cfg.override(
        {
            "schedule.name": "warmup_cosine",
            "schedule.warmup_epochs": 2,
            "schedule.frozen": True,
            "train.epochs": 3,
            "optim.lr": 1e-3,
        }
    )
    run = train(cfg, tmp_path, name="frozen", cache_dir=dataset_cache, progress=False)
    lr = StoreReader(run.store_path).scalars("lr").value
    assert len(lr) == 3 * (81 // 8)
    np.testing.assert_allclose(lr, 1e-4, rtol=1e-12)
    eff = run.read_json("effective_config.json")
    assert eff["scheduler"]["class"] == "WarmupCosineLR" and eff["scheduler"]["frozen"] is True
    assert eff["scheduler"]["stepped_by"] is None and eff["reference_quirks"] == ["frozen_schedule"]
    np.testing.assert_allclose(run.read_history()["lr"], [1e-4] * 3)


@pytest.mark.slow
def test_reference_attribution_sweep_end_to_end(tmp_path):
    defn = load_definition("quick-reference")
    assert set(defn.arms) == {
        "control",
        "stable_adam",
        "stable_adam_gain",
        "stable_adam_frozen",
        "stable_adam_reflayout",
        "stable_adam_all_quirks",
        "control_all_quirks",
    }
    out = run_sweep(defn, tmp_path / "ref", seeds=[5], overrides=TINY_OVERRIDES, echo=lambda _: None)
    summary = json.loads((out / "summary.json").read_text())
    att = summary["attribution"]
    named = {t["arm"] for t in att["rows"]} | {t["baseline"] for t in att["rows"]}
    assert named == set(defn.arms)
    rows = {t["arm"]: t for t in att["rows"]}
    assert (
        rows["stable_adam_gain"]["conditions"] == ["forward_gain"]
        and rows["stable_adam_gain"]["baseline"] == "stable_adam"
    )
    assert rows["control_all_quirks"]["baseline"] == "control"
    assert rows["control_all_quirks"]["conditions"] == [
        "forward_gain",
        "frozen_schedule",
        "reference_layout",
        "clipping",
        "partial_batch",
    ]
    for t in att["rows"]:
        assert t["with"]["n_done"] == 1 and t["without"]["n_done"] == 1
    # one epoch: the control cannot learn, so the attribution (and the verdict) say inconclusive, and why
    control = next(r for r in summary["runs"] if r["arm"] == "control")
    assert control["outcome"] == "below target"
    assert att["conclusion"] == "inconclusive" and att["text"] == (
        "Inconclusive: the control arm 'control' did not reach amp SSIM >= 0.80 (last weights) on every seed: "
        f"seed 5: amp SSIM {control['last_amp_ssim']:.3f} (below target), so no arm's collapse can be attributed "
        "to a condition."
    )
    assert summary["verdict"]["conclusion"] == "inconclusive"
    assert summary["verdict"]["text"].startswith("Inconclusive: the control arm 'control' did not reach")
    assert any("clipping differs between arms" in w for w in summary["warnings"])
    effective = json.loads((out / "stable_adam_all_quirks-s5" / "effective_config.json").read_text())
    assert effective["forward_gain"] == "batch" and effective["scheduler"]["frozen"] is True
    assert effective["generator"]["spectral_layout"] == "reference"
    # the definition states the reference's validation batching: the training batch size, partial last kept
    assert effective["val_loader"] == {
        "batching": "train",
        "batch_size": 4,
        "drop_last": False,
        "n_samples": 16,
        "num_batches": 4,
        "last_batch_size": 4,
    }
    assert effective["train_loader"]["drop_last"] is False and effective["train_loader"]["last_batch_size"] == 1
    md = (out / "summary.md").read_text()
    assert "## Attribution to the reference conditions" in md and "⚑ forward_gain" in md
    assert "## Best checkpoint" in md and "val_loss (min) ⚑ gain" in md
