"""Bokeh directory-app hooks of ``panel serve app``: refuse to serve other machines without authentication.

Bokeh runs this module while it builds the app, before the server listens. The ``panel serve``
command line is ``sys.orig_argv`` (Bokeh hands the module only the ``--args`` part as ``sys.argv``);
:func:`fnodiag.dashboard.serving.refusal` decides, and a refused configuration exits with status 2 and one
line on stderr (an exception here would only be logged by Bokeh, and the server would start).
"""

from __future__ import annotations

import os
import sys

from fnodiag.dashboard.serving import refusal

_message = refusal(getattr(sys, "orig_argv", sys.argv), os.environ)
if _message:
    print(_message, file=sys.stderr, flush=True)
    raise SystemExit(2)
