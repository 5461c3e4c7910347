"""Bokeh directory-app hooks: refuse to serve other machines without authentication (before the server listens).

Not a module to import; see :func:`fnodiag.dashboard.server.refuse_unsafe_serving`.
"""

from fnodiag.dashboard.server import refuse_unsafe_serving

refuse_unsafe_serving()

import sys  # noqa: E402  (after the guard: a refused server loads nothing more)

from fnodiag.dashboard.app import warm  # noqa: E402

APP_ARGV = sys.argv[1:]  # the app's arguments (--args ...), as Bokeh sets them while it runs this file


def on_server_loaded(server_context) -> None:
    """Bokeh's hook, once the server is up: read the runs folder before the first page asks for it."""
    warm(APP_ARGV)
