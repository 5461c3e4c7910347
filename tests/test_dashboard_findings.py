"""The Findings and Spectra tabs and evidence links, built without a server over real run folders.

The runs folder holds ``sick`` (a store written through ``RunStore`` whose head and output layers stop
varying at step 220, as ``tests/test_findings_runs.py`` builds it) and ``real`` (a real tiny training with
live capture, spectral statistics included). The views are driven as the page drives them (choose runs,
open a tab, follow a link); a subprocess checks that all of it runs without importing Lightning.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from test_findings_runs import make_run

from fnodiag.analysis.findings import findings_from_run
from fnodiag.analysis.spectra import at_step, read_spectra
from fnodiag.dashboard.catalog import SINGLE
from fnodiag.dashboard.dashboard import Dashboard
from fnodiag.runs import RunStore

SICK_LINK = "?run=sick&tab=activations&stat=spatial_std&layer=head&step=220"


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_cfg, dataset_cache):
    from fnodiag.training.run import train

    root = tmp_path_factory.mktemp("dash-findings") / "runs"
    make_run(root / "sick", collapse_at=220)
    cfg = tiny_cfg.override({"train.capture_every": 2, "train.epochs": 1})
    train(cfg, root, name="real", cache_dir=dataset_cache, progress=False)
    return root


def _choose(d: Dashboard, *names: str) -> None:
    d.store.sweep = SINGLE
    d.store.arms = list(names)


def _open(d: Dashboard, title: str):
    d.tabs.active = d.tab_titles().index(title)
    return d.view(title)


def test_the_findings_tab_lists_the_chosen_runs_findings_with_their_links(runs):
    d = Dashboard(runs)
    view = d.view("Findings")
    _choose(d, "sick", "real")
    assert view.found == {}  # nothing read while the tab is hidden
    _open(d, "Findings")
    assert list(view.found) == ["real", "sick"]  # arm order
    assert [f.to_dict() for f in view.found["sick"]] == [
        f.to_dict() for f in findings_from_run(runs / "sick", root=runs)
    ]
    assert (view.found["sick"][0].kind, view.found["sick"][0].layer) == ("collapse", "head")
    html = "".join(p.object for p in view._body if hasattr(p, "object") and isinstance(p.object, str))
    link = f'class="fnodiag-evidence-link" href="{SICK_LINK.replace("&", "&amp;")}"'
    assert html.index("### real") < html.index("### sick") < html.index(link)

    assert view.refresh() is False  # records unchanged: nothing recomputed
    with RunStore(runs / "sick" / "run.sqlite") as st:  # the run writes more: the tab recomputes it
        st.log_scalars(600, 6, {"train/loss": float("nan")})
    assert view.refresh() is True
    assert ("nonfinite", 600, "train/loss") in [(f.kind, f.first, f.statistic) for f in view.found["sick"]]
    _choose(d, "real")
    assert list(view.found) == ["real"]  # a new selection while shown: recomputed at once


def test_the_spectra_tab_draws_a_real_runs_band_energies_and_focuses_a_layer_and_step(runs):
    rec = read_spectra(runs / "real")
    assert not rec.empty and rec.bands.bands == 8 and rec.above[0] and rec.modes.layers
    layers, used, values = at_step(rec.bands, None)
    ok = ~np.isnan(values).any(axis=1)
    assert ok.any() and np.allclose(values[ok].sum(axis=1), 1.0)  # band shares of each layer sum to one

    d = Dashboard(runs)
    view = d.view("Spectra")
    _choose(d, "real")
    assert view.records == {}  # nothing read while the tab is hidden
    _open(d, "Spectra")
    assert list(view.records) == ["real"] and view.layer == view.param.layer.objects[0]
    assert view.step == int(rec.steps()[-1])
    titles = [p.object.opts.get().kwargs.get("title", "") for row in view._plots for p in row]
    assert f"real: share of energy per band at step {used}" in titles
    assert any("above the kept modes" in t for t in titles) and any("spectral weights" in t for t in titles)
    n = len(view._plots)
    view.compare = True
    assert len(view._plots) == n + 1  # the change since an earlier step, one more row

    layer, step = rec.above[0][0], int(rec.steps()[1])
    assert view.focus(layer=layer, step=step) == []
    assert (view.layer, view.step) == (layer, step)
    titles = [p.object.opts.get().kwargs.get("title", "") for row in view._plots for p in row]
    assert f"real: {layer} share of energy per band" in titles
    assert f"real: share of energy per band at step {step}" in titles
    assert view.focus(layer="no.such.layer") == ["layer `no.such.layer` has no spectral records in the chosen runs"]
    assert view.layer == layer


def test_an_evidence_link_chooses_run_tab_statistic_layer_and_step(runs):
    d = Dashboard(runs)
    args = {"run": [b"sick"], "tab": [b"activations"], "stat": [b"min_channel_std"], "layer": [b"output"]}
    ev = d.select({**args, "step": [b"220"]})
    assert (ev.run, ev.tab, ev.stat, ev.layer, ev.step, ev.notes) == (
        "sick",
        "activations",
        "min_channel_std",
        "output",
        220,
        [],
    )
    assert (d.store.sweep, d.store.arms, d.store.act_stat) == (SINGLE, ["sick"], "min_channel_std")
    assert d.tab_titles()[d.tabs.active] == "Activations"
    assert d.evidence._layout.visible and "layer `output`" in d.evidence._text.object
    assert "step 220" in d.evidence._text.object
    (plot,) = d.evidence._plot
    curve, mark = plot.object
    assert mark.data == 220.0 and curve.data["step"].max() == 590 and curve.data["value"].min() == 0.0

    # values that do not check out are ignored, each with a note; the rest still applies
    d = Dashboard(runs)
    ev = d.select(
        {"run": [b"../elsewhere"], "tab": [b"nope"], "stat": [b"spatial_std"], "step": [b"-3"], "colour": [b"red"]}
    )
    assert ev.entry is None and ev.tab is None and ev.step is None and ev.stat is None
    assert ev.notes == [
        "unknown argument `colour` ignored (known: run, tab, stat, layer, step)",
        "run `../elsewhere` is outside the served folder; ignored",
        "unknown tab `nope` ignored",
        "step `-3` is not a step number; ignored",
        "statistic `spatial_std` ignored: no run of the served folder chosen to show it",
    ]
    assert all(n in d.evidence._text.object for n in ev.notes)
    ev = d.select({"run": [b"sick"], "stat": [b"no_such_stat"], "layer": [b"nowhere"]})
    assert ev.notes == [
        "statistic `no_such_stat` ignored: the run records no activation `no_such_stat`",
        "layer `nowhere` ignored: the run records no activation statistics of it",
    ]
    assert d.select({"other": [b"1"]}).empty and d.select({}).empty  # not a link of ours: nothing chosen

    # into the Spectra tab: the layer and step chosen there
    layer = read_spectra(runs / "real").above[0][0]
    d = Dashboard(runs)
    ev = d.select({"run": [b"real"], "tab": [b"spectra"], "layer": [layer.encode()], "step": [b"4"]})
    assert ev.notes == [] and d.tab_titles()[d.tabs.active] == "Spectra"
    view = d.view("Spectra")
    assert (view.layer, view.step) == (layer, 4)


NO_LIGHTNING = """
import json, sys
from fnodiag.dashboard.catalog import SINGLE
from fnodiag.dashboard.dashboard import Dashboard
d = Dashboard(sys.argv[1])
d.store.sweep = SINGLE
d.store.arms = ["sick", "real"]
for title in ("Spectra", "Findings"):
    d.tabs.active = d.tab_titles().index(title)
d.select({"run": [b"sick"], "tab": [b"activations"], "stat": [b"spatial_std"], "layer": [b"head"], "step": [b"220"]})
found = {k: len(v) for k, v in d.view("Findings").found.items()}
lightning = sorted(m for m in sys.modules if m.split(".")[0] in ("lightning", "pytorch_lightning"))
print(json.dumps({"found": found, "spectra": list(d.view("Spectra").records), "lightning": lightning}))
"""


@pytest.mark.slow
def test_the_new_tabs_and_links_never_import_lightning(runs):
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(NO_LIGHTNING), str(runs)], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["found"]["sick"] >= 1 and out["spectra"] == ["real", "sick"]
    assert out["lightning"] == []
