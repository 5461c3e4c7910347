"""The dashboard never imports Lightning: every tab built over every kind of run, in a fresh process.

The runs folder is made here (with Lightning: training, ``fnodiag.LiveCapture``); only the dashboard
part runs in the subprocess, which then reports what ``sys.modules`` holds. Marked slow (it trains and
builds every plot); ``tests/test_app.py`` checks the overview rows of real runs the same way, fast.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
import torch
from reference_arm import build_reference_arm
from test_live_capture_any import TinyComplexNet, _fit

import fnodiag
from fnodiag.interop.reference_import import import_reference
from fnodiag.runs import Heartbeat, RunDir, states

pytestmark = pytest.mark.slow

DASHBOARD = r"""
import asyncio, json, sys
import panel as pn
from bokeh.document import Document
from fnodiag.dashboard.dashboard import ROWS_EVERY, Dashboard

root = sys.argv[1]
d = Dashboard(root)
s = d.store
seen, tabs = [], []
for sweep in s.param.sweep.objects:
    s.sweep = sweep
    s.arms = list(s.param.arms.objects)
    s.seeds = list(s.param.seeds.objects)
    seen += [e.label for e in s.selected()]
    d.layout().get_root(Document())  # the page's Bokeh models (each tab's are built as it is shown below)
    for k, (name, _) in enumerate(zip(d.tabs._names, d.tabs)):
        d.tabs.active = k
        for _ in range(2 * ROWS_EVERY):  # enough ticks to re-read rows and rescan the folder
            d.tick()
        tabs.append(name)
    s.checkpoint = "last"
    asyncio.run(d.checkpoint._on_click())  # a checkpoint capture in the Checkpoint tab
rows = {r["label"]: [r["state"], r["outcome"]] for r in s.rows}
print(json.dumps({
    "lightning": "lightning" in sys.modules,
    "pytorch_lightning": "pytorch_lightning" in sys.modules,
    "lightning_modules": sorted(m for m in sys.modules if "lightning" in m)[:5],
    "seen": seen, "tabs": tabs, "rows": rows, "capture": d.checkpoint.status.object,
}))
"""


@pytest.fixture(scope="module")
def every_kind_of_run(tmp_path_factory, tiny_cfg, dataset_cache):
    """runs/: own (finished fnodiag run), live (running: a heartbeat from this process), ref (imported
    reference arm), module (a plain LightningModule recorded by fnodiag.LiveCapture)."""
    from fnodiag.training.run import train

    root = tmp_path_factory.mktemp("runs")
    cfg = tiny_cfg.override({"train.capture_every": 2, "train.epochs": 1, "train.frame_every": 2})
    train(cfg, root, name="own", cache_dir=dataset_cache, progress=False)
    shutil.copytree(root / "own", root / "live")
    arm = build_reference_arm(tmp_path_factory.mktemp("ref") / "arm_stable_sgd")
    import_reference(arm, root / "ref")
    torch.manual_seed(0)
    _fit(TinyComplexNet(), fnodiag.LiveCapture(root / "module", every=2))
    return root


def test_every_tab_over_every_kind_of_run_imports_no_lightning(every_kind_of_run, tmp_path):
    root = every_kind_of_run
    live = RunDir(root / "live")
    heartbeat = Heartbeat(lambda **fields: live.write_status(states.RUNNING, **fields))
    heartbeat.beat(step=3, epoch=0, message="")  # this process is the live run's writer while the dashboard reads
    try:
        out = subprocess.run(
            [sys.executable, "-c", DASHBOARD, str(root)], capture_output=True, text=True, timeout=600, cwd=tmp_path
        )
    finally:
        heartbeat.stop()
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert sorted(got["seen"]) == ["live", "module", "own", "ref"]
    assert got["tabs"] == [
        "Overview",
        "Activations",
        "Gradients",
        "Reconstructions",
        "Compare",
        "Spectra",
        "Findings",
        "Checkpoint",
        "Launch",
    ]
    assert got["rows"]["live"][0] == states.RUNNING and got["rows"]["own"][0] == states.FINISHED
    assert got["rows"]["module"][0] == states.FINISHED and "Capture failed" not in got["capture"]
    assert not got["lightning"] and not got["pytorch_lightning"], got["lightning_modules"]
