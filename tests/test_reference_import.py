"""``fnodiag import``: a reference arm folder (brief §7.3) becomes a read-only fnodiag run."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from reference_arm import ARCH, EPOCHS, LR, STEPS, build_reference_arm, csv_rows

from fnodiag.cli import main
from fnodiag.runs import RunDir, StoreReader


@pytest.fixture(scope="module")
def arm(tmp_path_factory):
    return build_reference_arm(tmp_path_factory.mktemp("ref") / "arm_stable_sgd")


@pytest.fixture(scope="module")
def imported(arm, tmp_path_factory):
    """Imported through the real command line, in its own process."""
    out = tmp_path_factory.mktemp("runs") / "ref_stable"
    proc = subprocess.run(
        [sys.executable, "-m", "fnodiag.cli", "import", str(arm), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "12 logged steps, 3 epochs" in proc.stdout
    return RunDir(out)


@pytest.mark.slow
def test_import_config_history_metrics_and_provenance(imported, arm):
    cfg = imported.read_config()  # a RunConfig mapped from the reference's TorchRunnerConfig
    assert (cfg.model.arch, cfg.model.width, cfg.model.blocks, cfg.model.modes) == (ARCH, 4, 2, 4)
    assert cfg.model.spectral_layout == "reference" and cfg.data.N == 32 and cfg.train.epochs == EPOCHS
    assert (cfg.optim.name, cfg.optim.lr, cfg.optim.momentum) == ("sgd", LR, 0.9)
    assert cfg.schedule.name == "warmup_cosine" and cfg.schedule.frozen and cfg.schedule.min_lr_ratio == 0.05
    assert cfg.clip.algorithm == "none" and cfg.train.capture_every == 0
    hist = imported.read_history()
    assert hist["train_loss"] == pytest.approx([0.1, 0.05, 0.1 / 3]) and len(hist["val_loss"]) == EPOCHS
    assert hist["lr"] == pytest.approx([0.1 * LR] * EPOCHS)  # the realised (frozen) LR from the CSV
    metrics = imported.read_metrics()
    assert metrics["best"] is None
    assert metrics["last"]["amp_ssim"] == 0.8312 and metrics["last"]["phase_mae"] == 0.1530
    info = imported.read_json("imported.json")
    assert info["source"] == str(arm.resolve()) and info["missing"] == [] and info["read_only"]
    assert info["files"]["lightning_logs/metrics.csv"].endswith("version_1/metrics.csv")  # the newest version
    assert info["files"]["checkpoints/best.ckpt"].endswith("epoch=02-mae_val=0.0667.ckpt")  # lowest val
    assert imported.best_ckpt_path.read_bytes() == (arm / "checkpoints" / "epoch=02-mae_val=0.0667.ckpt").read_bytes()
    assert imported.last_ckpt_path.is_file() and imported.model_path.is_file()
    assert json.loads((imported.path / "reference" / "runner_config.json").read_text())["architecture"] == ARCH
    status = imported.read_status()
    assert status["state"] == "finished" and "imported" in status["message"] and status["step"] == EPOCHS * STEPS
    assert imported.read_origin()["kind"] == "reference"
    assert not list(imported.path.parent.glob(".*import*"))  # no temporary folder left


def test_import_csv_scalars_land_in_the_store(imported):
    rows = csv_rows()
    train = [(r["step"], r["mae_train_loss_step"]) for r in rows if "mae_train_loss_step" in r]
    with StoreReader(imported.store_path) as r:
        loss = r.scalars("train/loss", scope="step")
        assert list(zip(loss.step.tolist(), loss.value.tolist())) == train
        pre = r.scalars("grad/norm_preclip")
        assert pre.value.tolist() == [r_["grad_norm_preclip_step"] for r_ in rows if "grad_norm_preclip_step" in r_]
        assert r.scalars("grad/clipped").value.tolist() == [0.0] * EPOCHS * STEPS  # post == pre: never clipped
        assert r.scalars("lr").value == pytest.approx([0.1 * LR] * EPOCHS)
        val = r.scalars("epoch/val_loss", scope="epoch")
        assert val.epoch.tolist() == [0, 1, 2] and val.value == pytest.approx([0.2, 0.1, 0.2 / 3])
        assert r.scalars("epoch/train_loss", scope="epoch").value == pytest.approx([0.1, 0.05, 0.1 / 3])
        assert r.scalars("epoch/clip_fraction", scope="epoch").value.tolist() == [0.0] * EPOCHS
        assert r.layers() == []  # no live per-layer captures


def test_import_captures_model_pt(imported):
    report = imported.read_json("capture/last.json")
    assert report["summary"]["checkpoint"] == str(imported.model_path)  # the final path, not the temp folder
    assert report["summary"]["architecture"] == ARCH and report["summary"]["n_samples"] == 1
    assert (
        report["summary"]["layout"].startswith("reference")
        and "model.autoencoder.*" in report["summary"]["ignored_keys"]
    )
    # the reference-named weights really loaded: the output matches the fixture's generator, run here
    import torch

    from fnodiag.config import RunConfig
    from fnodiag.models import build_model

    torch.manual_seed(0)  # the seed generator_state() built the fixture's weights with
    cfg = RunConfig().override(
        {
            "model.arch": ARCH,
            "model.width": 4,
            "model.modes": 4,
            "model.blocks": 2,
            "model.spectral_layout": "reference",
            "data.N": 32,
        }
    )
    gen = build_model(cfg.model, 32).eval()
    with np.load(Path(report["summary"]["input"])) as f:
        x = torch.from_numpy(np.moveaxis(f["diffraction"][:1], -1, 1).astype(np.float32))
    with torch.no_grad():
        out = np.abs(gen(x).numpy()).astype(np.float64)  # (1, C, N, N) complex -> magnitude
    expected = out.std(axis=(-2, -1)).mean()
    assert report["per_layer"]["output"]["spatial_std"] == pytest.approx(expected, rel=1e-4)


@pytest.mark.slow
def test_imported_run_shown_beside_an_own_run_in_dashboard_and_summary(imported, tiny_cfg, dataset_cache):
    from fnodiag.dashboard.store import DashboardStore
    from fnodiag.dashboard.views import ActivationsView, GradientsView, OverviewView
    from fnodiag.sweeps.summary import write_summary
    from fnodiag.training.run import train

    root = imported.path.parent
    train(
        tiny_cfg.override({"train.epochs": 1, "train.capture_every": 3}),
        root,
        name="own",
        cache_dir=dataset_cache,
        progress=False,
    )
    store = DashboardStore(root)
    assert set(store.param.arms.objects) == {"own", "ref_stable"} and not store.catalog.problems
    store.arms = ["own", "ref_stable"]
    rows = {r["label"]: r for r in store.rows}
    assert rows["ref_stable"]["state"] == "finished" and rows["ref_stable"]["optimizer"].startswith("SGD")
    assert rows["ref_stable"]["amp_ssim_last"] == 0.8312
    text = lambda view: " ".join(str(getattr(o, "object", "")) for o in view._layout.objects)
    acts = ActivationsView(store=store)
    acts.opened()  # views draw while their tab is on show
    assert "ref_stable" in text(acts) and "no live per-layer captures" in text(acts)
    assert any("Bokeh" in type(o).__name__ or "Row" in type(o).__name__ for o in acts._layout.objects)  # own run drawn
    assert not acts._waiting  # an import never gets captures: the view does not wait for them
    grads, overview = GradientsView(store=store), OverviewView(store=store)
    grads.opened(), overview.opened()
    assert "no live per-layer captures" in text(grads)
    assert "imported from the reference project" in text(overview)
    summary = write_summary(root)  # a plain runs folder: every run its own arm
    runs = {r["run"]: r for r in summary["runs"]}
    assert runs["ref_stable"]["origin"] == "reference" and runs["own"]["origin"] == "fnodiag"
    assert runs["ref_stable"]["last_amp_ssim"] == 0.8312
    assert "(imported from the reference)" in (root / "summary.md").read_text()


def _import(src, out, capsys, *extra):
    rc = main(["import", str(src), "--out", str(out), *extra])
    return rc, capsys.readouterr().err.strip()


def _bad_arm(arm, tmp_path, edit):
    bad = tmp_path / "bad"
    shutil.copytree(arm, bad)
    edit(bad)
    return bad


@pytest.mark.parametrize(
    "edit, message",
    [
        (
            lambda a: (a / "lightning_logs/version_1/metrics.csv").write_text("epoch,step,mae_val_loss\n0,3,abc\n"),
            "line 2: column 'mae_val_loss' holds 'abc', not a number",
        ),
        (
            lambda a: (a / "lightning_logs/version_1/metrics.csv").write_text("loss,value\n1,2\n"),
            "has no 'step' column",
        ),
        (
            lambda a: (a / "lightning_logs/version_1/metrics.csv").write_text("epoch,step,mae_val_loss\n0,3\n"),
            "line 2 has 2 fields, the header 3",
        ),
        (lambda a: (a / f"runs/pinn_{ARCH}/history.json").write_text('{"train_loss": [0.1,'), "history"),
        (
            lambda a: (a / f"runs/pinn_{ARCH}/metrics.json").write_text('{"ssim": 0.5}'),
            "'ssim' must be [amplitude, phase]",
        ),
        (lambda a: shutil.rmtree(a / "runs"), "has no runs/pinn_<arch>/ folder"),
        (lambda a: shutil.copytree(a / f"runs/pinn_{ARCH}", a / "runs/pinn_hybrid"), "choose one with --arch"),
    ],
)
def test_malformed_folders_are_one_line_errors_and_write_nothing(arm, tmp_path, capsys, edit, message):
    bad = _bad_arm(arm, tmp_path, edit)
    runs = tmp_path / "runs"
    rc, err = _import(bad, runs / "x", capsys)
    assert rc == 2 and message in err and len(err.splitlines()) == 1, err
    assert err.startswith("fnodiag import: error:")
    assert not runs.exists() or list(runs.iterdir()) == []  # no run folder, no temp folder


def test_existing_out_is_refused_unchanged_and_missing_parts_are_recorded(arm, tmp_path, capsys):
    out = tmp_path / "runs" / "taken"
    out.mkdir(parents=True)
    (out / "keep.txt").write_text("mine")
    rc, err = _import(arm, out, capsys)
    assert rc == 2 and "already exists and is not empty" in err
    assert [p.name for p in out.iterdir()] == ["keep.txt"] and (out / "keep.txt").read_text() == "mine"
    # a January-style folder: lightning_logs and checkpoints went elsewhere, no dataset to capture on
    bare = _bad_arm(
        arm, tmp_path, lambda a: [shutil.rmtree(a / d) for d in ("lightning_logs", "checkpoints", "datasets")]
    )
    rc, err = _import(bare, tmp_path / "runs" / "jan", capsys, "--arch", ARCH)
    assert rc == 0, err
    run = RunDir(tmp_path / "runs" / "jan")
    missing = " ".join(run.read_json("imported.json")["missing"])
    assert "metrics.csv" in missing and "last.ckpt" in missing and "capture of model.pt" in missing
    assert run.read_history()["train_loss"] and not run.best_ckpt_path.exists()


def test_pinn_folder_itself_is_accepted(arm, tmp_path, capsys):
    rc, err = _import(arm / "runs" / f"pinn_{ARCH}", tmp_path / "r", capsys, "--no-capture")
    assert rc == 0, err
    assert RunDir(tmp_path / "r").read_json("imported.json")["arm"] == str(arm.resolve())
    assert not (tmp_path / "r" / "capture").exists()


def test_csv_fixture_has_the_csvlogger_shape(arm):
    with (arm / "lightning_logs/version_1/metrics.csv").open() as fh:
        header = next(csv.reader(fh))
    assert {
        "mae_train_loss_step",
        "mae_val_loss",
        "learning_rate",
        "grad_norm_preclip_step",
        "grad_norm_postclip_step",
        "epoch",
        "step",
    } <= set(header)


def test_a_failure_while_writing_leaves_no_partial_run(arm, tmp_path, monkeypatch):
    import fnodiag.interop.reference_import as ri

    def broken(run, rows):
        (run.path / "half-written").write_text("x")
        raise OSError("disk full")

    monkeypatch.setattr(ri, "write_scalars", broken)
    with pytest.raises(OSError, match="disk full"):
        ri.import_reference(arm, tmp_path / "runs" / "x")
    assert list((tmp_path / "runs").iterdir()) == []  # neither the run nor its temporary folder
