"""Live reconstructions and progress in the served dashboard (Chromium, Playwright), while a run trains.

Reuses the Chromium / server helpers of ``test_browser``; its own ``panel serve app`` subprocess serves
a runs folder where a ``fnodiag train`` subprocess trains a tiny run with frames every 2 steps.
Screenshots: ``test-artifacts/reconstructions-live.png``, ``reconstructions-scrubbed.png``,
``overview-progress.png``. Behavioural checks only (what the page shows), no timings.
"""

from __future__ import annotations

import os
import re
import subprocess

import pytest
from conftest import CHROMIUM
from test_browser import TITLES_JS, open_page, serve_app, train_cmd, wait_for

pytest.importorskip("playwright.sync_api")
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"no Chromium at {CHROMIUM}"),
]

STEP_TITLE = re.compile(r"^predicted amp @ step (\d+)")


@pytest.fixture(scope="module")
def frames_server(tmp_path_factory):
    from fnodiag.runs import RunDir

    root = tmp_path_factory.mktemp("browser-frames") / "runs"
    proc = subprocess.Popen(
        train_cmd(root, "live", 400) + ["--frame-every", "2", "--capture-every", "5"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    run = RunDir(root / "live")
    try:
        wait_for(
            lambda: run.store_path.is_file() and (run.read_status() or {}).get("state") == "running",
            180,
            "the live run to start",
        )
        with serve_app(root) as url:
            yield url, proc
    finally:
        if proc.poll() is None:
            proc.terminate()
        proc.wait(timeout=60)


@pytest.fixture(scope="module")
def patient(browser):
    """This module's browser context, patient with a page on a loaded machine (a run trains beside it)."""
    browser.set_default_navigation_timeout(180_000)
    browser.set_default_timeout(60_000)
    return browser


def _shown_steps(page) -> list[int]:
    return [int(m.group(1)) for t in page.evaluate(TITLES_JS) for m in [STEP_TITLE.match(t)] if m]


def _info(page) -> str:
    return page.locator("p", has_text=re.compile(r"^Frame \d+ of \d+")).last.inner_text()


def test_reconstructions_update_while_training_and_the_slider_scrubs(patient, frames_server, artifacts):
    url, proc = frames_server
    page, errors = open_page(patient, url)
    try:
        page.locator(".bk-tab:has-text('Reconstructions')").first.click()
        wait_for(lambda: _shown_steps(page), 60, "a reconstruction frame in the page")
        first = max(_shown_steps(page))
        assert {"truth amp", "truth phase"} <= set(page.evaluate(TITLES_JS))
        # the run trains on: a later frame replaces the shown one without any click
        wait_for(lambda: max(_shown_steps(page)) > first, 90, "a newer frame drawn live")
        assert proc.poll() is None, "the run ended before the page was checked"
        latest = re.match(r"Frame (\d+) of (\d+) \(latest\): step (\d+)", _info(page))
        assert latest and latest.group(1) == latest.group(2)
        page.wait_for_timeout(500)
        page.screenshot(path=str(artifacts / "reconstructions-live.png"), full_page=True)
        # scrub back to the first frame: drag the slider's handle to the left end of its track
        handle, track = page.locator(".noUi-handle").first, page.locator(".noUi-base").first
        box, hb = track.bounding_box(), handle.bounding_box()
        page.mouse.move(hb["x"] + hb["width"] / 2, hb["y"] + hb["height"] / 2)
        page.mouse.down()
        page.mouse.move(box["x"] - 20, box["y"] + box["height"] / 2, steps=8)
        page.mouse.up()
        wait_for(lambda: "step 0," in _info(page) and 0 in _shown_steps(page), 30, "frame 0 after scrubbing")
        assert _info(page).startswith("Frame 1 of") and "(earlier)" in _info(page)
        # new frames keep arriving; a scrubbed-back view stays where it was put
        n = int(re.match(r"Frame \d+ of (\d+)", _info(page)).group(1))
        wait_for(lambda: int(re.match(r"Frame \d+ of (\d+)", _info(page)).group(1)) > n, 60, "more frames counted")
        assert _info(page).startswith("Frame 1 of") and 0 in _shown_steps(page)
        page.screenshot(path=str(artifacts / "reconstructions-scrubbed.png"), full_page=True)
        assert not errors, errors
    finally:
        page.close()


def test_progress_shows_step_of_total_and_time_left(patient, frames_server, artifacts):
    url, proc = frames_server
    page, errors = open_page(patient, url)
    try:
        line = page.locator("p", has_text=re.compile(r"live.*running · step \d+ / 4000"))
        line.first.wait_for(timeout=60_000)
        wait_for(
            lambda: re.search(r"~(\d+h\d+m|\d+m\d+s|\d+s) left", line.first.inner_text()), 60, "a time-left estimate"
        )
        text = line.first.inner_text()
        assert re.search(r"epoch \d+ / 400", text) and "elapsed" in text and "heartbeat" in text
        step = int(re.search(r"step (\d+) / 4000", text).group(1))
        wait_for(
            lambda: int(re.search(r"step (\d+) / 4000", line.first.inner_text()).group(1)) > step,
            60,
            "the step count moving",
        )
        cell = page.locator(".tabulator-cell[tabulator-field='time_left']").first
        assert re.fullmatch(r"~(\d+h\d+m|\d+m\d+s|\d+s)", cell.inner_text().strip())  # the time-left column, as text
        bar = page.locator(".tabulator-cell[tabulator-field='progress']").first
        assert bar.inner_text().strip() not in ("", "0")  # the progress column is not empty while running
        page.screenshot(path=str(artifacts / "overview-progress.png"), full_page=True)
        assert proc.poll() is None
        assert not errors, errors
    finally:
        page.close()
