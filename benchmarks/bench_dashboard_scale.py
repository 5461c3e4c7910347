"""The dashboard at scale in a real Chromium: many runs listed, many runs drawn, many pages live, sessions released.

Each figure is printed against its target (issue 27), measured on this machine over folders written by
``benchmarks/make_runs.py`` (no training), except the live phase, which trains a tiny run:

* **list**: ``panel serve app`` over N single runs (default 1000); seconds from navigation to the runs
  table showing its rows and the count line ("1000 runs"), in the page's own clock (the first animation
  frame that has both, :func:`first_content_js`; Playwright's own wait sees them later, once the page's
  main thread is free of the sidebar, tabs and plots that follow): the first page after the server is up
  (its rows read while the server starts) and later pages (median); Bokeh models in the page; then a
  run written into the folder with the page open: seconds until the page lists it; server memory per
  open page (``--sessions`` pages open, RSS after minus before, per page). Targets: first content <= 1.5 s,
  a new run shown within 2 s.
* **chosen**: a sweep of 10 arms x 5 seeds, 50 layers x 2,000 steps each; ticking the table's
  select-all box chooses all 50 runs: seconds until the Overview holds every point of their loss
  curves and has painted, then until the Activations tab has drawn. Target <= 2 s.
* **live**: 8 pages open beside a ``fnodiag train`` run (capture every step): seconds from a
  committed store row to more points in each page, p50 / p90 over every page and row. Target p90 <=
  0.5 s. Server memory per open page: the server's RSS with the pages open minus before, / 8.
* **cycles**: the app served in this process; 20 times a page is opened (first content) and closed;
  then the sessions left, their periodic callbacks still running, dashboards not garbage-collected,
  store readers left open, and the RSS growth over the cycles. Target: nothing left.

Usage: ``python benchmarks/bench_dashboard_scale.py [--phases list,chosen,live,cycles] [--runs 1000]``
(needs Playwright and Chromium: ``FNODIAG_CHROMIUM``, default ``/usr/bin/chromium``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import weakref
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_runs import Templates, config_for, make_folder, make_sweep, no_fsync, write_run  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = os.environ.get("FNODIAG_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [  # as tests/conftest.py
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
POINTS_JS = """() => { let n = 0; for (const doc of (window.Bokeh ? Bokeh.documents : []))
  for (const m of doc.all_models) if (typeof m.get_length === 'function') n += (m.get_length() || 0); return n; }"""
MODELS_JS = """() => { let n = 0;
  for (const d of (window.Bokeh ? Bokeh.documents : [])) n += d.all_models.size; return n; }"""
PAINTED_JS = """() => new Promise(done => requestAnimationFrame(() => requestAnimationFrame(() => done(true))))"""
TRAIN = [
    *("--N", "32", "--object-size", "64", "--blocks", "2", "--width", "4", "--modes", "4", "--batch-size", "8"),
    *("--capture-every", "1", "--accelerator", "cpu", "--no-progress"),
]


def report(what: str, value: float, target: float | None, unit: str = "s", note: str = "") -> None:
    verdict = "" if target is None else ("  met" if value <= target else "  NOT met")
    goal = "" if target is None else f"   target <= {target:g} {unit}"
    print(f"{what}: {value:.2f} {unit}{goal}{verdict}{('   ' + note) if note else ''}", flush=True)


def wait_for(predicate, timeout: float, what: str, step: float = 0.02):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


@contextlib.contextmanager
def serve(root: Path):
    """``panel serve app`` over ``root`` (as the browser tests serve it); yields ``(url, process)`` once it answers."""
    port = free_port()
    cmd = [
        *(sys.executable, "-m", "panel", "serve", str(REPO / "app"), "--port", str(port)),
        *("--address", "127.0.0.1", "--allow-websocket-origin", f"127.0.0.1:{port}", "--liveness"),
        *("--check-unused-sessions", "1000", "--unused-session-lifetime", "1000", "--args", "--runs", str(root)),
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def up():
        try:
            return urllib.request.urlopen(f"http://127.0.0.1:{port}/liveness", timeout=2).status == 200
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(proc.stderr.read().decode()[-3000:]) from None
            return False

    try:
        wait_for(up, 180, "panel serve to answer", step=0.2)
        yield f"http://127.0.0.1:{port}/app", proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def first_content_js(runs: int) -> str:
    """A page script that sets ``window.__firstContent`` to the page's clock (ms from navigation) at the first
    animation frame whose document holds the count line ("<runs> runs") and a row of the runs table (Bokeh's
    views live in shadow roots, searched every frame; the search itself slows the page a little)."""
    return (
        "(() => {\n"
        "  const found = (test) => { const roots = [document];\n"
        "    while (roots.length) { const r = roots.pop();\n"
        "      for (const el of r.querySelectorAll('*')) {\n"
        "        if (el.shadowRoot) roots.push(el.shadowRoot);\n"
        "        if (test(el)) return true; } }\n"
        "    return false; };\n"
        f"  const text = '{runs} runs';\n"
        "  const frame = () => {\n"
        "    if (found(el => el.classList.contains('tabulator-row'))\n"
        "        && found(el => !el.children.length && el.textContent.includes(text)))\n"
        "      window.__firstContent = performance.now();\n"
        "    else requestAnimationFrame(frame); };\n"
        "  requestAnimationFrame(frame); })();"
    )


def first_content(
    context, url: str, runs: int, clock: list | None = None, errors: list | None = None
) -> tuple[float, object]:
    """Seconds from navigation to the runs table's rows and its "<runs> runs" count line, as Playwright sees them
    (it looks when the page's main thread is free); returns ``(s, page)``. With ``clock`` (a list), the same moment
    in the page's own clock (:func:`first_content_js`) is appended to it, in seconds; with ``errors`` (a list),
    the page's uncaught errors from its first script on are appended to it."""
    page = context.new_page()
    if errors is not None:
        page.on("pageerror", lambda e: errors.append(str(e)))
    if clock is not None:
        page.add_init_script(first_content_js(runs))
    t0 = time.perf_counter()
    page.goto(url, wait_until="commit", timeout=300_000)
    page.locator(f"text=/{runs} runs/").first.wait_for(timeout=300_000)
    page.locator(".tabulator-row").first.wait_for(timeout=300_000)
    seen = time.perf_counter() - t0
    if clock is not None:
        page.wait_for_function("() => window.__firstContent !== undefined", timeout=60_000)
        clock.append(page.evaluate("window.__firstContent") / 1e3)
    return seen, page


def phase_list(context, tmp: Path, n: int, sessions: int = 4) -> None:
    root = tmp / "many"
    t0 = time.perf_counter()
    make_folder(root, n)
    print(f"\n[list] {n} single runs written in {time.perf_counter() - t0:.1f} s", flush=True)
    with serve(root) as (url, proc):
        clock: list[float] = []
        cold, page = first_content(context, url, n, clock)
        models = page.evaluate(MODELS_JS)
        page.close()
        what = f"first content, {n} runs, first page after the server is up, in the page's clock"
        report(what, clock[0], 1.5, note=f"(Playwright saw it at {cold:.2f} s)")
        warm = []
        for _ in range(5):
            s, page = first_content(context, url, n, clock)
            warm.append(s)
            page.close()
        report(
            f"first content, {n} runs, later pages (median of 5), in the page's clock",
            statistics.median(clock[1:]),
            1.5,
            note=f"(each: {' '.join(f'{c:.2f}' for c in clock[1:])} s; Playwright saw them at median "
            f"{statistics.median(warm):.2f} s, when the page's main thread was free)",
        )
        print(f"Bokeh models in the first page: {models} (the issue measured 3,877 at 300 runs)")
        page = first_content(context, url, n)[1]
        page.wait_for_timeout(1500)  # the page has settled
        with tempfile.TemporaryDirectory() as tpl, no_fsync():
            t0 = time.perf_counter()
            write_run(root / "zz-new-run", config_for(n), Templates(Path(tpl), 13, 100), k=n)
            made = time.perf_counter() - t0
        page.locator(f"text=/{n + 1} runs/").first.wait_for(timeout=60_000)
        shown = time.perf_counter() - t0
        report("a run written after the page opened, listed", shown, 2.0, note=f"(writing it took {made:.2f} s)")
        page.close()
        memory_per_session(context, url, n + 1, proc.pid, sessions)


def memory_per_session(context, url: str, n: int, pid: int, sessions: int) -> None:
    """Server RSS with ``sessions`` pages over the ``n`` runs open, minus before, per page (runs table and the
    Overview's curves of the default runs drawn in each)."""
    time.sleep(3)
    base = rss_mb(pid)
    pages = []
    for _ in range(sessions):
        page = first_content(context, url, n)[1]
        wait_for(lambda page=page: page.evaluate(POINTS_JS) > 0, 300, "the Overview drawn")
        pages.append(page)
    time.sleep(3)
    per = (rss_mb(pid) - base) / sessions
    print(f"server memory per open page ({n} runs listed): {per:.0f} MB (RSS {base:.0f} MB before {sessions} pages)")
    for page in pages:
        page.close()


def phase_chosen(context, tmp: Path, arms: int, seeds: int, layers: int, steps: int) -> None:
    root = tmp / "sweep"
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tpl, no_fsync():
        make_sweep(
            root / "big", "big", arms, seeds, Templates(Path(tpl), layers, steps, variants=2)
        )  # 2 curves a state: writing is slow
    n = arms * seeds
    print(f"\n[chosen] sweep of {n} runs x {layers} layers x {steps} steps written in {time.perf_counter() - t0:.1f} s")
    with serve(root) as (url, _):
        first_content(context, url, n)  # the server's first page (imports, the plotting stack warmed)
        s, page = first_content(context, url, n)
        page.locator(".bk-tab:has-text('Overview')").first.wait_for()
        wait_for(lambda: page.evaluate(POINTS_JS) > 0, 120, "the default runs drawn")
        page.wait_for_timeout(2000)
        before = page.evaluate(POINTS_JS)
        expected = before + (n - 4) * steps  # at least every train-loss point of the 46 more runs
        box = page.locator(".tabulator-col .tabulator-col-content input[type=checkbox]").first
        t0 = time.perf_counter()
        box.click()
        wait_for(lambda: page.evaluate(POINTS_JS) >= expected, 300, f"{n} runs' curves")
        page.evaluate(PAINTED_JS)
        drawn = time.perf_counter() - t0
        report(f"{n} runs chosen (select all) until the Overview's curves are drawn", drawn, 2.0)
        points = page.evaluate(POINTS_JS)
        t0 = time.perf_counter()
        page.locator(".bk-tab:has-text('Activations')").first.click()
        wait_for(lambda: page.evaluate(POINTS_JS) > points + 4 * layers * 300, 300, "the Activations tab drawn")
        page.evaluate(PAINTED_JS)
        report(
            f"then the Activations tab ({layers} layers x {steps} steps, 4 of {n} runs a page) drawn",
            time.perf_counter() - t0,
            2.0,
        )
        page.close()


def phase_live(context, tmp: Path, sessions: int) -> None:
    from fnodiag.runs import RunDir, StoreReader

    root = tmp / "live"
    make_folder(root, 1)
    print(f"\n[live] {sessions} pages beside a training run (capture every step)", flush=True)
    cmd = [sys.executable, "-m", "fnodiag.cli", "train", *TRAIN, "--epochs", "400", "--out", str(root)]
    cmd += ["--name", "training", "--cache-dir", str(tmp / "cache")]
    train = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**os.environ})
    run = RunDir(root / "training")
    pages = []
    try:
        wait_for(lambda: run.store_path.is_file() and (run.read_status() or {}).get("state") == "running", 300, "run")
        with serve(root) as (url, proc):
            first_content(context, url, 2)[1].close()
            time.sleep(3)
            base = rss_mb(proc.pid)
            for _ in range(sessions):
                pages.append(first_content(context, url, 2)[1])
            for p in pages:
                wait_for(lambda p=p: p.evaluate(POINTS_JS) > 0, 120, "plots in every page")
            time.sleep(3)
            per_session = (rss_mb(proc.pid) - base) / sessions
            reader, latencies = StoreReader(run.store_path), []
            seen = len(reader.scalars("train/loss"))
            deadline = time.time() + 90
            while train.poll() is None and time.time() < deadline and len(latencies) < 12 * sessions:
                n = len(reader.scalars("train/loss"))
                if n > seen:
                    t0, seen = time.time(), n
                    before = [p.evaluate(POINTS_JS) for p in pages]
                    waiting = set(range(sessions))
                    while waiting and time.time() - t0 < 10:
                        for k in list(waiting):
                            if pages[k].evaluate(POINTS_JS) > before[k]:
                                latencies.append(time.time() - t0)
                                waiting.discard(k)
                    latencies += [10.0] * len(waiting)  # never came within 10 s
                time.sleep(0.02)
            reader.close()
            lat = np.array(latencies)
            report(
                f"live latency p90 over {sessions} pages ({len(lat)} page updates)",
                float(np.percentile(lat, 90)),
                0.5,
                note=f"p50 {np.percentile(lat, 50):.2f} s, max {lat.max():.2f} s",
            )
            print(f"server memory per open page: {per_session:.0f} MB (RSS {base:.0f} MB before the pages)")
    finally:
        for p in pages:
            p.close()
        train.terminate()
        train.wait(timeout=60)


def phase_cycles(context, tmp: Path, cycles: int) -> None:
    """The app served in this process (a Bokeh server thread), so that sessions and callbacks can be counted."""
    import panel as pn
    from panel.io.application import build_single_handler_application
    from panel.io.server import get_server
    from tornado.ioloop import IOLoop

    import fnodiag.dashboard.app as app_module
    from fnodiag.dashboard import live
    from fnodiag.dashboard.dashboard import Dashboard

    root = tmp / "cycles"
    make_folder(root, 20)
    made, readers = weakref.WeakSet(), weakref.WeakSet()

    class Counted(Dashboard):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            made.add(self)

    original_reader = live.Tail.reader.fget

    def counted_reader(self):
        r = original_reader(self)
        if r is not None:
            readers.add(r)
        return r

    app_module.Dashboard = Counted
    live.Tail.reader = property(counted_reader)
    app = build_single_handler_application(REPO / "app", ["--runs", str(root)])
    box, ready = {}, threading.Event()

    def run():
        asyncio.set_event_loop(asyncio.new_event_loop())
        loop = IOLoop.current()
        server = get_server(
            {"app": app},
            port=0,
            address="127.0.0.1",
            loop=loop,
            start=False,
            check_unused_sessions_milliseconds=500,
            unused_session_lifetime_milliseconds=500,
            websocket_origin=["*"],
        )
        box.update(server=server, loop=loop)
        server.start()
        ready.set()
        loop.start()

    threading.Thread(target=run, daemon=True).start()
    ready.wait(120)
    url = f"http://127.0.0.1:{box['server'].port}/app"
    print(f"\n[cycles] {cycles} pages opened and closed (server in this process)", flush=True)
    try:
        rss = []
        for k in range(cycles):
            page = first_content(context, url, 20)[1]
            wait_for(lambda page=page: page.evaluate(POINTS_JS) > 0, 120, "plots")
            page.close()
            if k in (4, cycles - 1):
                wait_for(lambda: not box["server"]._tornado._applications["/app"].sessions, 60, "sessions discarded")
                gc.collect()
                rss.append(rss_mb(os.getpid()))
        wait_for(lambda: not box["server"]._tornado._applications["/app"].sessions, 60, "sessions discarded")
        gc.collect()
        running = sum(1 for d in made if d.callback is not None and d.callback.running)
        open_readers = sum(1 for r in readers if getattr(r, "_conn", None) is not None)
        left = len(made)
        print(
            f"after {cycles} open/close cycles: {left} dashboards not garbage-collected, {running} periodic "
            f"callbacks running, {open_readers} store readers open   target 0 / 0 / 0"
            f"  {'met' if left == running == open_readers == 0 else 'NOT met'}"
        )
        print(f"RSS growth from cycle 5 to cycle {cycles}: {rss[1] - rss[0]:+.0f} MB (this process: {rss[1]:.0f} MB)")
        pn.state.kill_all_servers()
    finally:
        box["loop"].add_callback(lambda: (box["server"].stop(), box["loop"].stop()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--phases", default="list,chosen,live,cycles")
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--arms", type=int, default=10)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--layers", type=int, default=50)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--sessions", type=int, default=8)
    parser.add_argument("--cycles", type=int, default=20)
    args = parser.parse_args()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        print("bench_dashboard_scale.py: needs Playwright (pip install playwright); nothing measured")
        return
    if not Path(CHROMIUM).exists():
        print(f"bench_dashboard_scale.py: no Chromium at {CHROMIUM} (set FNODIAG_CHROMIUM); nothing measured")
        return
    phases = args.phases.split(",")
    print(f"machine: {os.cpu_count()} CPU cores, load average {os.getloadavg()[0]:.1f}; Chromium {CHROMIUM}")
    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as p:
        tmp = Path(tmp)
        context = p.chromium.launch_persistent_context(
            str(tmp / "profile"),
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1600, "height": 1100},
        )
        for blank in context.pages:
            blank.close()
        try:
            if "list" in phases:
                phase_list(context, tmp, args.runs, args.sessions)
            if "chosen" in phases:
                phase_chosen(context, tmp, args.arms, args.seeds, args.layers, args.steps)
            if "live" in phases:
                phase_live(context, tmp, args.sessions)
            if "cycles" in phases:
                phase_cycles(context, tmp, args.cycles)
        finally:
            context.close()


if __name__ == "__main__":
    main()
