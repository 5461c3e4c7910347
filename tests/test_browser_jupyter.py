"""``fnodiag.show`` in a real JupyterLab: notebook 07 run in Chromium (Playwright), its view live while it trains.

A ``jupyter lab`` subprocess (127.0.0.1, a free port, token and password off, every Jupyter folder in a
temporary directory) serves a copy of ``notebooks/07_live_in_jupyter.ipynb`` (less its clean-up cell,
so that the view outlives the run); the page runs every cell from the Run menu. The two background
trainings take ``FNODIAG_NB07_STEPS`` steps (more than under nbval) so that the view is on screen while
they train. The test asserts that the dashboard renders without console errors, that its plots gain
points while the runs train (Bokeh's data sources in the page), and that a widget (the statistic) redraws
the Activations tab; that nothing was fetched from outside the machine (no CDN) and the page logged no
error. It stops the server and checks that the kernel it started ended with it. The screenshot goes with the other
browser tests' (``FNODIAG_KEEP_ARTIFACTS=1``: ``test-artifacts/jupyterlab-live.png``).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

playwright_api = pytest.importorskip("playwright.sync_api")
pytest.importorskip("jupyterlab")
psutil = pytest.importorskip("psutil")  # ipykernel's dependency: the kernel the server started, found and checked

from conftest import CHROMIUM, REPO  # noqa: E402
from test_browser import PAINTED_JS, POINTS_JS, TITLES_JS, free_port, wait_for  # noqa: E402

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"no Chromium at {CHROMIUM}"),
]
NOTEBOOK = REPO / "notebooks" / "07_live_in_jupyter.ipynb"
STEPS = int(
    os.environ.get("FNODIAG_NB07_TEST_STEPS", "1000")
)  # per background run: tens of seconds on a 2-core CPU, so the page sees it train
START_S = 600  # bounds, not measurements: a loaded 2-core machine imports the plotting stack slowly


@contextlib.contextmanager
def jupyter_lab(folder: Path):
    """``jupyter lab`` serving ``folder``; yields its URL once it answers, and stops it (and its kernels)."""
    port = free_port()
    home = folder.parent / "jupyter-home"
    env = {
        **os.environ,
        "FNODIAG_NB07_STEPS": str(STEPS),
        "JUPYTER_CONFIG_DIR": str(home / "config"),
        "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
        "IPYTHONDIR": str(home / "ipython"),
        "JUPYTERLAB_SETTINGS_DIR": str(home / "settings"),
        "JUPYTERLAB_WORKSPACES_DIR": str(home / "workspaces"),
    }
    cmd = [
        sys.executable,
        "-m",
        "jupyterlab",
        "--no-browser",
        f"--port={port}",
        "--ServerApp.ip=127.0.0.1",
        "--IdentityProvider.token=",
        "--ServerApp.password=",
        f"--ServerApp.root_dir={folder}",
        "--LabApp.news_url=",  # no announcements fetched (nothing outside the machine is reached)
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        "--LabApp.extension_manager=readonly",  # no PyPI queries
        *(["--allow-root"] if os.geteuid() == 0 else []),  # CI containers run as root
    ]
    tracker = home / "settings" / "@jupyterlab" / "notebook-extension" / "tracker.jupyterlab-settings"
    tracker.parent.mkdir(parents=True)
    tracker.write_text('{"windowingMode": "none"}')  # every cell in the DOM, scrolled into view or not
    log = (folder.parent / "jupyter.log").open("wb")
    proc = subprocess.Popen(cmd, cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT)

    def up():
        try:
            return urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status", timeout=2).status == 200
        except OSError:
            assert proc.poll() is None, (folder.parent / "jupyter.log").read_text()[-3000:]
            return False

    try:
        wait_for(up, 120, "jupyter lab to answer", step=0.5)
        yield f"http://127.0.0.1:{port}"
    finally:
        started = psutil.Process(proc.pid).children(recursive=True) if proc.poll() is None else []  # the kernel
        proc.terminate()  # the server shuts its kernels down as it stops
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        _, alive = psutil.wait_procs(started, timeout=30)
        for p in alive:
            p.kill()
        log.close()
    assert not alive, f"still running once the server stopped: {alive}"


def count(titles: list[str], part: str) -> int:
    """Titles holding ``part`` (a binned heatmap's title goes on: "... (mean of 2 steps per column)")."""
    return sum(part in t for t in titles)


def test_show_in_jupyterlab_renders_streams_while_training_and_redraws_on_a_widget(browser, artifacts, tmp_path):
    folder = tmp_path / "lab"
    folder.mkdir()
    nb = json.loads(NOTEBOOK.read_text())
    assert "TMP.cleanup()" in "".join(nb["cells"][-1]["source"])
    nb["cells"] = nb["cells"][:-1]  # the view outlives the runs: the widget is changed after they end
    for cell in nb["cells"]:  # what the page shows is then what this run printed
        if cell["cell_type"] == "code":
            cell["outputs"], cell["execution_count"] = [], None
    (folder / NOTEBOOK.name).write_text(json.dumps(nb))
    with jupyter_lab(folder) as url:
        page = browser.new_page()
        errors = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("requestfailed", lambda r: errors.append(f"request failed: {r.url} ({r.failure})"))
        elsewhere = []  # requests that leave the machine's JupyterLab (a CDN): none, the page works offline
        page.on("request", lambda r: None if r.url.startswith((url, "data:", "blob:")) else elsewhere.append(r.url))
        try:
            page.goto(f"{url}/lab/tree/{NOTEBOOK.name}", timeout=120_000)
            select = page.locator(".jp-Dialog button", has_text="Select")  # "Select Kernel" (Python 3) if asked
            with contextlib.suppress(playwright_api.TimeoutError):
                select.first.click(timeout=20_000)
            page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=120_000)
            page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
            page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()

            # the dashboard renders in the output, with data, once the picking cell has chosen both arms and
            # opened the Activations tab (its heatmaps and lines of both arms)
            page.wait_for_selector("text=arms shown:", timeout=START_S * 1000)
            wait_for(
                lambda: count(page.evaluate(TITLES_JS), ": activation abs_mean") >= 2,
                120,
                "the Activations tab drawn for both arms",
            )
            wait_for(lambda: page.evaluate(POINTS_JS) > 0, 120, "plots with data")
            finished = page.get_by_text("| finished |")
            assert finished.count() == 0, "the runs ended before the view was shown: raise STEPS"
            before = page.evaluate(POINTS_JS)
            wait_for(lambda: page.evaluate(POINTS_JS) > before, 120, "new points while the runs train")
            assert finished.count() == 0  # they arrived while the runs trained (the await cell still runs)
            shown = page.locator(".jp-OutputArea-output", has_text="layer activations and gradients").first
            shown.scroll_into_view_if_needed()
            page.evaluate(PAINTED_JS)  # the points now held are on screen
            shown.screenshot(path=str(artifacts / "jupyterlab-live.png"))

            # once every cell has run (kernel idle): the statistic widget redraws the Activations tab
            finished.first.wait_for(timeout=START_S * 1000)
            page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=120_000)
            titles = page.evaluate(TITLES_JS)
            stat = page.locator("select").filter(has=page.locator("option", has_text="spatial_std")).first
            stat.scroll_into_view_if_needed()
            stat.select_option("spatial_std")
            assert stat.input_value() == "spatial_std"
            wait_for(
                lambda: (
                    count(page.evaluate(TITLES_JS), ": activation spatial_std")
                    > count(titles, ": activation spatial_std")
                ),
                120,
                "the Activations tab redrawn for the statistic chosen",
            )
            page.screenshot(path=str(artifacts / "jupyterlab-widget.png"), full_page=True)
            assert elsewhere == [], elsewhere
            assert errors == [], errors
            stderr = page.locator("[data-mime-type='application/vnd.jupyter.stderr']").all_inner_texts()
            assert stderr == [], stderr  # the kernel warned of nothing (Bokeh's unequal columns, a failed tick)
        except Exception as exc:
            page.screenshot(path=str(artifacts / "jupyterlab-failed.png"), full_page=True)
            titles = page.evaluate(TITLES_JS)
            raise AssertionError(f"{exc}; console errors: {errors}; titles: {titles}; elsewhere: {elsewhere}") from exc
        finally:
            page.close()
