"""The runs folder read incrementally (fnodiag.dashboard.folder / index): new folders and changed ``status.json``
are picked up by a rescan, unchanged folders and rows are not read again, and a dashboard's periodic tick shows a
new run without a click (a new run of the chosen sweep joins the chosen arms).

Runs are written by ``benchmarks/make_runs.py`` (real run folders and stores, no training). Modification times are
set into the past (distinct per change) so that no folder is "too recent to trust" (``folder.RACY_S``), which would
make the walk list it again on purpose.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import pytest

from fnodiag.dashboard import dashboard as dashboard_module
from fnodiag.dashboard import views as views_module
from fnodiag.dashboard.dashboard import ROWS_EVERY, Dashboard
from fnodiag.dashboard.folder import FolderWalk
from fnodiag.dashboard.index import RunsIndex
from fnodiag.runs import states

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from make_runs import Templates, config_for, make_folder, make_sweep, no_fsync, write_run  # noqa: E402


def age(root: Path, seconds_ago: float, *also: Path) -> None:
    """Set the mtime of every folder and file under ``root`` (and ``root``), and of the paths ``also``, to
    ``seconds_ago`` seconds ago."""
    t = time.time() - seconds_ago
    for folder, _, files in os.walk(root):
        for name in files:
            os.utime(os.path.join(folder, name), (t, t))
        os.utime(folder, (t, t))
    for path in also:
        os.utime(path, (t, t))


def new_run(path: Path, k: int) -> None:
    with tempfile.TemporaryDirectory() as tmp, no_fsync():
        write_run(path, config_for(k), Templates(Path(tmp), layers=2, steps=20), k=k)


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "runs"
    make_folder(root, 3, layers=2, steps=20)  # k = 0, 1, 2: finished runs
    age(root, 600)
    return root


def test_walk_lists_again_only_folders_that_changed(folder):
    walk = FolderWalk(folder)
    runs, sweeps = walk.walk()
    assert [p.name for p in runs] == ["run-0000", "run-0001", "run-0002"] and sweeps == []
    first = walk.listed
    assert first >= 4  # the root and its three runs (and their sub-folders) listed once
    assert walk.walk()[0] == runs and walk.listed == 0  # nothing changed: nothing listed again
    new_run(folder / "run-0003", 3)
    age(folder / "run-0003", 300, folder)  # a later time than before: the root's change shows
    runs, _ = walk.walk()
    assert [p.name for p in runs][-1] == "run-0003"
    assert 0 < walk.listed < first  # the root and the new run's folders; the unchanged runs cost a stat
    shutil.rmtree(folder / "run-0001")
    age(folder, 200)  # every folder's time moved: all listed again, the removed one gone
    assert [p.name for p in walk.walk()[0]] == ["run-0000", "run-0002", "run-0003"]


def test_index_reads_a_row_again_only_when_its_run_changed(folder):
    index = RunsIndex(folder)
    entries = index.catalog().entries("(single runs)")
    rows, pending = index.rows(entries)
    assert pending == 0 and [r["state"] for r in rows] == [states.FINISHED] * 3
    assert index.reads == 3
    cat = index.catalog()
    assert index.catalog() is cat  # nothing changed: the same catalog
    index.rows(cat.entries("(single runs)"))
    assert index.reads == 3  # unchanged runs are not read again

    # a changed status.json is picked up (the row of that run alone is read again)
    run = entries[1].run
    before = os.stat(run.path).st_mtime_ns
    run.write_status(states.FAILED, step=5, epoch=0, message="RuntimeError: made up")
    age(run.status_path, 300)
    os.utime(run.path, ns=(before, before))  # the folder looks unchanged: status.json's own time shows it
    rows, _ = index.rows(index.catalog().entries("(single runs)"))
    assert index.reads == 4
    assert [r["state"] for r in rows] == [states.FINISHED, states.FAILED, states.FINISHED]

    # a new run folder appears in the next scan; only its row is read
    new_run(folder / "run-0003", 3)
    age(folder / "run-0003", 200, folder)
    cat = index.catalog()
    entries = cat.entries("(single runs)")
    assert [e.arm for e in entries] == ["run-0000", "run-0001", "run-0002", "run-0003"]
    rows, _ = index.rows(entries)
    assert index.reads == 5 and rows[-1]["label"] == "run-0003" and rows[-1]["state"] == states.FINISHED


def test_rows_out_of_time_show_their_state_and_are_read_later(folder):
    index = RunsIndex(folder)
    entries = index.catalog().entries("(single runs)")
    rows, pending = index.rows(entries, budget_s=0.0)  # no time to read any record but status.json
    assert pending == 3 and all(r["pending"] and r["state"] == states.FINISHED for r in rows)
    assert index.reads == 0
    rows, pending = index.rows(entries)
    assert pending == 0 and index.reads == 3 and not any(r.get("pending") for r in rows)


def test_a_new_run_of_the_chosen_sweep_appears_by_itself_and_joins_the_chosen_arms(tmp_path, monkeypatch):
    """No click: the dashboard's periodic tick rescans the folder; the new run's arm joins the chosen ones."""
    monkeypatch.setattr(dashboard_module, "SCAN_EVERY_S", 0.0)  # every rescan scans (ticks here are quick)
    root = tmp_path / "runs"
    with tempfile.TemporaryDirectory() as tpl, no_fsync():
        made = make_sweep(root / "s", "s", arms=3, seeds=1, templates=Templates(Path(tpl), layers=2, steps=20))
    shutil.rmtree(made[2].path)  # arm02 is listed in sweep.json but has not started
    dash = Dashboard(root)
    store, overview = dash.store, dash.views[0]
    assert store.sweep == "s" and [e.arm for e in store.selected()] == ["arm00", "arm01"]
    store.arms = ["arm00"]
    assert [r["state"] for r in store.rows] == [states.FINISHED, states.FINISHED, states.NOT_STARTED]
    built = overview.built

    with tempfile.TemporaryDirectory() as tpl, no_fsync():
        write_run(made[2].path, config_for(2), Templates(Path(tpl), layers=2, steps=20), state=states.FINISHED)
    for _ in range(ROWS_EVERY):
        dash.tick()
    assert store.arms == ["arm00", "arm02"]  # the new run joined the chosen arm; arm01 stays unchosen
    assert [e.arm for e in store.selected()] == ["arm00", "arm02"]
    assert store.rows[2]["state"] == states.FINISHED
    assert overview._table.selection == [0, 2]  # ticked in the runs table
    assert "**3 runs**" in overview._count.object
    assert overview.built == built  # listed first: its curves are drawn by the next tick
    dash.tick()
    assert overview.built == built + 1  # the open tab drew it
    for _ in range(2 * ROWS_EVERY):
        dash.tick()
    assert overview.built == built + 1  # nothing changed: nothing redrawn


def test_a_run_chosen_past_the_runs_drawn_redraws_nothing(tmp_path, monkeypatch):
    """The Overview draws the curves of the first MAX_CURVE_RUNS chosen runs: choosing one more past them changes
    the table's ticks and the count line, and draws no figure again; choosing one that is drawn does."""
    monkeypatch.setattr(views_module, "MAX_CURVE_RUNS", 2)
    root = tmp_path / "runs"
    with tempfile.TemporaryDirectory() as tpl, no_fsync():
        make_sweep(root / "s", "s", arms=4, seeds=1, templates=Templates(Path(tpl), layers=2, steps=20))
    dash = Dashboard(root)
    store, overview = dash.store, dash.views[0]
    store.arms = ["arm00", "arm01", "arm02"]
    built = overview.built
    store.arms = ["arm00", "arm01", "arm02", "arm03"]  # past the two drawn: the note says 4 chosen
    assert overview._table.selection == [0, 1, 2, 3] and "**4 chosen**" in overview._count.object
    assert overview.built == built + 1  # the "first 2 of N" note changed with N
    store.arms = ["arm00", "arm01", "arm02"]
    built = overview.built
    store.arms = ["arm00", "arm01", "arm03"]  # another run past the drawn ones
    assert overview._table.selection == [0, 1, 3] and overview.built == built
    store.param.trigger("arms")  # the same choice again
    assert overview.built == built
    store.arms = ["arm01", "arm02", "arm03"]  # arm00 is no longer drawn
    assert overview.built == built + 1
