"""``benchmarks/device_study.py``: the full-size phase5 study's command, and the same study run at the tiny size.

The tiny run is the script itself in a subprocess (``--tiny``): the real ``fnodiag sweep phase5`` with
the five arms, two worker processes, a shared dataset, training, capture and the summary, whose verdict
and remove-one-condition table the script prints.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "device_study.py"


def load_script():
    spec = importlib.util.spec_from_file_location("device_study", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_full_size_command_runs_the_five_arms_concurrently_on_one_gpu(tmp_path):
    study = load_script()
    cmd = study.sweep_command(tmp_path / "p5", tiny=False, epochs=5, jobs=5, seed=20260128)
    flags = dict(zip(cmd[3::2], cmd[4::2]))
    assert cmd[1:3] == ["sweep", "phase5"]
    assert flags["--arms"].split(",") == ["stable", "control", "no_gain", "drop_partial_batch", "clip_1"]
    assert (flags["--seeds"], flags["--jobs"], flags["--gpus-per-run"], flags["--epochs"]) == (
        "20260128",
        "5",
        "0.2",
        "5",
    )
    assert flags["--accelerator"] == "gpu" and "--N" not in flags  # phase5's own (full) size
    tiny = study.sweep_command(tmp_path / "p5", tiny=True, epochs=1, jobs=2, seed=20260128)
    assert "--gpus-per-run" not in tiny and tiny[tiny.index("--N") + 1] == "32"
    # the sizing rule: 5 epochs x 862 steps at 60 ms/step fit the 10 minutes with the overhead
    assert study.epochs_that_fit(0.060) >= 5 and study.epochs_that_fit(0.5) == 1


def test_summary_sections_keeps_the_verdict_and_the_attribution():
    study = load_script()
    md = "# Sweep\n\n## Verdict\n\nok\n\n## Warnings\n\n- w\n\n"
    md += "## Attribution: remove one condition\n\n| t |\n\n## Arms\n"
    assert study.summary_sections(md) == "## Verdict\n\nok\n\n## Attribution: remove one condition\n\n| t |\n"


@pytest.mark.slow
def test_the_study_runs_at_the_tiny_size_and_prints_the_verdict_and_removal_table(tmp_path):
    out = tmp_path / "p5"
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}  # the CPU path, as on this machine
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--tiny", "--out", str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=1200,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    printed = proc.stdout.split("==== device study", 1)[1]  # what the script prints after the sweep's own output
    assert "## Verdict" in printed and "## Attribution: remove one condition from `stable`" in printed
    removals = [line for line in printed.splitlines() if line.startswith("| ") and " | " in line[2:]]
    arms = {line.split(" | ")[1] for line in removals[1:]}
    assert arms == {"no_gain", "drop_partial_batch", "clip_1"}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["baseline"] == "stable" and summary["control"] == "control"
    runs = {r["arm"]: r for r in summary["runs"]}
    assert set(runs) == {"stable", "control", "no_gain", "drop_partial_batch", "clip_1"}
    assert {r["state"] for r in runs.values()} == {"finished"} and {r["seed"] for r in runs.values()} == {20260128}
    assert {row["arm"] for row in summary["attribution"]["rows"]} == {"no_gain", "drop_partial_batch", "clip_1"}
    execution = json.loads((out / "sweep.json").read_text())["execution"]
    assert execution["jobs"] == 2  # worker processes, as on the GPU (five there)
    for arm in runs:
        assert f"{arm}-s20260128: finished" in printed  # the per-run step time lines
