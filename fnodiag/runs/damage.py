"""A run record that cannot be read: the one exception readers catch to isolate a damaged run.

A truncated ``run.sqlite``, a JSON file that does not parse or is not UTF-8, a ``status.json`` with
an unknown state, a ``config.json`` that is no run configuration: each is raised as
:class:`DamagedRecord`, one line naming the file and what to do. A reader of many runs (the sweep
summary, the dashboard's overview) catches it, shows that run as :data:`~fnodiag.runs.states.DAMAGED`
with the message, and goes on with the others.
"""

from __future__ import annotations


class DamagedRecord(ValueError):
    """A run's file exists but cannot be read (truncated, not UTF-8, not the format fnodiag writes).

    The message is one line naming the file and the way out; ``path`` is that file (None when unknown).
    """

    def __init__(self, message: str, path=None):
        super().__init__(message)
        self.path = path
