"""Sweeps: definitions, a tiny sweep end to end, resume, failures, summary and its warnings."""

from __future__ import annotations

import json
import math
import signal

import pytest

from fnodiag.cli import main
from fnodiag.config import ConfigError
from fnodiag.sweeps.definition import load_definition, shipped_definitions
from fnodiag.sweeps.runner import run_sweep
from fnodiag.sweeps.summary import write_summary
from fnodiag.training.system import ReconstructionSystem

TINY_ARMS = {
    "control": {"model.arch": "hybrid", "optim.name": "adam"},
    "stable_sgd": {"model.arch": "stable_hybrid", "optim.name": "sgd", "optim.momentum": 0.9},
}
TINY_SHARED = {"train.epochs": 2, "train.capture_every": 3}


@pytest.fixture
def tiny_definition(tiny_sweep):
    return load_definition(tiny_sweep(TINY_ARMS, TINY_SHARED))


def test_shipped_definitions_are_valid_and_as_specified():
    assert {"stage-a", "quick"} <= set(shipped_definitions())
    stage_a = load_definition("stage-a")
    assert list(stage_a.arms) == ["control", "stable_adam", "stable_sgd", "stable_adamw", "prenorm_adam"]
    assert stage_a.seeds == (20260128, 20260129, 20260130)
    sgd = stage_a.config("stable_sgd", 20260129)
    assert (sgd.model.arch, sgd.optim.name, sgd.optim.momentum, sgd.optim.weight_decay) == (
        "stable_hybrid",
        "sgd",
        0.9,
        0.0,
    )
    assert (sgd.optim.lr, sgd.schedule.name, sgd.schedule.warmup_epochs, sgd.schedule.min_lr_ratio) == (
        3e-4,
        "warmup_cosine",
        5,
        0.05,
    )
    assert sgd.clip.algorithm == "none" and sgd.train.seed == 20260129 and sgd.data.N == 64
    adamw = stage_a.config("stable_adamw", 1)
    assert (adamw.optim.weight_decay, adamw.optim.beta1, adamw.optim.beta2) == (0.01, 0.9, 0.999)
    quick = load_definition("quick")
    assert list(quick.arms) == list(stage_a.arms) and quick.seeds == stage_a.seeds
    for arm in quick.arms:  # same optimizer choices; lr raised alike for every arm (documented)
        q, a = quick.config(arm, 1), stage_a.config(arm, 1)
        assert (q.model.arch, q.optim.name, q.optim.momentum, q.optim.weight_decay) == (
            a.model.arch,
            a.optim.name,
            a.optim.momentum,
            a.optim.weight_decay,
        )
        assert q.optim.lr == 3e-3 and q.clip == a.clip
    # quick-reference is reduced exactly like quick (its control and stable_adam arms are quick's)
    ref, stage_ref = load_definition("quick-reference"), load_definition("stage-a-reference")
    assert list(ref.arms) == list(stage_ref.arms) and ref.seeds == quick.seeds
    for arm in ("control", "stable_adam"):
        r, q = ref.config(arm, 1), quick.config(arm, 1)
        assert (r.data, r.model, r.optim, r.schedule) == (q.data, q.model, q.optim, q.schedule)
        assert (r.train.epochs, r.train.batch_size, r.train.capture_every) == (
            q.train.epochs,
            q.train.batch_size,
            q.train.capture_every,
        )


def test_definition_errors(tmp_path):
    with pytest.raises(ConfigError, match="stage-a"):
        load_definition("stage-z")
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "x"\nseeds = [1]\n[arms.a]\n"optim.name" = "lbfgs"\n')
    with pytest.raises(ConfigError, match="optim.name"):
        load_definition(bad)
    bad.write_text('name = "x"\nseeds = [1]\narmz = 3\n')
    with pytest.raises(ConfigError, match="unknown keys"):
        load_definition(bad)
    bad.write_text("name = [")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_definition(bad)


def test_overrides_apply_after_arm_settings(tiny_definition):
    cfg = tiny_definition.config("stable_sgd", 7, {"optim.lr": 0.05, "train.epochs": 1})
    assert (cfg.optim.name, cfg.optim.lr, cfg.train.epochs, cfg.train.seed) == ("sgd", 0.05, 1, 7)


@pytest.mark.slow
def test_tiny_sweep_end_to_end_and_resume(tiny_definition, tmp_path, monkeypatch):
    out = tmp_path / "sweep"
    original = ReconstructionSystem.training_step

    def interrupt_stable(self, batch, batch_idx):  # Ctrl-C in the second epoch of the second arm
        if self.cfg.model.arch == "stable_hybrid" and self.global_step == 12:
            raise KeyboardInterrupt
        return original(self, batch, batch_idx)

    monkeypatch.setattr(ReconstructionSystem, "training_step", interrupt_stable)
    lines = []
    try:
        with pytest.raises(SystemExit):
            run_sweep(tiny_definition, out, echo=lines.append)
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    assert json.loads((out / "stable_sgd-s7" / "status.json").read_text())["state"] == "interrupted"
    mid = json.loads((out / "summary.json").read_text())  # summarized mid-sweep too
    assert "Incomplete: 1 of 2" in mid["verdict"]["text"]

    monkeypatch.setattr(ReconstructionSystem, "training_step", original)
    lines.clear()
    run_sweep(tiny_definition, out, echo=lines.append)
    assert any("control-s7: finished, skipped" in line for line in lines)
    assert any("stable_sgd seed 7: epoch 2/2" in line for line in lines)
    resumed = json.loads((out / "stable_sgd-s7" / "effective_config.json").read_text())
    assert resumed["resumed_from"]["epoch"] == 1

    manifest = json.loads((out / "sweep.json").read_text())
    assert set(manifest["runs"]) == {"control-s7", "stable_sgd-s7"} and manifest["name"] == "tiny"
    for run in ("control-s7", "stable_sgd-s7"):
        for tag in ("best", "last"):
            report = json.loads((out / run / "capture" / f"{tag}.json").read_text())
            assert report["summary"]["n_samples"] == 16 and "output/spatial_std" in report["layers"]
    summary = json.loads((out / "summary.json").read_text())
    rows = {r["run"]: r for r in summary["runs"]}
    assert rows["control-s7"]["optimizer"] == "Adam" and rows["stable_sgd-s7"]["optimizer"] == "SGD"
    assert rows["stable_sgd-s7"]["momentum"] == 0.9 and rows["stable_sgd-s7"]["nesterov"] is True
    for row in rows.values():
        assert row["state"] == "finished" and row["epochs"] == "2/2"
        run_dir = out / row["run"]  # every value is the one in the run's own files
        val = json.loads((run_dir / "history.json").read_text())["val_loss"]
        metrics = json.loads((run_dir / "metrics.json").read_text())
        collapse = json.loads((run_dir / "collapse.json").read_text())
        last_capture = json.loads((run_dir / "capture" / "last.json").read_text())
        assert len(val) == 2 and row["best_val_loss"] == min(val) and row["final_val_loss"] == val[-1]
        for tag in ("best", "last"):
            for k in ("amp_ssim", "phase_ssim", "amp_mae"):
                assert row[f"{tag}_{k}"] == metrics[tag][k] and math.isfinite(row[f"{tag}_{k}"])
        assert (row["collapse"], row["onset_step"], row["earliest_layer"]) == (
            collapse["verdict"],
            collapse["onset_step"],
            collapse["earliest_layer"],
        )
        assert row["last_output_spatial_std"] == last_capture["per_layer"]["output"]["spatial_std"] > 0
        assert row["wall_time_s"] == json.loads((run_dir / "effective_config.json").read_text())["wall_time_s"] > 0
    assert set(summary["arms"]) == {"control", "stable_sgd"}
    assert summary["arms"]["control"]["n_done"] == 1 and summary["arms"]["control"]["final_val_loss"]["n"] == 1
    assert summary["warnings"] == []
    md = (out / "summary.md").read_text()
    assert "## Verdict" in md and "| stable_sgd-s7 | finished |" in md
    assert (out / "plots" / "val_loss.png").stat().st_size > 1000 and (out / "plots" / "amp_ssim.png").is_file()


@pytest.mark.slow
def test_failed_run_is_recorded_and_sweep_goes_on(tiny_definition, tmp_path, monkeypatch):
    original = ReconstructionSystem.training_step

    def broken_control(self, batch, batch_idx):
        if self.cfg.model.arch == "hybrid":
            raise RuntimeError("simulated failure")
        return original(self, batch, batch_idx)

    monkeypatch.setattr(ReconstructionSystem, "training_step", broken_control)
    out = run_sweep(tiny_definition, tmp_path / "s", overrides={"train.epochs": 1}, echo=lambda _: None)
    rows = {r["run"]: r for r in json.loads((out / "summary.json").read_text())["runs"]}
    assert rows["control-s7"]["state"] == "failed" and rows["stable_sgd-s7"]["state"] == "finished"
    assert "simulated failure" in json.loads((out / "control-s7" / "status.json").read_text())["message"]


@pytest.mark.slow
def test_summary_warns_when_effective_config_differs(tiny_definition, tmp_path):
    out = run_sweep(tiny_definition, tmp_path / "s", overrides={"train.epochs": 1}, echo=lambda _: None)
    eff_path = out / "stable_sgd-s7" / "effective_config.json"
    eff = json.loads(eff_path.read_text())
    eff["optimizer"]["class"] = "Adam"  # what the reference's plumbing did silently
    eff_path.write_text(json.dumps(eff))
    warns = write_summary(out)["warnings"]
    assert "stable_sgd-s7: optimizer.class asked 'SGD', got 'Adam'" in warns


@pytest.mark.slow
def test_resume_with_other_settings_is_refused(tiny_definition, tmp_path):
    out = run_sweep(
        tiny_definition, tmp_path / "s", arms=["control"], overrides={"train.epochs": 1}, echo=lambda _: None
    )
    before = (out / "control-s7" / "config.json").read_text()
    with pytest.raises(ConfigError, match="other settings"):
        run_sweep(tiny_definition, out, arms=["control"], overrides={"train.epochs": 1, "optim.lr": 0.1})
    assert (out / "control-s7" / "config.json").read_text() == before


@pytest.mark.slow
def test_sweep_and_summarize_cli(tmp_path, tiny_sweep, capsys):
    tiny_sweep(TINY_ARMS, TINY_SHARED)
    out = tmp_path / "cli"
    assert main(["sweep", str(tmp_path / "tiny.toml"), "--arms", "control", "--epochs", "1", "--out", str(out)]) == 0
    import re

    assert re.search(r"\| control-s7 \| finished \| (below target|never learned) \| 1/1 \|", capsys.readouterr().out)
    assert main(["summarize", str(out)]) == 0
    assert main(["sweep", str(tmp_path / "tiny.toml"), "--arms", "nope", "--out", str(out)]) == 2
    assert "unknown arm(s) nope" in capsys.readouterr().err
    assert main(["summarize", str(tmp_path)]) == 2


def test_capture_failure_keeps_a_finished_run_finished(tiny_definition, tmp_path, monkeypatch):
    """The post-run capture raises: the run stays finished (capture/error.txt, a summary warning) and a
    second invocation skips it instead of training it again."""
    import fnodiag.diagnostics.capture as capture_module

    def broken(*args, **kwargs):
        raise RuntimeError("capture broke")

    monkeypatch.setattr(capture_module, "load_generator", broken)
    lines = []
    out = run_sweep(tiny_definition, tmp_path / "s", arms=["control"], overrides={"train.epochs": 1}, echo=lines.append)
    run = out / "control-s7"
    status = json.loads((run / "status.json").read_text())
    assert status["state"] == "finished" and status["epoch"] == 1
    assert "RuntimeError: capture broke" in (run / "capture" / "error.txt").read_text()
    assert any("checkpoint capture failed" in line for line in lines)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["runs"][0]["state"] == "finished"
    assert any("control-s7: checkpoint capture failed (RuntimeError: capture broke)" in w for w in summary["warnings"])
    mtime = (run / "run.sqlite").stat().st_mtime_ns
    lines.clear()
    run_sweep(tiny_definition, out, arms=["control"], overrides={"train.epochs": 1}, echo=lines.append)
    assert any("control-s7: finished, skipped" in line for line in lines)
    assert json.loads((run / "status.json").read_text()) == status and (run / "run.sqlite").stat().st_mtime_ns == mtime


@pytest.mark.slow
def test_sigkilled_sweep_run_reads_as_stopped_and_the_sweep_resumes_it(tmp_path, tiny_sweep):
    """kill -9 a real ``fnodiag sweep``: the summary and the dashboard's catalog say 'stopped' (how to resume),
    and running the sweep again continues the run from its last checkpoint."""
    import subprocess
    import sys
    import time
    from pathlib import Path

    from fnodiag.dashboard.catalog import scan, summarize

    definition = tiny_sweep({"control": TINY_ARMS["control"]}, {"train.epochs": 3, "train.capture_every": 0})
    out = tmp_path / "sw"
    exe = Path(sys.executable).with_name("fnodiag")
    proc = subprocess.Popen(
        [str(exe), "sweep", str(definition), "--out", str(out)],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    last = out / "control-s7" / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and not last.is_file() and proc.poll() is None:
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert json.loads((out / "control-s7" / "status.json").read_text())["state"] == "running"
    summary = write_summary(out)
    assert summary["runs"][0]["state"] == "stopped"
    assert any("control-s7: stopped without a final state" in w and "fnodiag sweep" in w for w in summary["warnings"])
    row = summarize(next(e for entries in scan(tmp_path).sweeps.values() for e in entries if e.arm == "control"))
    assert row["state"] == "stopped" and "resume" in row["message"]

    lines = []
    run_sweep(load_definition(definition), out, echo=lines.append)
    status = json.loads((out / "control-s7" / "status.json").read_text())
    assert status["state"] == "finished"
    assert json.loads((out / "control-s7" / "effective_config.json").read_text())["resumed_from"]["epoch"] >= 1
