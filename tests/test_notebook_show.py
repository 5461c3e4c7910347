"""``fnodiag.show``: the dashboard's views as a notebook object, over a real watched run, without a browser."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from test_watch import Net, _batches, _step

import fnodiag
from fnodiag.dashboard.dashboard import Dashboard
from fnodiag.runs import RunDir, RunStore, StoreReader


@pytest.fixture(scope="module")
def watched(tmp_path_factory):
    """runs/net: a plain loop recorded by ``fnodiag.watch`` (6 steps, layers captured every 2)."""
    root = tmp_path_factory.mktemp("show") / "runs"
    torch.manual_seed(0)
    model = Net()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    with fnodiag.watch(model, root / "net", optimizer=opt, every=2) as w:
        for x in _batches(6):
            w.log(loss=_step(model, opt, x))
    return RunDir(root / "net")


def test_import_fnodiag_imports_no_panel():
    code = "import sys, fnodiag\nprint(sorted(m for m in ('panel', 'bokeh', 'holoviews') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_show_is_the_dashboard_and_its_views_gain_the_rows_the_run_writes(watched):
    view = fnodiag.show(watched.path, tabs=["Overview", "Activations"], live=False)
    assert isinstance(view.dashboard, Dashboard) and view.callback is None
    assert [v.title for v in view.dashboard.views] == ["Overview", "Activations"]
    assert list(view.dashboard.tabs._names) == ["Overview", "Activations"]  # no Checkpoint, no Launch (read-only)
    assert [e.run.path for e in view.store.selected()] == [watched.path]  # the run given is the one shown
    view.dashboard.tabs.active = 1  # Activations
    assert view.tick() == 0  # nothing new written
    feed = view.dashboard.views[1]._feeds[0]
    out = feed.lines.source("output", "Curve")
    n_out = len(out.data["value"])
    with StoreReader(watched.store_path) as reader:
        last = reader.last_step()
    with RunStore(watched.store_path) as store:  # the run's store gains two captures (as while it trains)
        for k in (1, 2):
            store.log_layer_stats(last + k, 0, "activation", {(layer, feed.stat): 0.5 * k for layer in feed.layers})
    assert view.tick() > 0
    assert len(out.data["value"]) == n_out + 2 and out.data["value"][-1] == 1.0
    assert view.tick() == 0  # nothing new again


def test_show_refuses_unknown_tabs_and_folders(watched):
    with pytest.raises(ValueError, match=r"unknown tab\(s\) 'Nope'; choose from Overview, Activations"):
        fnodiag.show(watched.path, tabs=["Overview", "Nope"], live=False)
    with pytest.raises(ValueError, match="needs read_only=False"):
        fnodiag.show(watched.path, tabs="Launch", live=False)
    with pytest.raises(TypeError, match="takes folders"):
        fnodiag.show(3, live=False)
