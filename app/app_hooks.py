"""Bokeh directory-app hooks of ``panel serve app``: refuse to serve other machines without authentication.

Bokeh runs this module while it builds the app, before the server listens;
:func:`fnodiag.dashboard.server.refuse_unsafe_serving` reads the arguments the server is built from
and exits with status 2 and one line on stderr when they open it to other machines unauthenticated.
"""

from fnodiag.dashboard.server import refuse_unsafe_serving

refuse_unsafe_serving()

import sys  # noqa: E402  (after the guard: a refused server loads nothing more)

from fnodiag.dashboard.app import warm  # noqa: E402

APP_ARGV = sys.argv[1:]  # the app's arguments (--args ...), as Bokeh sets them while it runs this file


def on_server_loaded(server_context) -> None:
    """Bokeh's hook, once the server is up: read the runs folder before the first page asks for it."""
    warm(APP_ARGV)
