"""A served session's life: the checkout's ``app/`` directory app on a real Bokeh server in this process,
a page requested over HTTP, the session discarded, and its live tick stopped without an error (issue 26
item 11: every closed session logged ``name 'callback' is not defined``)."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import urllib.request

import panel as pn
import pytest
from conftest import REPO
from panel.io.application import build_single_handler_application
from panel.io.server import get_server
from tornado.ioloop import IOLoop

import fnodiag.dashboard.app as app_module
from fnodiag.dashboard.dashboard import TICK_MS, Dashboard


def wait_for(check, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


class CountingDashboard(Dashboard):
    """A Dashboard that counts its ticks and remembers its session's document."""

    made: list = []

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.doc = pn.state.curdoc
        self.calls = 0
        CountingDashboard.made.append(self)

    def tick(self) -> int:
        self.calls += 1
        return super().tick()

    @property
    def callback(self):
        return self._callback

    @callback.setter
    def callback(self, cb):  # whether the session's tick was running when the page set it (it may end soon after)
        self._callback = cb
        self.started = cb is not None and cb.running


@pytest.fixture
def served(tmp_path, monkeypatch):
    """``app/`` served on 127.0.0.1 by a Bokeh server in a thread (``--args --runs RUNS``); sessions without a
    connection are discarded 200 ms after their last use (checked every 100 ms). Yields the page URL."""
    monkeypatch.setattr(app_module, "Dashboard", CountingDashboard)
    CountingDashboard.made.clear()
    app = build_single_handler_application(REPO / "app", ["--runs", str(tmp_path / "runs")])  # as panel serve does
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
            check_unused_sessions_milliseconds=100,
            unused_session_lifetime_milliseconds=200,
        )
        box.update(server=server, loop=loop)
        server.start()
        ready.set()
        loop.start()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert ready.wait(60)
    try:
        yield f"http://127.0.0.1:{box['server'].port}/app"
    finally:
        box["loop"].add_callback(lambda: (box["server"].stop(), box["loop"].stop()))
        thread.join(30)


def test_a_discarded_session_stops_its_tick_without_an_error(served, caplog):
    caplog.set_level(logging.INFO)
    assert urllib.request.urlopen(served, timeout=120).status == 200
    wait_for(lambda: CountingDashboard.made, 60, "the page built (in the server's tick after the request)")
    (dash,) = CountingDashboard.made
    wait_for(lambda: dash.callback is not None, 60, "the page's tick set")
    assert dash.started and dash.callback.period == TICK_MS
    wait_for(lambda: dash.doc.session_context is None, 60, "the session to be discarded")
    wait_for(lambda: not dash.callback.running, 30, "the session's periodic callback to stop")
    after = dash.calls
    time.sleep(4 * TICK_MS / 1000)
    assert dash.calls == after  # no tick after the session is gone
    failed = [r.getMessage() for r in caplog.records if "on_session_destroyed" in r.getMessage() or r.exc_info]
    assert failed == []
