"""``fnodiag diagnose`` (text, JSON, findings.json, bad input), ``findings.json`` at the end of a ``watch`` run,
and the sweep summary's first finding per run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_findings_runs import make_run

import fnodiag
from fnodiag.cli import main
from fnodiag.runs import RunDir
from fnodiag.sweeps.summary import write_summary


def _cli(*args, cwd):
    exe = Path(sys.executable).with_name("fnodiag")  # the installed console script (PYTHONPATH: this checkout)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run([str(exe), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_diagnose_prints_ranked_findings_with_links_and_writes_findings_json(tmp_path):
    sick = make_run(tmp_path / "runs" / "sick", collapse_at=220)
    healthy = make_run(tmp_path / "runs" / "healthy")
    proc = _cli("diagnose", str(sick.path), str(healthy.path), "--root", str(tmp_path / "runs"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout.splitlines()
    assert out[0] == f"{sick.path}: 5 findings"
    assert out[1].startswith("  1. [critical] collapse head, step 220: The output became spatially constant")
    assert out[2] == "     evidence: /app?run=sick&tab=activations&stat=spatial_std&layer=head&step=220"
    assert f"{healthy.path}: 0 findings" in out
    saved = json.loads(sick.findings_path.read_text())
    assert saved["settings_audited"] is True and saved["findings"][0]["kind"] == "collapse"
    assert json.loads(healthy.findings_path.read_text())["findings"] == []

    proc = _cli("diagnose", str(sick.path), "--json", "--no-write", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    (entry,) = json.loads(proc.stdout)
    assert entry["run"] == str(sick.path) and entry["findings"][0]["link"].startswith("/app?run=sick&tab=activations")
    assert [f["kind"] for f in entry["findings"]] == [f["kind"] for f in saved["findings"]]


def test_diagnose_bad_input_is_one_line_and_exit_2(tmp_path, capsys):
    (tmp_path / "plain").mkdir()
    run = make_run(tmp_path / "r")
    cases = [
        ([str(tmp_path / "missing")], "does not exist"),
        ([str(tmp_path / "plain")], "not a run folder"),
        ([str(run.path), "--root", str(tmp_path / "plain")], "not inside the served folder"),
        ([str(run.path), "--root", str(tmp_path / "nowhere")], "--root"),
    ]
    for args, words in cases:
        assert main(["diagnose", *args]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("fnodiag diagnose: error:") and words in err[0], err
    assert not run.findings_path.exists()  # nothing written for bad input


def test_a_watch_run_writes_findings_json_when_it_closes(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.GELU(), torch.nn.Conv2d(4, 1, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    with fnodiag.watch(model, tmp_path / "w", optimizer=opt, every=2) as w:
        for _ in range(6):
            loss = model(torch.randn(4, 1, 8, 8)).square().mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            w.log(loss=loss)
    saved = json.loads(RunDir(tmp_path / "w").findings_path.read_text())
    assert saved["run"] == "w" and saved["settings_audited"] is False and isinstance(saved["findings"], list)


def test_the_summary_gives_each_runs_first_finding(tmp_path):
    make_run(tmp_path / "runs" / "sick", collapse_at=220)
    make_run(tmp_path / "runs" / "healthy")
    summary = write_summary(tmp_path / "runs")
    first = {r["run"]: r["first_finding"] for r in summary["runs"]}
    assert first["healthy"] is None
    assert (first["sick"]["kind"], first["sick"]["layer"], first["sick"]["first"]) == ("collapse", "head", 220)
    assert first["sick"]["link"] == "/app?run=sick&tab=activations&stat=spatial_std&layer=head&step=220"
    md = (tmp_path / "runs" / "summary.md").read_text()
    assert "## First findings" in md
    assert "| sick | critical | collapse | head | step 220 |" in md
    assert "| healthy | — | no findings |" in md
