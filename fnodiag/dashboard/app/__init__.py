"""The served dashboard app: one browser session's page, and the folder Panel serves.

This folder is a Bokeh *directory app*: ``main.py`` (run by Bokeh for every session; it calls
:func:`session_page`) and ``app_hooks.py`` (run once before the server listens; it calls
:func:`fnodiag.dashboard.server.refuse_unsafe_serving`, then, once the server is up, :func:`warm`).
``panel serve app`` in a checkout serves the
top-level ``app/`` folder, whose two files make the same two calls; ``fnodiag serve`` serves this
folder (:data:`fnodiag.dashboard.server.APP_DIR`) from an installed package. Either way the page is at ``/app``.

The page's URL may name a run, tab, statistic, layer and step (``/app?run=...&tab=...&stat=...&layer=...&step=...``,
every finding's evidence link): :meth:`Dashboard.select` chooses them (:mod:`fnodiag.dashboard.evidence`).

App arguments (after ``--args``): ``--runs DIR`` (else ``$FNODIAG_RUNS``, else ``./runs``) and
``--read-only`` (no Launch tab). A session from another machine is served when it is logged in (or
``FNODIAG_ALLOW_REMOTE=1``); only sessions from this machine or logged-in users may start or stop
runs, checked when the Start / Stop handlers run.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import panel as pn
from panel.io.resources import LOCAL_DIST
from panel.io.state import set_curdoc

from fnodiag.dashboard.dashboard import TICK_MS, Dashboard
from fnodiag.dashboard.index import warm_in_background

__all__ = [
    "AppOptions",
    "app_options",
    "from_this_machine",
    "may_control_check",
    "local_request",
    "session_page",
    "warm",
]

TITLE = "fnodiag dashboard"
REMOTE_REFUSED = (
    "This dashboard only serves this machine and logged-in users (serve it with Panel's "
    "--basic-auth or --oauth-provider)."
)


@dataclass(frozen=True)
class AppOptions:
    """The app's own arguments (``panel serve app --args ...``)."""

    runs: Path
    read_only: bool = False


def app_options(argv: list[str], env: dict | None = None) -> AppOptions:
    """Parse the app's arguments: ``--runs DIR`` (default ``$FNODIAG_RUNS``, else ``./runs``) and ``--read-only``.

    Parameters
    ----------
    argv : the arguments after ``--args`` (Bokeh hands them to ``main.py`` as ``sys.argv[1:]``)
    env : environment (default ``os.environ``)

    Returns
    -------
    AppOptions with the runs folder resolved.
    """
    env = os.environ if env is None else env
    parser = argparse.ArgumentParser(prog="panel serve app --args", add_help=False, allow_abbrev=False)
    parser.add_argument("--runs", default=env.get("FNODIAG_RUNS", "runs"), help="runs folder (default: ./runs)")
    parser.add_argument("--read-only", action="store_true", help="no Launch tab: nothing can be started or stopped")
    args, _ = parser.parse_known_args(argv)
    return AppOptions(Path(args.runs).expanduser().resolve(), args.read_only)


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
    if doc is not None and doc.session_context is not None:
        doc._template_variables.setdefault(
            "dist_url", f"{pn.state.rel_path}/{LOCAL_DIST}" if pn.state.rel_path else LOCAL_DIST
        )


def warm(argv: list[str]) -> None:
    """Read the runs folder named by the app's arguments ``argv`` in a background thread, so that the first
    page finds its runs listed and their rows read (``app_hooks.py`` calls it when the server is up)."""
    warm_in_background(app_options(argv).runs)


def session_page(argv: list[str] | None = None) -> None:
    """Build the current session's page (what a served ``main.py`` does) and start its live tick.

    A served session answers its page request at once with an empty page and builds the
    :class:`Dashboard` in the server's next tick, while the browser loads the scripts: the
    document the browser then asks for holds the count line and the runs table; the sidebar,
    tabs and plots follow once the browser has shown them (``pn.state.onload``,
    :meth:`Dashboard.load`). When the session is destroyed its periodic callback
    (:meth:`Dashboard.tick` every ``TICK_MS``) stops and its views close their store readers
    (:meth:`Dashboard.close`); the handler holds the dashboard itself (a closure), not a name in
    the served script's module, which Bokeh clears before it runs the session-destroyed handlers.
    A session from another machine without a login gets one line instead.

    Parameters
    ----------
    argv : the app's arguments (default ``sys.argv[1:]``, what Bokeh passes after ``--args``)
    """
    options = app_options(sys.argv[1:] if argv is None else argv)
    doc = pn.state.curdoc
    pn.extension("tabulator", notifications=False)
    panel_files_from_this_server(doc)
    if not local_request():
        pn.pane.Markdown(REMOTE_REFUSED).servable()
        return
    served = doc is not None and doc.session_context is not None
    page = pn.Column(sizing_mode="stretch_width")
    page.servable(title=TITLE)
    built: list[Dashboard] = []

    def build() -> None:
        dashboard = Dashboard(
            options.runs, read_only=options.read_only, may_control=may_control_check(doc), defer=served
        )
        if pn.state.session_args:  # an evidence link: /app?run=...&tab=...&stat=...&layer=...&step=...
            dashboard.select(pn.state.session_args)
        page[:] = [dashboard.layout()]
        dashboard.callback = pn.state.add_periodic_callback(dashboard.tick, period=TICK_MS)
        if served:
            pn.state.onload(dashboard.load)
        built.append(dashboard)

    pn.state.on_session_destroyed(lambda _context: [d.close() for d in built])
    pn.state.execute(build, schedule=served)  # served: after the page request is answered
