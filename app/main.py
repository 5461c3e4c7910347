"""``panel serve app``: the fnodiag dashboard over a runs folder.

Runs folder: ``--args --runs DIR``, else ``$FNODIAG_RUNS``, else ``./runs``; ``--args --read-only``
switches the Launch tab off. Serving other machines needs Panel's ``--basic-auth`` or
``--oauth-provider`` (``app_hooks.py`` refuses to start otherwise). A session from another host is
served when it is logged in (or ``FNODIAG_ALLOW_REMOTE=1``); only sessions from this machine or
logged-in users may start or stop runs, checked when the Start / Stop handlers run.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import sys
from pathlib import Path

import panel as pn

from fnodiag.dashboard.dashboard import TICK_MS, Dashboard


def runs_folder(argv: list[str]) -> Path:
    """The runs folder from ``--runs`` (``panel serve app --args --runs DIR``), $FNODIAG_RUNS or ./runs."""
    parser = argparse.ArgumentParser(prog="panel serve app --args")
    parser.add_argument("--runs", default=os.environ.get("FNODIAG_RUNS", "runs"), help="runs folder (default: ./runs)")
    args, _ = parser.parse_known_args(argv)
    return Path(args.runs).expanduser().resolve()


def read_only(argv: list[str]) -> bool:
    """``--read-only`` among the app's arguments (``panel serve app --args --runs DIR --read-only``)."""
    return "--read-only" in argv


def from_this_machine(doc=None, unknown: bool = True) -> bool:
    """True when the session (of ``doc``, default the current one) connects from a loopback address;
    ``unknown`` when its address is not known."""
    ctx = getattr(doc or pn.state.curdoc, "session_context", None)
    request = getattr(ctx, "request", None)
    ip = getattr(request, "remote_ip", None)
    if not ip:
        return unknown
    try:
        return ipaddress.ip_address(ip).is_loopback
    except ValueError:
        return False


def may_control_check(doc):
    """The Launch tab's server-side check for the session of ``doc``: called when Start / Stop runs, it
    allows a session from this machine or a logged-in user (``pn.state.user``), nothing else."""
    from panel.io.state import set_curdoc

    def check() -> bool:
        with set_curdoc(doc):
            return from_this_machine(doc, unknown=False) or bool(pn.state.user)

    return check


def local_request() -> bool:
    """True when the session may see the dashboard: from this machine, logged in, or remote access allowed."""
    return os.environ.get("FNODIAG_ALLOW_REMOTE") == "1" or from_this_machine() or bool(pn.state.user)


def panel_files_from_this_server(doc) -> None:
    """Point the session's component stylesheets at this server's copy of Panel's files from the start.

    Panel links them to its CDN until it renders the page, when it sets the document's ``dist_url``;
    models styled before that (a live tick, a second session building at the same time) can keep the
    CDN links, which a server without internet access cannot load (the browser test saw such loads
    fail). Panel's own ``Location`` sets it the same way.
    """
    from panel.io.resources import LOCAL_DIST

    if doc is not None and doc.session_context is not None:
        doc._template_variables.setdefault(
            "dist_url", f"{pn.state.rel_path}/{LOCAL_DIST}" if pn.state.rel_path else LOCAL_DIST
        )


pn.extension("tabulator", notifications=False)
panel_files_from_this_server(pn.state.curdoc)

if not local_request():
    pn.pane.Markdown(
        "This dashboard only serves this machine and logged-in users (serve it with Panel's "
        "--basic-auth or --oauth-provider)."
    ).servable()
else:
    dashboard = Dashboard(
        runs_folder(sys.argv[1:]), read_only=read_only(sys.argv[1:]), may_control=may_control_check(pn.state.curdoc)
    )
    dashboard.layout().servable(title="fnodiag dashboard")
    callback = pn.state.add_periodic_callback(dashboard.tick, period=TICK_MS)
    pn.state.on_session_destroyed(lambda _ctx: callback.stop())
