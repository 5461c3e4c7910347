"""Bokeh directory-app hooks of ``panel serve app``: refuse to serve other machines without authentication.

Bokeh runs this module while it builds the app, before the server listens;
:func:`fnodiag.dashboard.server.refuse_unsafe_serving` reads the arguments the server is built from
and exits with status 2 and one line on stderr when they open it to other machines unauthenticated.
"""

from fnodiag.dashboard.server import refuse_unsafe_serving

refuse_unsafe_serving()
