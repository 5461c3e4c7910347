"""Bokeh directory-app hooks: refuse to serve other machines without authentication (before the server listens).

Not a module to import; see :func:`fnodiag.dashboard.server.refuse_unsafe_serving`.
"""

from fnodiag.dashboard.server import refuse_unsafe_serving

refuse_unsafe_serving()
