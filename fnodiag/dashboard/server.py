"""Starting the dashboard's server: ``fnodiag serve``, and the guard that runs before any server listens.

``fnodiag serve`` runs Panel's own ``serve`` command, in this process, on the directory app shipped
in the package (:data:`APP_DIR`, :mod:`fnodiag.dashboard.app`) rather than building a server through
``panel.serve``: every Panel option it passes on (authentication, cookies, OAuth, templates, their
environment variables) is then parsed and applied by Panel exactly as ``panel serve`` documents it,
and both entry points, ``panel serve app`` in a checkout and ``fnodiag serve`` from a wheel, build
the same server and go through the same guard (the app's ``app_hooks.py``).

The guard (:func:`refuse_unsafe_serving`) reads the arguments the server is really built from: the
``argparse.Namespace`` that Bokeh's ``serve`` command parsed, found on the call stack of the command
that runs the hooks (Bokeh builds the applications, and so runs the hooks, before it binds the
address it reads from that same object). Abbreviations such as ``--addr`` (which argparse resolves)
or Panel's ``--anaconda-project-address`` therefore cannot get around it. Should that object not
be found while a ``serve`` command line is running, the command line is parsed with Panel's own
parser instead (:func:`parse_serve_argv`), which resolves the same abbreviations.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from fnodiag.dashboard.serving import is_loopback_host, panel_option_argv, refusal

__all__ = ["APP_DIR", "parse_serve_argv", "server_args", "refuse_unsafe_serving", "panel_serve_argv", "serve"]

# The directory app fnodiag serve hands to Panel (URL /app). Not imported here: the hooks that import this
# module refuse an unsafe server before the dashboard's plotting stack is loaded.
APP_DIR = Path(__file__).resolve().parent / "app"


def parse_serve_argv(argv: Sequence[str]) -> argparse.Namespace:
    """A ``panel serve`` command line parsed as Panel parses it (its parser, abbreviations resolved).

    Parameters
    ----------
    argv : the whole command line (e.g. ``sys.orig_argv``): everything after its first ``serve`` is parsed.
        A command line without ``serve`` gives every option its default.

    Returns
    -------
    argparse.Namespace with Panel's ``serve`` destinations (``address``, ``allow_websocket_origin``, ...).
    """
    # Panel's command line (2 s to import) is loaded only by a serve command, not by every `fnodiag` command
    from panel.command import transform_cmds
    from panel.command.serve import Serve

    argv = [str(a) for a in argv]
    tail = argv[argv.index("serve") + 1 :] if "serve" in argv else []
    parser = argparse.ArgumentParser(prog="panel serve", add_help=False, exit_on_error=False)
    Serve(parser=parser)
    args, _ = parser.parse_known_args(transform_cmds(tail))
    return args


def server_args() -> argparse.Namespace | None:
    """The arguments the running ``panel serve`` / ``bokeh serve`` command builds its server from, or None.

    Found on the call stack: the ``invoke(args)`` frame of Bokeh's ``serve`` command (Panel's
    subclasses it), which builds the applications (running their hooks) and then the server from
    ``args``. None outside such a command (a server built in Python).
    """
    from bokeh.command.subcommands.serve import Serve as BokehServe  # see parse_serve_argv

    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code.co_name == "invoke" and isinstance(frame.f_locals.get("self"), BokehServe):
            args = frame.f_locals.get("args")
            if isinstance(args, argparse.Namespace):
                return args
        frame = frame.f_back
    return None


def refuse_unsafe_serving(env: Mapping[str, str] | None = None, argv: Sequence[str] | None = None) -> None:
    """Exit with status 2 and one line on stderr when this server would serve other machines unauthenticated.

    What the directory app's ``app_hooks.py`` runs. An exception there would only be logged by Bokeh
    (and the server would start), so every failure to read the arguments refuses too.

    Parameters
    ----------
    env : environment (default ``os.environ``)
    argv : the command line to parse when :func:`server_args` finds nothing (default ``sys.orig_argv``)
    """
    env = os.environ if env is None else env
    argv = list(getattr(sys, "orig_argv", sys.argv) if argv is None else argv)
    try:
        args = server_args()
        if args is None and "serve" not in argv:
            return  # not a serve command: a server built in Python chose its own address
        message = refusal(args if args is not None else parse_serve_argv(argv), env)
    except Exception as exc:  # anything unreadable refuses (an escaping error would let Bokeh start)
        message = f"fnodiag dashboard: refusing to serve: cannot read the server's arguments ({exc})"
    if message:
        print(message, file=sys.stderr, flush=True)
        raise SystemExit(2)


def panel_serve_argv(runs: str | Path, args) -> list[str]:
    """The ``panel serve`` command line ``fnodiag serve`` runs for its parsed ``args``.

    Parameters
    ----------
    runs : the runs folder
    args : parsed ``fnodiag serve`` arguments: ``port``, ``address``, ``read_only`` and the
        :data:`fnodiag.dashboard.serving.PANEL_SERVE_OPTIONS`.

    On a loopback address without ``--allow-websocket-origin``, pages opened as ``localhost:PORT`` and
    as ``127.0.0.1:PORT`` are both accepted (Bokeh alone accepts the first only).
    """
    app_args = ["--runs", str(Path(runs).expanduser().resolve()), *(["--read-only"] if args.read_only else [])]
    origins = []
    if not args.allow_websocket_origin and args.port and is_loopback_host(args.address):
        # Bokeh's default accepts localhost:PORT only; the URL it prints names the address (127.0.0.1)
        origins = [
            "--allow-websocket-origin",
            f"localhost:{args.port}",
            "--allow-websocket-origin",
            f"127.0.0.1:{args.port}",
        ]
    return [
        "panel",
        "serve",
        str(APP_DIR),
        "--port",
        str(args.port),
        "--address",
        args.address,
        *origins,
        *panel_option_argv(args),
        "--args",
        *app_args,
    ]


def serve(runs: str | Path, args) -> None:
    """Serve the dashboard over ``runs`` until interrupted: Panel's ``serve`` command on :data:`APP_DIR`.

    Raises SystemExit(2) (one line on stderr) when the settings open the server to other machines
    without authentication.
    """
    from panel.command import main as panel_main  # see parse_serve_argv

    argv = panel_serve_argv(runs, args)
    saved = sys.argv
    sys.argv = argv
    try:
        panel_main()
    finally:
        sys.argv = saved
