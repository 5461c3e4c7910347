"""``panel serve app``: the fnodiag dashboard over a runs folder (the page is :mod:`fnodiag.dashboard.app`).

Runs folder: ``--args --runs DIR``, else ``$FNODIAG_RUNS``, else ``./runs``; ``--args --read-only``
switches the Launch tab off. ``fnodiag serve`` serves the same app from an installed package.
"""

from fnodiag.dashboard.app import session_page

session_page()
