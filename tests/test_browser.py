"""The served dashboard in the system Chromium (Playwright): loads cleanly, draws plots, shows live points
in two sessions (pages) at once.

A ``panel serve app`` subprocess listens on 127.0.0.1 on a free port over a runs folder holding
one finished tiny run and one that a ``fnodiag train`` subprocess trains during the test.
Screenshots and the latency note go to a temporary folder; with ``FNODIAG_KEEP_ARTIFACTS=1`` they are
kept in the repository's ``test-artifacts/`` (git-ignored) instead.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

playwright_api = pytest.importorskip("playwright.sync_api")

from conftest import CHROMIUM, KEEP_ARTIFACTS, REPO  # noqa: E402  (shared with the other browser tests)

# How long a page may take to build its session: bounds, not measurements. On a slow 2-core machine two
# sessions built at once beside a training run have taken over a minute.
SESSION_MS = 300_000
TINY = [
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
    "--capture-every",
    "1",
    "--accelerator",
    "cpu",
    "--no-progress",
]
# Total points held by the page's Bokeh data sources.
POINTS_JS = """() => { let n = 0; for (const doc of (window.Bokeh ? Bokeh.documents : []))
  for (const m of doc.all_models) if (typeof m.get_length === 'function') n += (m.get_length() || 0); return n; }"""

# Resolves once the page has painted two more frames (the points now held are on screen): a page
# whose main thread is starved by the streaming never resolves it.
PAINTED_JS = """() => new Promise(done => requestAnimationFrame(() => requestAnimationFrame(() => done(true))))"""

# Frames the page paints in one second (requestAnimationFrame callbacks): recorded, not asserted.
FPS_JS = """() => new Promise(done => { let n = 0; const t0 = performance.now();
  const f = () => { n++; if (performance.now() - t0 < 1000) requestAnimationFrame(f); else done(n); };
  requestAnimationFrame(f); })"""

TITLES_JS = """() => { const t = []; for (const doc of (window.Bokeh ? Bokeh.documents : []))
  for (const m of doc.all_models) if (m.type === 'Title' && m.text) t.push(m.text); return t; }"""

pytestmark = [pytest.mark.browser, pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"no Chromium at {CHROMIUM}")]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout: float, what: str, step: float = 0.1):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def train_cmd(root: Path, name: str, epochs: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "fnodiag.cli",
        "train",
        *TINY,
        "--epochs",
        str(epochs),
        "--out",
        str(root),
        "--name",
        name,
        "--cache-dir",
        str(root.parent / "cache"),
    ]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("browser") / "runs"
    subprocess.run(train_cmd(root, "base", 2), check=True, capture_output=True, timeout=300)
    return root


@pytest.fixture(scope="module")
def live_run(runs):
    """A run still training when the page opens (its status is 'running' before the server starts)."""
    from fnodiag.runs import RunDir

    proc = subprocess.Popen(train_cmd(runs, "live", 150), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    run = RunDir(runs / "live")
    try:
        wait_for(
            lambda: run.store_path.is_file() and (run.read_status() or {}).get("state") == "running",
            120,
            "the live run to start",
        )
        yield proc, run
    finally:
        if proc.poll() is None:
            proc.terminate()
        proc.wait(timeout=60)


@contextlib.contextmanager
def serve(root, *serve_args, app_args=(), host="127.0.0.1", env=None):
    """``panel serve app`` on ``root`` in a subprocess with extra ``serve_args`` (and ``--args`` ``app_args``);
    yields ``(url, process)`` once the first session is built, and stops the server."""
    port = free_port()
    args = list(serve_args) or ["--address", "127.0.0.1"]
    cmd = [
        sys.executable,
        "-m",
        "panel",
        "serve",
        str(REPO / "app"),
        "--port",
        str(port),
        *args,
        "--allow-websocket-origin",
        f"{host}:{port}",
        "--liveness",
        "--args",
        "--runs",
        str(root),
        *app_args,
    ]
    proc = subprocess.Popen(
        cmd, cwd=REPO, env={**os.environ, **(env or {})}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )

    def up():
        try:
            return urllib.request.urlopen(f"http://{host}:{port}/liveness", timeout=2).status == 200
        except OSError:
            assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
            return False

    try:
        wait_for(up, 90, "panel serve to answer", step=0.3)
        with contextlib.suppress(
            OSError
        ):  # the first session imports the plotting stack: not under page.goto's timeout
            urllib.request.urlopen(f"http://{host}:{port}/app", timeout=120).read()
        yield f"http://{host}:{port}/app", proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def serve_app(root: Path):
    """:func:`serve` on loopback; yields the page URL."""
    with serve(root) as (url, _):
        yield url


@pytest.fixture(scope="module")
def server(runs, live_run):
    with serve_app(runs) as url:
        yield url


def open_page(browser, url, wait: bool = True):
    page = browser.new_page()
    errors = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("requestfailed", lambda r: errors.append(f"request failed: {r.url} ({r.failure})"))
    page.goto(url, wait_until="load" if wait else "commit", timeout=SESSION_MS)
    if wait:
        page.bring_to_front()
        page.wait_for_selector("text=Overview", timeout=SESSION_MS)
    return page, errors


def test_page_loads_and_choosing_an_arm_draws_plots(browser, server, artifacts):
    assert KEEP_ARTIFACTS == (REPO in artifacts.parents)  # screenshots stay out of the repository unless kept
    page, errors = open_page(browser, server)
    wait_for(lambda: page.evaluate(POINTS_JS) > 0, 60, "plots with data")
    page.screenshot(path=str(artifacts / "dashboard-overview.png"), full_page=True)
    # a tab's plots are drawn when it is opened: open Activations, where both arms are drawn at first
    page.locator(".bk-tab:has-text('Activations')").first.click()
    before = wait_for(
        lambda: (lambda t: t if "live: activation spatial_std" in t else None)(page.evaluate(TITLES_JS)),
        60,
        "both arms' activation plots",
    )
    assert "base: activation spatial_std" in before  # both arms drawn at first
    # choose only the finished run: remove 'live' from the arms
    page.locator(".choices__list--multiple .choices__item:has-text('live') .choices__button").first.click(force=True)
    wait_for(
        lambda: page.locator(".choices__list--multiple .choices__item:has-text('live')").count() == 0,
        10,
        "'live' removed",
    )
    page.locator(".bk-tab:has-text('Activations')").first.click()
    # the views are rebuilt for 'base' only: new 'base' figures, no new 'live' ones (old models linger in the doc)
    count = lambda titles, t: sum(x == t for x in titles)
    titles = wait_for(
        lambda: (
            lambda t: (
                t if count(t, "base: activation spatial_std") > count(before, "base: activation spatial_std") else None
            )
        )(page.evaluate(TITLES_JS)),
        60,
        "the chosen arm's plots",
    )
    assert count(titles, "live: activation spatial_std") == count(before, "live: activation spatial_std")
    assert "base: spatial_std per layer" in titles
    page.wait_for_timeout(1000)
    points = page.evaluate(POINTS_JS)
    assert points > 100
    page.screenshot(path=str(artifacts / "dashboard-activations.png"), full_page=True)
    page.locator(".bk-tab:has-text('Gradients')").first.click()
    page.wait_for_timeout(1500)
    page.screenshot(path=str(artifacts / "dashboard-gradients.png"), full_page=True)
    assert not errors, errors
    page.close()


def test_live_points_arrive_in_two_open_pages(browser, server, live_run, artifacts):
    """Two sessions on one server while the run trains: each streams the new rows into its own page."""
    proc, run = live_run
    from fnodiag.runs import StoreReader

    pages = [open_page(browser, server, wait=False) for _ in range(2)]  # both sessions load at once
    try:
        page, errors = pages[0]
        page.wait_for_selector("text=Overview", timeout=SESSION_MS)
        page.bring_to_front()  # the page opened last is in front; a background page gets few frames to act on
        page.locator(".bk-tab:has-text('Activations')").first.click()
        for p, _ in pages:
            wait_for(lambda p=p: p.evaluate(POINTS_JS) > 0, SESSION_MS / 1000, "plots with data")
        reader = StoreReader(run.store_path)
        latencies, counts, second, painted = [], [], [], []
        seen = len(reader.scalars("train/loss"))
        deadline = time.time() + 60
        while proc.poll() is None and time.time() < deadline and len(latencies) < 4:
            n = len(reader.scalars("train/loss"))
            if n > seen:  # new rows committed: how long until the page holds more points?
                t0, before = time.time(), [p.evaluate(POINTS_JS) for p, _ in pages]
                seen = n
                grown = wait_for(
                    lambda b=before: page.evaluate(POINTS_JS) > b[0], 30, "new points in the page", step=0.02
                )
                latencies.append(time.time() - t0)
                counts.append(page.evaluate(POINTS_JS))
                assert grown
                painted.append(page.evaluate(PAINTED_JS))  # the page paints while points stream in (not starved)
                other = pages[1][0]
                wait_for(
                    lambda o=other, b=before: o.evaluate(POINTS_JS) > b[1],
                    30,
                    "new points in the second page",
                    step=0.02,
                )
                second.append(other.evaluate(POINTS_JS))
            time.sleep(0.02)
        page.bring_to_front()
        fps = page.evaluate(FPS_JS) if proc.poll() is None else None  # for the note only (machines are noisy)
        reader.close()
        page.screenshot(path=str(artifacts / "dashboard-live.png"), full_page=True)
        pages[1][0].bring_to_front()
        pages[1][0].screenshot(path=str(artifacts / "dashboard-live-second-session.png"), full_page=True)
        assert len(latencies) >= 2, "the run finished before new points could be watched"
        assert painted == [True] * len(latencies)  # every batch of new points was followed by painted frames
        assert counts == sorted(counts) and counts[-1] > counts[0]
        assert second == sorted(second) and second[-1] > second[0]  # the second session got new points as well
        (artifacts / "live-latency.txt").write_text(
            "seconds from a committed store row to more points in the page: "
            + ", ".join(f"{x:.2f}" for x in latencies)
            + f"\nframes painted per second while streaming: {fps}\n"
        )
        for _, errs in pages:
            assert not errs, errs
    finally:  # a failed check must not leave two live sessions ticking for the next tests
        for p, _ in pages:
            p.close()


def test_launch_an_arm_of_a_sweep_definition_from_the_page_and_stop_it(browser, server, runs, tiny_sweep, artifacts):
    """Launch tab: a definition TOML path (in the runs folder), an arm, Start arm -> a sweep process trains
    <runs>/tiny/sgd-s7; the page follows its state and its Stop button interrupts it."""
    import re

    from fnodiag.runs import RunDir

    definition = tiny_sweep(
        {"control": {"optim.name": "adam"}, "sgd": {"optim.name": "sgd"}},
        {"train.epochs": 200, "train.capture_every": 1},
    ).rename(runs / "tiny.toml")  # the dashboard opens definitions inside the runs folder only (issue 26 case 8)
    page, errors = open_page(browser, server)
    page.locator(".bk-tab:has-text('Launch')").first.click()
    path_box = page.get_by_label("... or a definition TOML path")
    path_box.fill(str(definition))
    path_box.press("Enter")
    arm = page.get_by_label("Arm", exact=True)
    wait_for(
        lambda: arm.evaluate("e => Array.from(e.options).map(o => o.value)") == ["control", "sgd"],
        20,
        "the definition's arms offered",
    )
    arm.select_option("sgd")
    page.wait_for_timeout(500)  # the choice reaches the server
    page.get_by_role("button", name="Start arm").click()
    row = lambda state: page.locator("p", has_text=re.compile(rf"tiny/sgd-s7: {state}"))
    row("running").wait_for(timeout=120_000)
    page.screenshot(path=str(artifacts / "dashboard-launch.png"), full_page=True)
    run = RunDir(runs / "tiny" / "sgd-s7")
    assert run.read_config().optim.name == "sgd" and run.store_path.is_file()
    page.get_by_role("button", name="Stop").click()
    row("interrupted").wait_for(timeout=60_000)
    assert run.read_status()["state"] == "interrupted"
    assert not errors, errors
    page.close()


@pytest.mark.parametrize(
    "lo, hi, expected",
    [
        (0.02, 0.35, [0.02, 0.05, 0.1, 0.2]),  # under two decades: 1-2-5, not crowded linear ticks
        (1e-6, 1e3, [1e-6, 1e-5, 1e-4, 1e-3, 0.01, 0.1, 1, 10, 100, 1000]),  # many decades: decades only
        (5e-4, 2e-3, [5e-4, 1e-3, 2e-3]),
        (3, 7, [3, 4, 5, 6, 7]),  # within a decade: 1..9 mantissas
        (0.999, 1.001, [0.999, 0.9995, 1, 1.0005, 1.001]),  # a narrow range: evenly spaced
        (0, 1, []),  # no log axis over zero
    ],
)
def test_log_axis_ticks_in_the_browser(browser, lo, hi, expected):
    """The 1-2-5 log ticker's JavaScript (fnodiag.plots.layers.LOG_TICKS_JS) as Chromium runs it."""
    from fnodiag.plots.layers import LOG_TICKS_JS

    page = browser.new_page()
    try:
        ticks = page.evaluate(
            "([code, lo, hi]) => new Function('cb_data', code)({start: hi, end: lo})", [LOG_TICKS_JS, lo, hi]
        )
    finally:
        page.close()
    assert ticks == pytest.approx(expected, rel=1e-9)


def test_log_axis_labels_in_the_browser(browser):
    from fnodiag.plots.layers import LOG_LABEL_JS

    page = browser.new_page()
    try:
        labels = page.evaluate(
            "([code, ticks]) => ticks.map(t => new Function('tick', code)(t))",
            [LOG_LABEL_JS, [5e-4, 1e-3, 0.02, 0.30000000000000004, 1, 1000, 1e-7]],
        )
    finally:
        page.close()
    assert labels == ["0.0005", "0.001", "0.02", "0.3", "1", "1000", "1e-7"]
