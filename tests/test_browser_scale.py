"""The dashboard over a generated 1,000-run folder in the system Chromium: the runs table is the first content,
the page holds one table (not one widget per run), and a run folder created after the page loaded appears in the
page by itself (no click).

Times are printed (``-s`` shows them), never asserted: the waits are generous bounds for a busy machine;
``benchmarks/bench_dashboard_scale.py`` measures them against the targets.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import pytest

pytest.importorskip("playwright.sync_api")

from conftest import CHROMIUM  # noqa: E402
from test_browser import serve  # noqa: E402  (panel serve app in a subprocess, as the other browser tests)

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from bench_dashboard_scale import first_content  # noqa: E402
from make_runs import Templates, config_for, make_folder, no_fsync, write_run  # noqa: E402

pytestmark = [pytest.mark.browser, pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"no Chromium at {CHROMIUM}")]

RUNS = 1000
BOUND_MS = 300_000  # a bound for a loaded 2-core machine, not a target
MODELS_JS = """() => { let n = 0;
  for (const d of (window.Bokeh ? Bokeh.documents : [])) n += d.all_models.size; return n; }"""


@pytest.fixture(scope="module")
def many(tmp_path_factory):
    root = tmp_path_factory.mktemp("scale") / "runs"
    t0 = time.perf_counter()
    make_folder(root, RUNS, layers=2, steps=20)
    print(f"\n{RUNS} runs written in {time.perf_counter() - t0:.1f} s")
    return root


def open_page(browser, url: str, errors: list, what: str):
    """A page of ``url``; prints when it showed the count line and a table row (the page's clock, and Playwright's)."""
    clock: list[float] = []
    seen, page = first_content(browser, url, RUNS, clock, errors)
    print(
        f"first content, {what}: {clock[0]:.2f} s from navigation in the page's clock "
        f"(Playwright saw it at {seen:.2f} s)"
    )
    return page


def test_a_thousand_runs_listed_and_a_new_run_appears_by_itself(browser, many, artifacts):
    errors = []
    with serve(many) as (url, _):
        open_page(browser, url, errors, "the browser's first visit (Bokeh's and Panel's scripts not cached)").close()
        page = open_page(browser, url, errors, "a later page")
        assert page.locator(".tabulator").count() == 1  # one table lists every run
        models = page.evaluate(MODELS_JS)
        print(f"Bokeh models in the page: {models}")
        assert models < RUNS  # not one widget (or figure) per run
        page.wait_for_timeout(1000)  # the page has settled: the run below is created after page load

        with tempfile.TemporaryDirectory() as tpl, no_fsync():
            t0 = time.perf_counter()
            write_run(many / "zz-new", config_for(RUNS), Templates(Path(tpl), 2, 20), k=RUNS)
        page.locator(f"text=/{RUNS + 1} runs/").first.wait_for(timeout=BOUND_MS)
        print(f"a run created after page load shown: {time.perf_counter() - t0:.2f} s after its folder was written")
        page.screenshot(path=str(artifacts / "dashboard-1000-runs.png"))
        assert not errors, errors
        page.close()
