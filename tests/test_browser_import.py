"""An imported reference run (``fnodiag import``) beside one of fnodiag's own runs, in the served dashboard.

Reuses the Chromium / server helpers of ``test_browser``; its own ``panel serve app`` subprocess
serves a runs folder holding a tiny trained run and an import of the reference-style fixture folder
(``reference_arm.py``). Screenshot: ``imported-run.png`` in ``test_browser``'s artifacts folder (temporary,
or ``test-artifacts/`` under FNODIAG_KEEP_ARTIFACTS=1).
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from conftest import CHROMIUM
from reference_arm import build_reference_arm
from test_browser import open_page, serve_app, train_cmd, wait_for

pytest.importorskip("playwright.sync_api")
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"no Chromium at {CHROMIUM}"),
]


@pytest.fixture(scope="module")
def import_server(tmp_path_factory):
    base = tmp_path_factory.mktemp("browser-import")
    root = base / "runs"
    subprocess.run(train_cmd(root, "own", 1), check=True, capture_output=True, timeout=300)
    arm = build_reference_arm(base / "arm_stable_sgd")
    subprocess.run(
        [sys.executable, "-m", "fnodiag.cli", "import", str(arm), "--out", str(root / "reference-stable")],
        check=True,
        capture_output=True,
        timeout=300,
    )
    with serve_app(root) as url:
        yield url


def test_imported_run_is_listed_and_says_it_has_no_live_captures(browser, import_server, artifacts):
    page, errors = open_page(browser, import_server)
    try:
        # both runs are listed (chosen by default) and the Overview names the import
        wait_for(
            lambda: page.locator(".choices__item:has-text('reference-stable')").count() > 0,
            60,
            "the imported run in the arms list",
        )
        assert page.locator(".choices__item:has-text('own')").count() > 0
        page.wait_for_selector("text=is imported from the reference project", timeout=60_000)
        page.wait_for_selector(".tabulator-cell:has-text('reference-stable')", timeout=60_000)
        page.wait_for_timeout(1500)  # let the loss curves finish drawing
        page.screenshot(path=str(artifacts / "imported-run.png"), full_page=True)
        page.locator(".bk-tab:has-text('Activations')").first.click()
        page.wait_for_selector("text=no live per-layer captures", timeout=60_000)
        page.wait_for_timeout(1500)
        page.screenshot(path=str(artifacts / "imported-run-activations.png"), full_page=True)
        assert not [e for e in errors if "favicon" not in e], errors
    finally:
        page.close()
