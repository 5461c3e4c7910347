"""Findings of run folders: synthetic stores, ``findings.json``, links, asked-vs-got settings, ``LiveCapture``
and imported runs, and two real tiny trainings: one whose ``decoder.0`` weights a callback zeroes at a chosen
step (the top finding names that layer within one capture period), and the real-collapse run of
``tests/test_collapse.py`` (the first finding names collapse detection's onset window and earliest layer).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import Callback

from fnodiag.analysis.findings import findings_from_run, write_findings
from fnodiag.config import RunConfig
from fnodiag.diagnostics.collapse import detect_collapse
from fnodiag.diagnostics.findings import Finding
from fnodiag.runs import RunDir, RunStore

STEPS = np.arange(0, 600, 10)
LAYERS = ["lifter", "encoder.0", "bottleneck", "decoder.0", "head", "output"]


def make_run(path, *, collapse_at=None, nan_loss_at=None, lr_doubles_at=None) -> RunDir:
    """A run folder written through RunStore: healthy noisy layers, with the planted events."""
    run = RunDir.create(path, RunConfig())
    rng = np.random.default_rng(0)
    lr = RunConfig().optim.lr
    with RunStore(run.store_path) as st:
        for step in STEPS:
            epoch = int(step) // 100
            values = {}
            for layer in LAYERS:
                level = 0.1 + 0.4 * (1 - np.exp(-step / 150)) + 0.02 * rng.standard_normal()
                dead = collapse_at is not None and step >= collapse_at and layer in ("head", "output")
                values[(layer, "spatial_std")] = 0.0 if dead else level
                values[(layer, "std")] = 1.0
                values[(layer, "min_channel_std")] = 0.0 if dead else level / 2
                values[(layer, "nonfinite")] = 0.0
            st.log_layer_stats(int(step), epoch, "activation", values)
            st.log_layer_stats(int(step), epoch, "grad", {(layer, "norm"): 1.0 for layer in LAYERS[:-1]})
            loss = np.nan if nan_loss_at is not None and step >= nan_loss_at else 0.1
            step_lr = 2 * lr if lr_doubles_at is not None and step >= lr_doubles_at else lr
            st.log_scalars(int(step), epoch, {"train/loss": loss, "lr": step_lr})
    return run


def test_a_collapsed_run_reads_first_as_collapse_detection_decided(tmp_path):
    run = make_run(tmp_path / "sweep" / "r", collapse_at=220)
    report = detect_collapse(run)
    found = write_findings(run, root=tmp_path)
    first = found[0]
    assert (
        (first.kind, first.layer, first.first, first.last)
        == ("collapse", report["earliest_layer"], report["earliest_step"], report["onset_step"])
        == ("collapse", "head", 220, 220)
    )
    assert first.link == "/app?run=sweep%2Fr&tab=activations&stat=spatial_std&layer=head&step=220"
    assert {(f.kind, f.layer) for f in found[1:]} == {
        ("dead_channels", "head"),
        ("dead_channels", "output"),
        ("regime_change", "head"),
        ("regime_change", "output"),
    }
    saved = json.loads(run.findings_path.read_text())
    assert saved["version"] == 1 and saved["run"] == "r"
    assert [d["kind"] for d in saved["findings"]] == [f.kind for f in found]
    assert saved["findings"][0] == first.to_dict()
    assert findings_from_run(run.path)[0].link == "/app?run=r&tab=activations&stat=spatial_std&layer=head&step=220"
    with pytest.raises(ValueError, match="not inside the served folder"):
        findings_from_run(run, root=tmp_path / "elsewhere")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        findings_from_run(tmp_path / "missing")


def test_a_healthy_run_has_no_findings(tmp_path):
    run = make_run(tmp_path / "r")
    assert write_findings(run) == []
    assert json.loads(run.findings_path.read_text())["findings"] == []


def test_non_finite_loss_and_an_lr_that_differs_from_asked(tmp_path):
    found = findings_from_run(make_run(tmp_path / "r", nan_loss_at=400, lr_doubles_at=300))
    assert [(f.kind, f.first, f.statistic) for f in found] == [
        ("nonfinite", 400, "train/loss"),
        ("settings", 300, "lr per step (constant)"),
    ]
    assert found[1].link == "/app?run=r&tab=overview&stat=lr+per+step+%28constant%29&step=300"


def test_a_live_capture_run_and_an_imported_run(tmp_path):
    from reference_arm import build_reference_arm
    from test_live_capture_any import TinyComplexNet, _fit

    import fnodiag
    from fnodiag.interop.reference_import import import_reference

    torch.manual_seed(0)
    live = tmp_path / "live"
    _fit(TinyComplexNet(), fnodiag.LiveCapture(live, every=1), steps=12)
    found = write_findings(live)
    assert all(isinstance(f, Finding) for f in found) and RunDir(live).findings_path.is_file()
    assert not [f for f in found if f.kind in ("settings", "collapse", "nonfinite")]

    imported = import_reference(build_reference_arm(tmp_path / "arm"), tmp_path / "imported", capture=False)
    found = write_findings(imported)
    assert json.loads(imported.findings_path.read_text())["findings"] == [f.to_dict() for f in found]


# -- real tiny trainings ---------------------------------------------------------------------------------------


class ZeroLayer(Callback):
    """From optimizer step ``at`` on, zero every weight of ``prefix`` after each update (kept at zero)."""

    def __init__(self, prefix: str, at: int):
        self.prefix, self.at = prefix, at

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step - 1 < self.at:  # the step just taken
            return
        with torch.no_grad():
            for name, p in pl_module.generator.named_parameters():
                if name.startswith(self.prefix + ".") and name.endswith("weight"):
                    p.zero_()


def test_a_layer_zeroed_at_a_chosen_step_is_the_top_finding(tiny_cfg, dataset_cache, tmp_path):
    from fnodiag.training.run import train

    at = 11  # of 20 steps (2 epochs of 10); every step captured
    previous = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model: one thread is faster on a shared machine
    try:
        run = train(
            tiny_cfg.override({"train.capture_every": 1}),
            tmp_path,
            name="zeroed",
            cache_dir=dataset_cache,
            progress=False,
            extra_callbacks=[ZeroLayer("decoder.0", at)],
        )
    finally:
        torch.set_num_threads(previous)
    found = findings_from_run(run)
    top = found[0]
    assert top.layer == "decoder.0" and abs(top.first - at) <= 1, [(f.kind, f.layer, f.first) for f in found]
    assert all(f.first is None or f.first >= at for f in found)  # nothing fired on the healthy part


@pytest.mark.slow
def test_the_real_collapse_run_reads_first_as_collapse_detection(tiny_cfg, tmp_path):
    from test_collapse import REAL_COLLAPSE

    from fnodiag.training.run import train

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run = train(
            tiny_cfg.override(REAL_COLLAPSE).validate(),
            tmp_path,
            name="kick",
            cache_dir=tmp_path / "ds",
            progress=False,
        )
    finally:
        torch.set_num_threads(previous)
    report = run.read_json("collapse.json")  # written by training, as it decided
    assert report["verdict"] == "collapsed" and report["earliest_layer"] is not None  # see test_collapse.py
    first = findings_from_run(run)[0]
    assert (first.kind, first.layer, first.first, first.last) == (
        "collapse",
        report["earliest_layer"],
        report["earliest_step"],
        report["onset_step"],
    )
