"""Safe sharing without a browser: which ``panel serve`` command lines are refused, and the Launch tab's
server-side check (a refused session starts nothing; ``--read-only`` has no Launch tab)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from fnodiag.dashboard.serving import is_loopback_host, refusal, serve_options

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the `app` package of the checkout, as test_app

APP = ["panel", "serve", "app"]


@pytest.mark.parametrize(
    "argv, env, refused",
    [
        ([], {}, False),  # Bokeh's default: localhost origins
        (["--address", "127.0.0.1", "--allow-websocket-origin", "localhost:5006"], {}, False),
        (["--address", "::1", "--allow-websocket-origin", "[::1]:5006"], {}, False),
        (["--address", "0.0.0.0"], {}, True),
        (["--address=0.0.0.0"], {}, True),
        (["--address", "192.168.1.7"], {}, True),
        (["--address", ""], {}, True),  # every interface
        (["--allow-websocket-origin", "lab-host.example.org:5006"], {}, True),
        (["--allow-websocket-origin", "*"], {}, True),
        ([], {"BOKEH_ALLOW_WS_ORIGIN": "localhost:5006,10.0.0.3:5006"}, True),
        (["--address", "0.0.0.0", "--basic-auth", "pw", "--cookie-secret", "s"], {}, False),
        (["--address", "0.0.0.0", "--oauth-provider", "github"], {}, False),
        (["--address", "0.0.0.0"], {"PANEL_BASIC_AUTH": "users.json"}, False),
        (["--address", "0.0.0.0"], {"FNODIAG_ALLOW_REMOTE": "1"}, False),  # auth done elsewhere, on purpose
        (["--address", "127.0.0.1", "--args", "--address", "0.0.0.0"], {}, False),  # the app's own args do not count
    ],
)
def test_remote_access_without_auth_is_refused(argv, env, refused):
    message = refusal([*APP, *argv], env)
    assert (message is not None) == refused
    if refused:
        assert "\n" not in message and "--basic-auth" in message and "--oauth-provider" in message


def test_options_and_loopback_hosts():
    o = serve_options(
        [*APP, "--allow-websocket-origin", "a:1", "--allow-websocket-origin", "b:2"], {"BOKEH_ALLOW_WS_ORIGIN": "c:3"}
    )
    assert o["origins"] == ["a:1", "b:2", "c:3"] and o["address"] is None and not o["basic_auth"]
    assert [
        is_loopback_host(h)
        for h in ("localhost:5006", "127.0.0.2", "[::1]:80", "::1", "10.1.2.3:5006", "localhost.evil.org")
    ] == [True, True, True, True, False, False]


def test_start_and_stop_are_checked_when_clicked(tmp_path):
    from fnodiag.dashboard.dashboard import Dashboard
    from fnodiag.dashboard.launch import DEMO_ARGS

    allowed = {"yes": False}
    d = Dashboard(tmp_path / "runs", may_control=lambda: allowed["yes"])
    assert d.launch.start(DEMO_ARGS, name="nope") is None and "Refused" in d.launch.feedback.object
    assert d.launch.start_arm() is None and not d.launch.launcher.runs
    assert not (tmp_path / "runs" / "nope").exists()
    assert d.launch.stop("anything") is False
    ro = Dashboard(tmp_path / "runs", read_only=True)
    assert "Launch" not in ro.tabs._names and "Launch" in d.tabs._names and len(ro.tabs) == len(d.tabs) - 1
    assert ro.launch.start(DEMO_ARGS, name="nope") is None and not (tmp_path / "runs" / "nope").exists()
