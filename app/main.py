"""``panel serve app``: the fnodiag dashboard over a runs folder.

Runs folder: ``--args --runs DIR``, else ``$FNODIAG_RUNS``, else ``./runs``. Sessions from other
hosts are refused unless ``FNODIAG_ALLOW_REMOTE=1`` (serve with ``--address 127.0.0.1`` as well).
"""
from __future__ import annotations

import argparse
import ipaddress
import os
import sys
from pathlib import Path

import panel as pn

from app.dashboard import TICK_MS, Dashboard


def runs_folder(argv: list[str]) -> Path:
    """The runs folder from ``--runs`` (``panel serve app --args --runs DIR``), $FNODIAG_RUNS or ./runs."""
    parser = argparse.ArgumentParser(prog="panel serve app --args")
    parser.add_argument("--runs", default=os.environ.get("FNODIAG_RUNS", "runs"), help="runs folder (default: ./runs)")
    args, _ = parser.parse_known_args(argv)
    return Path(args.runs).expanduser().resolve()


def local_request() -> bool:
    """True when the session's browser connects from this machine (or remote access is allowed)."""
    if os.environ.get("FNODIAG_ALLOW_REMOTE") == "1":
        return True
    ctx = getattr(pn.state.curdoc, "session_context", None)
    request = getattr(ctx, "request", None)
    ip = getattr(request, "remote_ip", None)
    if not ip:
        return True
    try:
        return ipaddress.ip_address(ip).is_loopback
    except ValueError:
        return False


pn.extension("tabulator", notifications=False)

if not local_request():
    pn.pane.Markdown("This dashboard only serves this machine (set FNODIAG_ALLOW_REMOTE=1 to allow others).").servable()
else:
    dashboard = Dashboard(runs_folder(sys.argv[1:]))
    dashboard.layout().servable(title="fnodiag dashboard")
    callback = pn.state.add_periodic_callback(dashboard.tick, period=TICK_MS)
    pn.state.on_session_destroyed(lambda _ctx: callback.stop())
