"""The Reconstructions tab, the progress column / lines and the onset marks, without a browser, over real runs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from bokeh.models import Span

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the `app` package of the checkout

from fnodiag import plots  # noqa: E402
from fnodiag.dashboard.dashboard import Dashboard  # noqa: E402
from fnodiag.dashboard.reconstructions import ReconstructionsView  # noqa: E402
from fnodiag.runs import RunStore, StoreReader  # noqa: E402


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_cfg, dataset_cache):
    from fnodiag.training.run import train

    root = tmp_path_factory.mktemp("runs")
    train(
        tiny_cfg.override({"train.epochs": 1, "train.frame_every": 2, "train.capture_every": 0}),
        root,
        name="solo",
        cache_dir=dataset_cache,
        progress=False,
    )
    return root


def _spans(figure) -> list[float]:
    """Locations of the figure's vertical lines (the invisible placeholder at NaN left out)."""
    return [
        float(s.location)
        for s in figure.select(type=Span)
        if s.dimension == "height" and s.location is not None and np.isfinite(s.location)
    ]


def _view(dash) -> ReconstructionsView:
    return next(v for v in dash.views if isinstance(v, ReconstructionsView))


def test_reconstructions_follow_new_frames_scrub_back_and_flag_a_constant_output(runs):
    dash = Dashboard(runs)
    view = _view(dash)
    dash.tabs.active = dash.views.index(view)
    feed = view._feeds[0]
    run = dash.store.selected()[0].run
    steps = StoreReader(run.store_path).frame_steps().tolist()
    assert steps == list(range(0, 10, 2)) and feed.steps == steps
    assert feed.slider.value == len(steps) - 1 and feed.slider.end == len(steps) - 1  # at the latest frame
    assert f"Frame {len(steps)} of {len(steps)} (latest): **step 8**" in feed.info.object
    assert "constant output" not in feed.info.object
    titles = [f.figure.title.text for f in feed.big.values()]
    assert titles == ["predicted amp @ step 8", "truth amp", "predicted phase @ step 8", "truth phase"]
    truth = StoreReader(run.store_path).frame_truth()
    np.testing.assert_array_equal(feed.big["truth amp"].source.data["image"][0], truth[0][0][::-1])
    strip = [f.figure.title.text for f in feed.small if f.figure.visible]
    assert strip == [f"step {s}" for s in steps] + ["truth amp"]  # every frame (<= 8), then the truth
    with RunStore(run.store_path) as store:  # training goes on: a collapsed (constant) output arrives
        flat = np.full((2, 32, 32), 0.3, np.float32)
        store.log_frame(10, 1, {"amp": flat, "phase": flat * 0})
    assert dash.tick() >= 1
    assert feed.slider.value == feed.slider.end == len(steps)  # followed the new frame
    assert "step 10" in feed.info.object and "constant output" in feed.info.object
    amp, truth = feed.big["pred amp"], feed.big["truth amp"]
    assert (amp.mapper.low, amp.mapper.high) == (truth.mapper.low, truth.mapper.high)  # one colour range
    assert amp.mapper.low <= 0.3 + 1e-6 < amp.mapper.high and np.ptp(amp.source.data["image"][0]) == 0
    assert "CONSTANT OUTPUT" in amp.figure.title.text
    feed.slider.value = 1  # scrub back
    assert "Frame 2 of 6 (earlier): **step 2**" in feed.info.object
    with RunStore(run.store_path) as store:
        store.log_frame(12, 1, {"amp": flat, "phase": flat})
    dash.tick()
    assert feed.slider.value == 1 and feed.slider.end == 6 and "step 2" in feed.info.object  # stays where put
    from bokeh.document import Document

    dash.layout().get_root(Document())  # the page renders to Bokeh models


def test_frames_off_says_so(tmp_path, tiny_cfg, dataset_cache):
    from fnodiag.training.run import train

    train(
        tiny_cfg.override({"train.epochs": 1, "train.frame_every": 0}),
        tmp_path,
        name="off",
        cache_dir=dataset_cache,
        progress=False,
    )
    dash = Dashboard(tmp_path)
    dash.tabs.active = dash.views.index(_view(dash))
    feed = _view(dash)._feeds[0]
    assert feed.steps == [] and "--frame-every 0" in feed.info.object


def test_progress_of_a_running_and_a_dead_run_and_onset_lines(runs, tmp_path):
    import shutil

    root = tmp_path / "runs"
    shutil.copytree(runs, root, ignore=shutil.ignore_patterns("datasets"))
    run_path = root / "solo"
    status = json.loads((run_path / "status.json").read_text())
    from fnodiag.runs import RunDir

    RunDir(run_path).write_status("running", step=5, epoch=0)  # as the training process would (this pid: alive)
    collapse = json.loads((run_path / "collapse.json").read_text()) if (run_path / "collapse.json").is_file() else {}
    (run_path / "collapse.json").write_text(json.dumps({**collapse, "onset_step": 6}))
    dash = Dashboard(root)
    row = dash.store.rows[0]
    assert row["state"] == "running" and row["progress_total_steps"] == 10 and row["progress"] == 1.0
    assert row["progress_step"] == 10  # the store holds all 10 steps of the finished copy
    assert "step 10 / 10" in row["progress_text"] and "heartbeat" in row["progress_text"]
    overview = dash.views[0]
    assert "**solo**: running · step 10 / 10" in overview._progress.object
    assert "time_left" in overview._table.value.columns
    loss = overview._feeds[0].figure.figure
    assert _spans(loss) == [6.0]  # the onset, marked
    grads = dash.views[2]
    dash.tabs.active = 2
    assert grads._feeds  # capture off: no layer feeds, but the scalar plots are drawn, each with the onset
    figures = {id(g.figure): g.figure.figure for g in grads._feeds}.values()
    assert [x for f in figures for x in _spans(f)] == [6.0, 6.0, 6.0]
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    st = json.loads((run_path / "status.json").read_text())
    (run_path / "status.json").write_text(json.dumps({**st, "pid": int(dead.stdout)}))
    rows = dash.store.refresh_rows()
    assert rows[0]["state"] == "stopped" and rows[0]["time_left"] == "stopped"
    assert "**solo**: stopped" in overview._progress.object and "resume with" in overview._progress.object
    assert status["state"] == "finished"


def test_onset_lines_builder():
    assert len(plots.onset_lines({"a": None})) == 1  # only the invisible placeholder
    o = plots.onset_lines({"a": 5, "b": None, "c": 7})
    assert [float(v.data) for v in o][1:] == [5.0, 7.0]
