"""The Compare tab, CSV downloads and safe sharing, in the served dashboard (Playwright on the system Chromium).

The runs folder is a real two-arm, two-seed tiny sweep (``two_arms.py``). Each test starts its own
``panel serve app`` subprocess: plain (Compare, CSV), ``--args --read-only``, with Panel's
``--basic-auth`` (a login through the page), and open to other machines without authentication
(refused: exit status 2 and one line). Screenshots: ``test-artifacts/dashboard-compare.png``,
``dashboard-read-only.png``, ``dashboard-login.png``, ``dashboard-remote-refused.png``.
"""

from __future__ import annotations

import contextlib
import csv
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
from conftest import CHROMIUM, REPO
from test_browser import TITLES_JS, free_port, serve, wait_for

pytest.importorskip("playwright.sync_api")
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"no Chromium at {CHROMIUM}"),
]


def open_page(browser, url):
    """A page on ``url`` once the dashboard shows (a session of 4 runs takes long to build on a busy machine)."""
    page = browser.new_page()
    errors = []
    page.on(
        "console",
        lambda m: errors.append(m.text) if m.type == "error" and "Failed to load resource" not in m.text else None,
    )  # an offline machine cannot reach CDN fonts
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(url, wait_until="load", timeout=400_000)
    page.bring_to_front()
    page.wait_for_selector("text=Overview", timeout=400_000)
    return page, errors


def add_seed(page, seed: str) -> None:
    """Add ``seed`` to the sidebar's Seeds choice (a Choices.js multi-select)."""
    box = page.locator(".bk-input-group", has=page.get_by_text("Seeds", exact=True)).locator(".choices")
    box.click()
    box.locator(f".choices__list--dropdown .choices__item--choice:text-is('{seed}')").click()
    page.keyboard.press("Escape")


def test_compare_tab_shows_arms_per_layer_and_downloads_what_it_draws(browser, two_arm_sweep, tmp_path, artifacts):
    from fnodiag.analysis import compare
    from fnodiag.runs import StoreReader

    with serve(two_arm_sweep.parent) as (url, _):
        page, errors = open_page(browser, url)
        add_seed(page, "8")
        wait_for(
            lambda: page.locator(".choices__list--multiple .choices__item:has-text('8')").count() > 0,
            10,
            "seed 8 chosen",
        )
        page.locator(".bk-tab:has-text('Compare')").first.click()
        title = "ln(sgd / adam): activation spatial_std"
        wait_for(lambda: title in page.evaluate(TITLES_JS), 300, "the difference map")
        bars = [t for t in page.evaluate(TITLES_JS) if t.startswith("activation spatial_std per layer at step")]
        assert bars, page.evaluate(TITLES_JS)
        step = int(bars[-1].split("at step ")[1].split(" ")[0])
        page.wait_for_timeout(1500)  # let the figures paint
        page.screenshot(path=str(artifacts / "dashboard-compare.png"), full_page=True)
        with page.expect_download() as d:
            page.get_by_text("Download the layer values (CSV)").click()
        path = tmp_path / "layers.csv"
        d.value.save_as(path)
        rows = list(csv.DictReader(path.open()))
        with page.expect_download() as d:
            page.get_by_text("Download the difference maps (CSV)").click()
        d.value.save_as(tmp_path / "ratio.csv")
        ratio = list(csv.DictReader((tmp_path / "ratio.csv").open()))
        assert not errors, errors
        page.close()
    assert list(rows[0]) == ["arm", "step", "layer", "order", "mean", "std", "min", "max", "seeds"]
    mats = {}
    for arm in ("adam", "sgd"):
        mats[arm] = []
        for seed in (7, 8):
            with StoreReader(two_arm_sweep / f"{arm}-s{seed}" / "run.sqlite") as r:
                mats[arm].append(r.layer_matrix("activation", "spatial_std"))
    stats = {arm: compare.seed_stats(m) for arm, m in mats.items()}
    assert len(rows) == sum(len(m[0].layers) for m in mats.values())  # one row per arm x layer drawn
    for row in rows:
        seeds = [m.values[m.layers.index(row["layer"]), list(m.steps).index(step)] for m in mats[row["arm"]]]
        assert int(row["step"]) == step and int(row["seeds"]) == 2
        assert float(row["mean"]) == pytest.approx(np.mean(seeds))
        assert (float(row["min"]), float(row["max"])) == pytest.approx((min(seeds), max(seeds)))
    layers, steps, values = compare.log_ratio(stats["sgd"], stats["adam"])
    assert len(ratio) == np.isfinite(values).sum() and {r["arm"] for r in ratio} == {"sgd"}


def test_tab_csv_download_matches_the_store(browser, two_arm_sweep, tmp_path):
    from fnodiag.runs import StoreReader

    with serve(two_arm_sweep.parent) as (url, _):
        page, errors = open_page(browser, url)
        page.locator(".bk-tab:has-text('Gradients')").first.click()
        with page.expect_download() as d:
            page.get_by_text("Download this tab's plot data (CSV)").locator("visible=true").first.click()
        d.value.save_as(tmp_path / "gradients.csv")
        assert not errors, errors
        page.close()
    rows = list(csv.DictReader((tmp_path / "gradients.csv").open()))
    assert list(rows[0]) == ["plot", "run", "series", "step", "value"]
    with StoreReader(two_arm_sweep / "adam-s7" / "run.sqlite") as r:  # the default choice: seed 7 of both arms
        grad = r.layer_stats(source="grad", stat="norm")
        pre = r.scalars("grad/norm_preclip")
    mine = [x for x in rows if x["run"] == "adam s7"]
    assert {x["run"] for x in rows} == {"adam s7", "sgd s7"}
    assert sum(x["plot"] == "gradient norm per layer: norm" for x in mine) == len(grad)
    got = [(int(x["step"]), float(x["value"])) for x in mine if x["series"] == "pre-clip"]
    assert [st for st, _ in got] == pre.step.tolist()
    assert [v for _, v in got] == pytest.approx(pre.value.tolist())


def test_read_only_hides_launch(browser, two_arm_sweep, artifacts):
    with serve(two_arm_sweep.parent, app_args=["--read-only"]) as (url, _):
        page, errors = open_page(browser, url)
        page.wait_for_selector(".bk-tab:has-text('Compare')", timeout=30_000)
        assert page.locator(".bk-tab:has-text('Launch')").count() == 0
        assert page.locator(".bk-tab:has-text('Checkpoint')").count() == 1
        page.screenshot(path=str(artifacts / "dashboard-read-only.png"), full_page=True)
        assert not errors, errors
        page.close()


def test_basic_auth_login_through_the_page(browser, two_arm_sweep, artifacts):
    """Open to other machines (--address 0.0.0.0) with Panel's --basic-auth: it starts, asks for a login,
    and a logged-in user sees the runs and may launch."""
    with serve(
        two_arm_sweep.parent,
        "--address",
        "0.0.0.0",
        "--basic-auth",
        "s3cret-pw",
        "--cookie-secret",
        "fnodiag-test-cookie-secret",
    ) as (url, _):
        page = browser.new_page()
        page.goto(url, timeout=400_000)
        page.wait_for_selector("input[name=username]", timeout=30_000)
        page.screenshot(path=str(artifacts / "dashboard-login.png"))
        page.fill("input[name=username]", "scientist")
        page.fill("input[name=password]", "wrong")
        page.click("button[type=submit]")
        page.wait_for_selector("text=Invalid username or password", timeout=30_000)
        page.fill("input[name=username]", "scientist")
        page.fill("input[name=password]", "s3cret-pw")
        page.click("button[type=submit]")
        page.wait_for_selector("text=Overview", timeout=400_000)
        page.wait_for_selector(".tabulator-cell:has-text('sgd')", timeout=60_000)
        assert page.locator(".bk-tab:has-text('Launch')").count() == 1
        page.close()


def _lan_address() -> str | None:
    """A non-loopback address of this machine (to be a 'remote' browser), or None."""
    with contextlib.suppress(OSError), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect(("192.0.2.1", 9))  # no packet is sent for UDP connect
        ip = s.getsockname()[0]
        return None if ip.startswith("127.") else ip
    return None


@pytest.mark.parametrize("args", [["--address", "0.0.0.0"], ["--allow-websocket-origin", "example.org:5006"]])
def test_remote_access_without_auth_refuses_to_start(args, two_arm_sweep):
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "panel",
            "serve",
            str(REPO / "app"),
            "--port",
            str(free_port()),
            *args,
            "--args",
            "--runs",
            str(two_arm_sweep.parent),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env={k: v for k, v in os.environ.items() if k != "FNODIAG_ALLOW_REMOTE"},
    )
    assert p.returncode == 2, p.stderr[-2000:]
    lines = [x for x in p.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and "--basic-auth" in lines[0] and "--oauth-provider" in lines[0], p.stderr
    assert args[1].split(":")[0] in lines[0]


def test_a_remote_session_without_login_may_not_start_runs(browser, two_arm_sweep, artifacts):
    """FNODIAG_ALLOW_REMOTE=1 serves other machines unauthenticated (auth elsewhere): such a session sees the
    runs, but its Start click is refused by the server (no run is created)."""
    ip = _lan_address()
    if ip is None:
        pytest.skip("no non-loopback address on this machine")
    root = two_arm_sweep.parent
    before = sorted(p.name for p in root.iterdir())
    with serve(root, "--address", "0.0.0.0", host=ip, env={"FNODIAG_ALLOW_REMOTE": "1"}) as (url, _):
        page, errors = open_page(browser, url)
        page.locator(".bk-tab:has-text('Launch')").first.click()
        page.get_by_role("button", name="Quick demo run").click()
        page.wait_for_selector("text=Refused: only sessions on this machine or logged-in users", timeout=30_000)
        page.screenshot(path=str(artifacts / "dashboard-remote-refused.png"), full_page=True)
        page.close()
    assert sorted(p.name for p in root.iterdir()) == before
