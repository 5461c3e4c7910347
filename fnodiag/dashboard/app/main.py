"""Bokeh runs this file for every session of the served directory app: the page of :mod:`fnodiag.dashboard.app`.

Not a module to import (it builds a page); ``fnodiag serve`` hands this folder to ``panel serve``.
"""

from fnodiag.dashboard.app import session_page

session_page()
