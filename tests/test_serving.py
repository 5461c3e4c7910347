"""Safe sharing without a browser: which ``panel serve`` command lines are refused (parsed as Panel parses
them, and by a real ``panel serve app`` / ``fnodiag serve``), ``fnodiag serve``'s Panel options, and the Launch
tab's server-side check (a refused session starts nothing; ``--read-only`` has no Launch tab)."""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys

import pytest
from conftest import REPO

from fnodiag.cli import build_parser, main
from fnodiag.dashboard.server import panel_serve_argv, parse_serve_argv, refuse_unsafe_serving
from fnodiag.dashboard.serving import PANEL_SERVE_OPTIONS, is_loopback_host, refusal, serve_options

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
        (["--addr", "0.0.0.0"], {}, True),  # Panel's argparse resolves abbreviations (issue 26 item 7)
        (["--addre=0.0.0.0"], {}, True),
        (["--anaconda-project-address", "0.0.0.0"], {}, True),  # Panel maps it to --address
        (["--allow-websocket", "lab-host:5006"], {}, True),
        (["--addr", "0.0.0.0", "--basic-a", "pw", "--cookie-secret", "s"], {}, False),
    ],
)
def test_remote_access_without_auth_is_refused(argv, env, refused):
    message = refusal(parse_serve_argv([*APP, *argv]), env)
    assert (message is not None) == refused
    if refused:
        assert "\n" not in message and "--basic-auth" in message and "--oauth-provider" in message


def test_options_and_loopback_hosts():
    o = serve_options(
        parse_serve_argv([*APP, "--allow-websocket-origin", "a:1", "--allow-websocket-origin", "b:2"]),
        {"BOKEH_ALLOW_WS_ORIGIN": "c:3"},
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


def test_fnodiag_serve_options_are_spelled_and_shaped_as_panel_serve_has_them():
    panel = argparse.ArgumentParser(add_help=False)
    from panel.command.serve import Serve

    Serve(parser=panel)
    actions = {o: a for a in panel._actions for o in a.option_strings}
    shape = {"switch": "_StoreTrueAction", "append": "_AppendAction", "value": "_StoreAction", "list": "_StoreAction"}
    for flag, kind, help_text in PANEL_SERVE_OPTIONS:
        assert flag in actions, flag
        assert type(actions[flag]).__name__ == shape[kind], flag
        assert (actions[flag].nargs == "*") == (kind == "list"), flag
        assert help_text
    assert {"--basic-auth", "--cookie-secret", "--oauth-provider", "--oauth-key", "--oauth-secret"} <= set(actions)


def test_fnodiag_serve_hands_its_options_to_panel_serve(tmp_path):
    args = build_parser().parse_args(
        [
            "serve",
            str(tmp_path),
            "--port",
            "0",
            "--addr",  # abbreviations resolve here too, before Panel sees the command line
            "0.0.0.0",
            "--basic-auth",
            "pw",
            "--cookie-secret",
            "s3",
            "--oauth-guest-endpoints",
            "/a",
            "/b",
            "--oauth-optional",
            "--allow-websocket-origin",
            "lab:5006",
            "--read-only",
        ]
    )
    argv = panel_serve_argv(args.runs, args)
    assert argv[:3] == ["panel", "serve", str(REPO / "fnodiag" / "dashboard" / "app")]
    assert argv[argv.index("--args") :] == ["--args", "--runs", str(tmp_path.resolve()), "--read-only"]
    got = parse_serve_argv(argv)
    assert (got.address, got.port, got.basic_auth, got.cookie_secret) == ("0.0.0.0", 0, "pw", "s3")
    assert got.oauth_guest_endpoints == ["/a", "/b"] and got.oauth_optional and not got.oauth_refresh_tokens
    assert got.allow_websocket_origin == ["lab:5006"] and got.oauth_provider is None
    assert refusal(got, {}) is None  # logged in
    plain = parse_serve_argv(panel_serve_argv(tmp_path, build_parser().parse_args(["serve", str(tmp_path)])))
    assert plain.address == "127.0.0.1" and plain.port == 5006  # this machine by default
    assert plain.allow_websocket_origin == ["localhost:5006", "127.0.0.1:5006"] and refusal(plain, {}) is None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.parametrize(
    "command",
    [
        [sys.executable, "-m", "panel", "serve", "app", "--addr", "0.0.0.0"],  # issue 26 item 7
        [sys.executable, "-m", "fnodiag.cli", "serve", "--addr", "0.0.0.0"],
    ],
    ids=["panel-serve-addr", "fnodiag-serve-addr"],
)
def test_a_real_server_open_to_other_machines_without_auth_refuses_to_start(command, tmp_path):
    """The guard reads the arguments the server is built from: abbreviations and aliases do not get around it."""
    runs = tmp_path / "runs"
    runs.mkdir()
    app_args = ["--args", "--runs", str(runs)] if "panel" in command else [str(runs)]
    env = {k: v for k, v in os.environ.items() if k != "FNODIAG_ALLOW_REMOTE"}
    proc = subprocess.Popen(
        [*command, "--port", str(_free_port()), *app_args], cwd=REPO, stderr=subprocess.PIPE, text=True, env=env
    )
    try:
        lines = []
        for line in proc.stderr:  # ends when the process exits; a server that starts is a failure, not a wait
            lines.append(line.rstrip())
            assert "app running at" not in line, "the server started: " + "\n".join(lines)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    lines = [x for x in lines if x.strip()]
    assert proc.returncode == 2, lines
    assert len(lines) == 1 and "refusing to serve other machines (--address 0.0.0.0)" in lines[0], lines
    assert "--basic-auth" in lines[0] and "--oauth-provider" in lines[0]


def test_fnodiag_serve_bad_input_is_one_line(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    assert main(["serve", str(tmp_path / "file")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is not a folder" in err, err
    assert main(["serve", str(tmp_path), "--port", "70000"]) == 2
    assert "--port 70000 must be between 0 and 65535" in capsys.readouterr().err


def test_the_guard_outside_a_serve_command_parses_the_command_line(capsys):
    """Without Bokeh's serve command on the stack, the guard parses ``sys.orig_argv`` with Panel's parser."""
    with pytest.raises(SystemExit) as exit_:
        refuse_unsafe_serving(env={}, argv=["/venv/bin/panel", "serve", "app", "--addr", "0.0.0.0"])
    assert exit_.value.code == 2 and "refusing to serve other machines (--address 0.0.0.0)" in capsys.readouterr().err
    assert refuse_unsafe_serving(env={}, argv=["panel", "serve", "app", "--address", "127.0.0.1"]) is None
    assert refuse_unsafe_serving(env={}, argv=["python", "-m", "pytest", "--address", "0.0.0.0"]) is None  # no serve
    with pytest.raises(SystemExit):  # what cannot be read refuses
        refuse_unsafe_serving(env={}, argv=["panel", "serve", "app", "--port", "not-a-port"])
    assert "cannot read the server's arguments" in capsys.readouterr().err
