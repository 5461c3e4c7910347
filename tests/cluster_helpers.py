"""Helpers for the driver-owned layout's tests: an in-process records transport a task finds by name."""

from __future__ import annotations

from fnodiag.runs.remote import LocalTransport, RecordReceiver

RECEIVERS: dict[str, RecordReceiver] = {}  # records["key"] -> the driver's receiver in this process


def loopback(records: dict) -> LocalTransport:
    """The transport of a spec whose ``records`` name ``cluster_helpers:loopback`` and a key of :data:`RECEIVERS`."""
    return LocalTransport(RECEIVERS[records["key"]])


class Deferred:
    """A transport that runs each call only when a later ``wait`` reaches it, in submission order (as an actor)."""

    def __init__(self, receiver):
        self.receiver, self.pending, self.done, self.most_pending = receiver, [], {}, 0

    def submit(self, method, *args):
        self.pending.append((len(self.done) + len(self.pending), method, args))
        self.most_pending = max(self.most_pending, len(self.pending))
        return self.pending[-1][0]

    def wait(self, handle):
        while handle not in self.done:
            i, method, args = self.pending.pop(0)
            self.done[i] = getattr(self.receiver, method)(*args)
        return self.done[handle]
