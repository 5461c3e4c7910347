"""The dashboard's store and views without a browser, over a real tiny runs folder."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest

from fnodiag.analysis.outcome import NEVER, STOPPED, run_outcome
from fnodiag.dashboard.catalog import SINGLE, checkpoint_path, inside, scan, summarize
from fnodiag.dashboard.dashboard import Dashboard
from fnodiag.dashboard.launch import Launcher
from fnodiag.dashboard.store import DashboardStore
from fnodiag.runs import RunDir, RunStore, states
from fnodiag.sweeps.summary import write_summary

TRAIN_FLAGS = [
    "--N",
    "32",
    "--object-size",
    "64",
    "--blocks",
    "2",
    "--width",
    "4",
    "--modes",
    "4",
    "--batch-size",
    "8",
    "--accelerator",
    "cpu",
    "--capture-every",
    "1",
]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_cfg, dataset_cache):
    """runs/sw/{adam,sgd}-s1 (a sweep, sgd with two seeds listed, one not trained) + runs/solo."""
    from fnodiag.training.run import train

    root = tmp_path_factory.mktemp("runs")
    cfg = tiny_cfg.override({"train.capture_every": 2, "train.epochs": 1})
    sweep = root / "sw"
    train(cfg, sweep, name="adam-s1", cache_dir=dataset_cache, progress=False)
    train(
        cfg.override(
            {"optim.name": "sgd", "optim.lr": 0.01, "schedule.name": "warmup_cosine", "schedule.warmup_epochs": 1}
        ),
        sweep,
        name="sgd-s1",
        cache_dir=dataset_cache,
        progress=False,
    )
    train(cfg, root, name="solo", cache_dir=dataset_cache, progress=False)
    spec = {
        "name": "sw",
        "definition": "def.toml",
        "seeds": [1, 2],
        "arms": {"adam": {"overrides": {}}, "sgd": {"overrides": {"optim.name": "sgd"}}},
        "runs": {
            "adam-s1": {"arm": "adam", "seed": 1, "path": "adam-s1"},
            "sgd-s1": {"arm": "sgd", "seed": 1, "path": "sgd-s1"},
            "sgd-s2": {"arm": "sgd", "seed": 2, "path": "sgd-s2"},
        },
    }
    (sweep / "sweep.json").write_text(json.dumps(spec))
    return root


@pytest.mark.slow
def test_store_lists_sweeps_arms_seeds_checkpoints(runs):
    store = DashboardStore(runs)
    assert store.param.sweep.objects == ["sw", SINGLE]
    assert store.sweep == "sw"
    assert store.param.arms.objects == ["adam", "sgd"] and store.arms == ["adam", "sgd"]
    assert store.param.seeds.objects == [1, 2] and store.seeds == [1]
    assert [e.label for e in store.selected()] == ["adam s1", "sgd s1"]
    assert store.param.checkpoint.objects[:2] == ["best", "last"]
    rows = {r["label"]: r for r in store.rows}
    assert rows["sgd s2"]["state"] == states.NOT_STARTED  # listed in sweep.json, not trained
    assert rows["sgd s2"]["outcome"] == STOPPED
    collapse = json.loads((runs / "sw" / "adam-s1" / "collapse.json").read_text())
    assert rows["adam s1"]["collapse"] == collapse["verdict"] and rows["adam s1"]["progress"] == 1.0
    last = json.loads((runs / "sw" / "adam-s1" / "metrics.json").read_text())["last"]["amp_ssim"]
    assert rows["adam s1"]["state"] == states.FINISHED  # the run's state; how it ended is the outcome
    assert rows["adam s1"]["outcome"] == run_outcome(states.FINISHED, collapse, last)
    # the base lr, not the 0.1 x lr the warm-up starts from
    assert rows["sgd s1"]["optimizer"].startswith("SGD") and rows["sgd s1"]["lr"] == pytest.approx(0.01)
    assert rows["adam s1"]["best_val_loss"] <= rows["adam s1"]["final_val_loss"]
    store.sweep = SINGLE
    assert store.param.arms.objects == ["solo"] and [e.label for e in store.selected()] == ["solo"]


def test_overview_row_and_summary_share_the_outcome_rule(runs, tmp_path):
    """collapse.json says ``collapsed`` but the best weights already scored like a constant output: the run
    never learned (there was nothing to collapse from), on the page and in summary.md alike."""
    import shutil

    folder = tmp_path / "plain"
    run = RunDir(shutil.copytree(runs / "solo", folder / "solo"))
    collapse = run.read_json("collapse.json")
    run.write_json(
        "collapse.json",
        {**collapse, "verdict": "collapsed", "onset_step": None, "best_weights": {"at_fingerprint": True}},
    )
    (entry,) = scan(folder).entries(SINGLE)
    row = summarize(entry)
    assert (row["state"], row["outcome"], row["collapse"]) == (states.FINISHED, NEVER, "collapsed")
    summary = write_summary(folder)
    assert summary["runs"][0]["outcome"] == NEVER
    (line,) = [x for x in (folder / "summary.md").read_text().splitlines() if x.startswith("| solo | finished")]
    assert f"| {NEVER} |" in line and "| learned then collapsed |" not in line


@pytest.mark.slow
def test_overview_rows_of_real_runs_import_no_lightning(runs, tmp_path):
    """Rows read every record of a run (audit included) in a fresh process: torch, never Lightning.
    (``tests/test_app_no_lightning.py``, slow, builds every tab over every kind of run.)"""
    code = (
        "import sys\nfrom fnodiag.dashboard.store import DashboardStore\n"
        f"s = DashboardStore({str(runs)!r})\nrows = [r for sweep in s.param.sweep.objects for r in "
        "(setattr(s, 'sweep', sweep), s.rows)[1]]\n"
        "print(len(rows), sum('config_warnings' in r for r in rows), 'lightning' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert out.stdout.strip().splitlines()[-1] == "4 3 False", out.stderr[-2000:]


def test_paths_outside_the_runs_folder_are_refused(runs, tmp_path):
    store = DashboardStore(runs)
    with pytest.raises(ValueError, match="outside the runs folder"):
        store.resolve(runs / ".." / "elsewhere")
    with pytest.raises(ValueError, match="outside"):
        inside(runs, "/etc/passwd")
    (runs / "escape").symlink_to(tmp_path)
    with pytest.raises(ValueError, match="outside"):
        store.resolve("escape/x")
    (runs / "escape").unlink()
    evil = runs / "evil"
    evil.mkdir()
    (evil / "sweep.json").write_text(
        json.dumps({"name": "evil", "runs": {"x-s1": {"arm": "x", "seed": 1, "path": "../../.."}}})
    )
    try:
        cat = scan(runs)
        assert cat.sweeps["evil"] == [] and any("outside" in p for p in cat.problems)
    finally:
        (evil / "sweep.json").unlink()
        evil.rmdir()
    entry = store.selected()[0]
    with pytest.raises(ValueError, match="no checkpoint"):
        checkpoint_path(runs, entry, "../../model")


@pytest.mark.slow
def test_views_build_with_figures_and_collapse_state(runs):
    dash = Dashboard(runs)
    overview, acts, grads = dash.views[:3]
    assert len(dash.store.selected()) == 2
    assert overview._feeds and not acts._feeds and not grads._feeds  # only the open tab draws
    dash.tabs.active = 2
    dash.tabs.active = 1
    assert len(acts._feeds) == 2 and len(grads._feeds) == 2 + 4 * 2
    feed = acts._feeds[0]
    assert feed.layers[0] == "lifter" and "output" in feed.layers
    rect = feed.heatmap.source("", "Rectangles")
    assert rect is not None and len(rect.data["value"]) > len(feed.layers)
    assert len(overview._table.value) == 3
    assert len(overview._feeds) == 3 * 2  # train loss, val loss, val amp SSIM per run
    ssim = overview._feeds[-1].figure
    label = dash.store.selected()[0].label
    assert len(ssim.source(label, "Scatter").data["value"]) >= 1  # per-epoch amp SSIM of the finished run
    dash.store.act_stat = "std"
    assert acts._feeds[0].stat == "std"
    from bokeh.document import Document

    dash.layout().get_root(Document())  # the whole page renders to Bokeh models


def test_tick_sends_only_new_points(runs):
    """Only the open tab streams; a hidden view catches up in one batch when its tab is opened."""
    dash = Dashboard(runs)
    acts = dash.views[1]
    dash.tabs.active = 1  # Activations
    feed = acts._feeds[0]
    assert dash.tick() == 0  # nothing new written
    run = dash.store.selected()[0].run
    last = max(feed.tail.reader.last_step(), 0)
    rect = feed.heatmap.source("", "Rectangles")
    out = feed.lines.source("output", "Curve")
    n_rect, n_out = len(rect.data["value"]), len(out.data["value"])
    with RunStore(run.store_path) as store:  # a second writer appends two steps
        for k in (1, 2):
            store.log_layer_stats(last + k, 9, "activation", {(layer, "spatial_std"): 0.5 * k for layer in feed.layers})
            store.log_scalars(
                last + k, 9, {"train/loss": 0.1, "grad/norm_preclip": 1.0, "grad/norm_postclip": 1.0, "lr": 1e-3}
            )
    sent = dash.tick()
    assert len(rect.data["value"]) == n_rect + 2 * len(feed.layers)
    assert len(out.data["value"]) == n_out + 2 and out.data["value"][-1] == 1.0
    assert rect.data["x1"][-1] == last + 2.5
    assert sent > 0 and dash.tick() == 0  # nothing new again
    loss = dash.views[0]._feeds[0].figure.source(f"{dash.store.selected()[0].label} train", "Curve")
    n_loss = len(loss.data["step"])
    assert loss.data["step"][-1] < last + 1  # the hidden Overview has not streamed yet
    dash.tabs.active = 0
    assert dash.tick() == 2 and len(loss.data["step"]) == n_loss + 2 and loss.data["step"][-1] == last + 2
    assert len(rect.data["value"]) == n_rect + 2 * len(feed.layers)  # the hidden Activations stay put


@pytest.mark.slow
def test_a_long_live_session_rebins_its_figures(runs, monkeypatch):
    """Streamed points pile up; past twice what a view opens with, the view re-reads its runs binned."""
    import fnodiag.dashboard.views as views

    monkeypatch.setattr(views, "HEATMAP_MAX_STEPS", 4)
    monkeypatch.setattr(views, "LINES_MAX_STEPS", 6)
    dash = Dashboard(runs)
    dash.tabs.active = 1
    acts = dash.views[1]
    feed = acts._feeds[0]
    assert feed.columns <= 4 and feed.points <= 6
    stride, last = feed.stride, feed.tail.reader.last_step()
    with RunStore(feed.tail.run.store_path) as store:
        for k in range(1, 2 * 6 + 1):
            store.log_layer_stats(last + k, 9, "activation", {(layer, "spatial_std"): 0.5 for layer in feed.layers})
    dash.tick()
    rebuilt = acts._feeds[0]
    assert rebuilt is not feed and rebuilt.stride > stride  # coarser bins over the longer run
    assert rebuilt.columns <= 4 and rebuilt.points <= 6
    assert rebuilt.tail.reader.last_step() == last + 12


@pytest.mark.slow
def test_checkpoint_capture_in_worker_thread(runs, tmp_path):
    dash = Dashboard(runs)
    view = dash.checkpoint
    assert view.image.object is not None and view.image.object.endswith("recon.png")
    dash.store.checkpoint = "last"
    asyncio.run(view._on_click())
    assert "spatial_std" in view.result.columns and np.isfinite(view.result["spatial_std"]).all()
    assert view.result["layer"].iloc[0] == "lifter" and len(view.table.value) == len(view.result)
    assert len(view.bars.object) == len(view.result) and "Capture failed" not in view.status.object
    np.testing.assert_allclose(view.bars.object.dimension_values(1), view.result["spatial_std"])
    # the dashboard and its capture path import torch only, never Lightning: a fresh process, from
    # another folder, with a capture actually run
    code = (
        "import sys, asyncio, fnodiag.dashboard.dashboard\n"
        "from fnodiag.dashboard.checkpoint import capture_checkpoint\nfrom fnodiag.dashboard.catalog import scan\n"
        f"capture_checkpoint({str(runs)!r}, scan({str(runs)!r}).entries('sw')[0], 'last', samples=1)\n"
        "print('torch' in sys.modules, 'lightning' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert out.stdout.strip().splitlines()[-1] == "True False", out.stderr[-2000:]


@pytest.mark.slow
def test_launch_and_stop_records_interrupted(tmp_path):
    root = tmp_path / "runs"
    launcher = Launcher(root)
    launched = launcher.start(TRAIN_FLAGS + ["--epochs", "200"], name="stopme")
    try:
        deadline = time.time() + 90
        while time.time() < deadline:
            status = launched.run.read_status() or {}
            if status.get("state") == "running" and status.get("step", 0) > 0:
                break
            assert launched.process.poll() is None, launched.log_tail(20)
            time.sleep(0.2)
        launcher.stop("stopme")
        launched.process.wait(timeout=60)
    finally:
        if launched.process.poll() is None:
            launched.process.kill()
            launched.process.wait()
    assert launched.run.read_status()["state"] == "interrupted"
    store = DashboardStore(root)
    assert store.param.arms.objects == ["stopme"] and store.rows[0]["state"] == "interrupted"
    with pytest.raises(ValueError, match="--out"):
        launcher.start(["--out", "/tmp"])
    assert np.isfinite(store.rows[0]["progress"])


TINY_ARMS = {"control": {"model.arch": "hybrid", "optim.name": "adam"}, "sgd": {"optim.name": "sgd"}}
TINY_SHARED = {"train.epochs": 1, "train.capture_every": 1}


def _wait_running(launched, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        status = launched.run.read_status() or {} if launched.run.status_path.is_file() else {}
        if status.get("state") == "running" and status.get("step", 0) > 0:
            return status
        assert launched.process.poll() is None, launched.log_tail(20)
        time.sleep(0.2)
    raise AssertionError(f"{launched.name} did not start running:\n{launched.log_tail(20)}")


@pytest.mark.slow
def test_launch_an_arm_of_a_sweep_definition_and_stop_it(tmp_path, tiny_sweep):
    """The Launch view's sweep form: a definition path, an arm and a seed -> <runs>/tiny/control-s7, stoppable."""
    root = tmp_path / "runs"
    root.mkdir()
    definition = root / "tiny.toml"  # the dashboard opens definitions inside the runs folder only (issue 26 case 8)
    tiny_sweep(TINY_ARMS, TINY_SHARED).rename(definition)
    dash = Dashboard(root)
    view = dash.launch
    assert "quick" in view.param.definition.objects and view.arm is not None  # shipped definitions offered
    view.definition_path = str(definition)
    assert view.param.arm.objects == ["control", "sgd"] and view.param.sweep_seed.objects == [7]
    view.arm, view.sweep_seed, view.sweep_epochs = "control", 7, 200
    assert view.sweep_args() == ["--epochs", "200"]
    launched = view.start_arm()
    assert launched is not None, view.feedback.object
    assert launched.name == "tiny/control-s7" and launched.run.path == (root / "tiny" / "control-s7").resolve()
    assert launched.command[3:] == (
        "sweep",
        str(definition.resolve()),
        "--arms",
        "control",
        "--seeds",
        "7",
        "--out",
        str((root / "tiny").resolve()),
        "--epochs",
        "200",
    )
    try:
        status = _wait_running(launched)
        assert view.start_arm() is None and "already running" in view.feedback.object
        view.refresh()
        assert "tiny/control-s7" in view.table[0][0].object and "running" in view.table[0][0].object
        stop = view.table[0][1]
        view.refresh()  # the periodic redraw keeps the row and its button: a click in flight is not lost
        assert view.table[0][1] is stop and not stop.disabled
        stop.clicks += 1  # what a browser click on Stop does on the server
        launched.process.wait(timeout=60)
    finally:
        if launched.process.poll() is None:
            launched.process.kill()
            launched.process.wait()
    assert launched.run.read_status()["state"] == "interrupted", launched.log_tail(20)
    assert launched.state() == "interrupted" and status["step"] > 0
    dash.store.refresh()
    assert dash.store.sweep == "tiny" and dash.store.param.arms.objects == ["control"]
    assert dash.store.rows[0]["state"] == "interrupted" and dash.store.rows[0]["seed"] == 7
    # bad requests are refused with a message, nothing started
    with pytest.raises(ValueError, match="no arm"):
        view.launcher.start_sweep(definition, "nope", 7)
    with pytest.raises(ValueError, match="--out"):
        view.launcher.start_sweep(definition, "control", 7, ["--out=/tmp"])
    with pytest.raises(ValueError, match="neither a file nor a shipped"):
        view.launcher.start_sweep(root / "missing.toml", "control", 7)


@pytest.mark.slow
def test_launch_an_arm_of_a_sweep_definition_to_the_end(tmp_path, tiny_sweep):
    root = tmp_path / "runs"
    root.mkdir()
    definition = root / "tiny.toml"  # inside the runs folder (issue 26 case 8)
    tiny_sweep(TINY_ARMS, TINY_SHARED).rename(definition)
    launcher = Launcher(root)
    launched = launcher.start_sweep(str(definition), "control", 7, ["--epochs", "1"])
    try:
        assert launched.process.wait(timeout=180) == 0, launched.log_tail(30)
    finally:
        if launched.process.poll() is None:
            launched.process.kill()
            launched.process.wait()
    run = root / "tiny" / "control-s7"
    assert launched.run.read_status()["state"] == "finished" and (run / "capture" / "last.json").is_file()
    runs = json.loads((root / "tiny" / "sweep.json").read_text())["runs"]
    assert list(runs) == ["control-s7"]
    assert {k: runs["control-s7"][k] for k in ("arm", "seed", "path", "state")} == {
        "arm": "control",
        "seed": 7,
        "path": "control-s7",
        "state": "finished",
    }
    store = DashboardStore(root)
    assert store.sweep == "tiny" and [e.label for e in store.selected()] == ["control s7"]
    collapse = json.loads((run / "collapse.json").read_text())
    assert store.rows[0]["collapse"] == collapse["verdict"] and store.rows[0]["progress"] == 1.0
    assert store.rows[0]["state"] == states.FINISHED
    last = json.loads((run / "metrics.json").read_text())["last"]["amp_ssim"]
    assert store.rows[0]["outcome"] == run_outcome(states.FINISHED, collapse, last)


def test_arms_table_marks_a_run_whose_settings_differ(runs, tmp_path):
    """The settings cell: ✓ for runs that trained as asked; ⚠ n with the warnings on hover otherwise."""
    import shutil

    root = shutil.copytree(runs, tmp_path / "runs")
    path = root / "sw" / "sgd-s1" / "effective_config.json"
    eff = json.loads(path.read_text())
    eff["optimizer"]["class"] = "Adam"
    path.write_text(json.dumps(eff))
    overview = Dashboard(root).views[0]
    cells = dict(zip(overview._table.value["arm"] + overview._table.value["seed"], overview._table.value["settings"]))
    assert cells["adam1"].startswith('<span title="every recorded setting is as asked">✓')
    assert (
        "⚠ 1</span>" in cells["sgd1"]
        and "sgd-s1: optimizer.class asked &#x27;SGD&#x27;, got &#x27;Adam&#x27;" in cells["sgd1"]
    )
    assert overview._table.formatters["settings"] == {"type": "html"}


def test_launch_form_offers_what_the_registries_hold(tmp_path, monkeypatch):
    from fnodiag.config import PRESETS
    from fnodiag.dashboard.launch import LaunchView
    from fnodiag.models import MODELS
    from fnodiag.training.optimizers import OPTIMIZERS
    from fnodiag.training.schedulers import SCHEDULERS

    monkeypatch.setitem(OPTIMIZERS, "dummy_opt", OPTIMIZERS["sgd"])
    monkeypatch.setitem(SCHEDULERS, "dummy_sched", SCHEDULERS["constant"])
    monkeypatch.setitem(MODELS, "dummy_arch", MODELS["hybrid"])
    view = LaunchView(store=DashboardStore(tmp_path))
    assert view.param.optimizer.objects == ["adam", "adamw", "sgd", "radam", "nadam", "rmsprop", "dummy_opt"]
    assert view.param.scheduler.objects[-1] == "dummy_sched" and view.param.arch.objects[-1] == "dummy_arch"
    assert view.param.preset.objects == list(PRESETS)
    view.optimizer, view.scheduler, view.arch = "dummy_opt", "dummy_sched", "dummy_arch"
    args = view.form_args()
    assert args[args.index("--optimizer") + 1] == "dummy_opt" and args[args.index("--arch") + 1] == "dummy_arch"


def test_checkpoint_capture_reads_the_runs_own_dataset_and_never_simulates(runs, dataset_cache, tmp_path):
    from fnodiag.dashboard.checkpoint import capture_checkpoint

    entry = scan(runs).entries("sw")[0]
    assert entry.run.dataset_cache() == dataset_cache.resolve()  # recorded by training (--cache-dir / cache_dir=)
    frame = capture_checkpoint(runs, entry, "last", samples=2)
    assert len(frame) > 3 and np.isfinite(frame["spatial_std"]).all()
    assert not (runs / "sw" / "datasets").exists() and not (runs / "datasets").exists()
    effective = entry.run.read_json("effective_config.json")
    empty = tmp_path / "nowhere"
    effective["data"]["cache_dir"] = str(empty)
    entry.run.write_json("effective_config.json", effective)
    try:
        with pytest.raises(FileNotFoundError, match="missing and the dashboard does not simulate"):
            capture_checkpoint(runs, entry, "last", samples=2)
        assert not empty.exists()  # nothing written by the server
    finally:
        effective["data"]["cache_dir"] = str(dataset_cache.resolve())
        entry.run.write_json("effective_config.json", effective)


def test_live_heatmap_bins_new_steps_as_the_static_heatmap_does():
    from fnodiag import plots
    from fnodiag.dashboard.live import LiveLayers

    class Sink:
        frames = []

        def stream_rects(self, frame, label=""):
            self.frames.append(frame)
            return len(frame)

    layers = ["a", "b"]
    steps = np.arange(11) * 2
    values = np.vstack([np.arange(11.0), np.where(np.arange(11) % 4 == 0, np.nan, 1.0)])
    live = LiveLayers(None, "act", "std", layers, [], 3, heatmap=Sink(), lines=None)
    for lo, hi in ((0, 2), (2, 7), (7, 11)):  # new rows arrive in uneven chunks
        live._heat(steps[lo:hi], values[:, lo:hi])
    s, v, stride = plots.downsample_steps(steps, values, 4)
    got = pd.concat(Sink.frames)
    assert stride == 3 and live.columns == 3 and len(live._pending_steps[0]) == 2  # 3 full bins, 2 steps pending
    for i, name in enumerate(layers):
        rows = got[got["layer"] == name]
        np.testing.assert_allclose(rows["value"], v[i, :3])
        assert rows["step"].tolist() == s[:3].tolist()


def test_live_figure_streams_only_new_rows_into_the_rendered_plots(monkeypatch):
    from bokeh.models import ColumnDataSource

    from fnodiag import plots
    from fnodiag.dashboard.live import LiveFigure

    streamed = []
    original = ColumnDataSource.stream
    monkeypatch.setattr(
        ColumnDataSource,
        "stream",
        lambda self, data, rollover=None, **kw: (
            streamed.append({k: len(v) for k, v in data.items()}),
            original(self, data, rollover, **kw),
        )[1],
    )
    layers, steps = ["a", "b", "c"], np.arange(6)
    values = np.arange(18.0).reshape(3, 6) + 1
    heat = LiveFigure(plots.layer_heatmap(layers, steps, values, stat="std"))
    rect = heat.source("", "Rectangles")
    before = len(rect.data["color"])
    new = plots.heatmap_frame(layers, [6], np.full((3, 1), 100.0), start=5.5)
    assert heat.stream_rects(new) == 3
    assert streamed == [{k: 3 for k in rect.data}] and len(rect.data["color"]) == before + 3 == 21
    assert list(rect.data["color"][-3:]) == [100.0] * 3 and max(m.high for m in heat.mappers) == 100.0
    lines = LiveFigure(plots.layer_lines(layers, steps, values, stat="std"))
    streamed.clear()
    assert lines.stream_xy("a", [6, 7], [5.0, np.nan], kinds=("Curve",)) == 1  # non-finite points are not sent
    assert streamed == [{k: 1 for k in lines.source("a").data}]
