"""Findings and evidence links in the served dashboard (system Chromium through Playwright).

Its own ``panel serve app`` subprocess serves a runs folder holding a run whose head and output layers
stop varying at step 220 (a store written through ``RunStore``, as ``tests/test_findings_runs.py`` builds
it) and a real tiny ``fnodiag train`` run (live capture with spectra every step). The test opens the
Findings tab, clicks a finding's *evidence* link, and checks that the new page shows that run, on the
Activations tab, with the finding's statistic chosen and its layer and step named and drawn; then an
evidence link into the Spectra tab chooses the layer and step there. Screenshots go to ``test_browser``'s
artifacts folder.
"""

from __future__ import annotations

import os
import subprocess

import pytest
from conftest import CHROMIUM
from test_browser import SESSION_MS, TITLES_JS, open_page, serve_app, train_cmd, wait_for
from test_findings_runs import make_run

pytest.importorskip("playwright.sync_api")
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"no Chromium at {CHROMIUM}"),
]

# a Panel pane's text lives in its element's shadow root (innerText of the host leaves it out)
PANE_TEXT_JS = """e => e.shadowRoot ? Array.from(e.shadowRoot.children)
  .filter(c => !['STYLE', 'LINK'].includes(c.tagName)).map(c => c.innerText).join(' ') : e.innerText"""


def active_tabs(page) -> list[str]:
    """The titles of the page's active tabs (Playwright's locators pierce the shadow roots)."""
    return [t.strip() for t in page.locator(".bk-tab.bk-active").all_inner_texts()]


@pytest.fixture(scope="module")
def findings_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("browser-findings") / "runs"
    make_run(root / "sick", collapse_at=220)
    subprocess.run(train_cmd(root, "real", 1), check=True, capture_output=True, timeout=300)
    with serve_app(root) as url:
        yield url


def test_a_findings_evidence_link_opens_its_run_tab_statistic_layer_and_step(browser, findings_server, artifacts):
    page, errors = open_page(browser, findings_server)
    try:
        page.locator(".bk-tab:has-text('Findings')").first.click()
        link = page.locator("a.fnodiag-evidence-link[href*='stat=min_channel_std'][href*='layer=output']").first
        link.wait_for(timeout=SESSION_MS)
        assert link.get_attribute("href") == "?run=sick&tab=activations&stat=min_channel_std&layer=output&step=220"
        page.screenshot(path=str(artifacts / "findings-tab.png"), full_page=True)
        link.click()  # a new session of the page, pointed at the evidence
        page.wait_for_url("**/app?run=sick*", timeout=SESSION_MS)
        panel = page.locator(".fnodiag-evidence").first
        panel.wait_for(timeout=SESSION_MS)
        text = wait_for(
            lambda: (lambda t: t if "output" in t else None)(panel.evaluate(PANE_TEXT_JS)),
            60,
            "the evidence panel naming the layer",
        )
        assert "sick" in text and "min_channel_std" in text and "step 220" in text, text
        assert wait_for(lambda: active_tabs(page), 60, "an active tab") == ["Activations"]
        titles = wait_for(
            lambda: (lambda t: t if "sick: activation min_channel_std" in t else None)(page.evaluate(TITLES_JS)),
            60,
            "the chosen run's heatmap of the chosen statistic",
        )
        assert "evidence: output min_channel_std" in titles  # the layer's series, the step marked
        assert not any(t.startswith("real:") for t in titles)  # only the linked run is chosen
        page.wait_for_timeout(1000)
        page.screenshot(path=str(artifacts / "findings-evidence.png"), full_page=True)

        # a link into the Spectra tab chooses the layer and the step there
        page.goto(f"{findings_server}?run=real&tab=spectra&layer=encoder.0.spectral&step=4", timeout=SESSION_MS)
        page.locator(".fnodiag-evidence").first.wait_for(timeout=SESSION_MS)
        assert wait_for(lambda: active_tabs(page), 60, "an active tab") == ["Spectra"]
        titles = wait_for(
            lambda: (lambda t: t if "real: encoder.0.spectral share of energy per band" in t else None)(
                page.evaluate(TITLES_JS)
            ),
            60,
            "the chosen layer's band energies",
        )
        assert "real: share of energy per band at step 4" in titles
        page.wait_for_timeout(1000)
        page.screenshot(path=str(artifacts / "spectra-tab.png"), full_page=True)
        assert not [e for e in errors if "favicon" not in e], errors
    finally:
        page.close()
