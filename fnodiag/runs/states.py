"""Run states: what ``status.json`` may say and what each state means to a reader. The one home of them.

``state`` is written by the run's own writer: ``running`` while it trains (a heartbeat rewrites it),
then one final state. ``stopped`` is never written: a reader shows it for a ``running`` record whose
writer is gone (:func:`fnodiag.runs.liveness.live_status`). A run without a status yet is
``not started``; one whose records cannot be read (a truncated store, a JSON file that does not
parse) is shown as ``damaged`` by the readers of many runs, which go on with the others.
"""

from __future__ import annotations

RUNNING = "running"
FINISHED = "finished"
DIVERGED = "diverged"  # training stopped itself on a non-finite loss
FAILED = "failed"  # training raised
INTERRUPTED = "interrupted"  # Ctrl-C, a stop from the dashboard, or a sweep driver that found its worker dead
STOPPED = "stopped"  # read, never written: a running record of a dead process
NOT_STARTED = "not started"  # read: no status.json yet
DAMAGED = "damaged"  # read, never written: a record of the run cannot be read (fnodiag.runs.damage.DamagedRecord)

STATES = (RUNNING, FINISHED, DIVERGED, FAILED, INTERRUPTED)  # what a writer may write
READ_STATES = STATES + (STOPPED,)  # what a reader may see (besides NOT_STARTED)
DONE = frozenset({FINISHED, DIVERGED})  # ended by itself: never trained again (a sweep skips it, --resume refuses)
LIVE = frozenset({RUNNING})  # as read: a live writer trains it now
UNFINISHED = frozenset({RUNNING, STOPPED})  # the record never reached a final state (live, or its writer died)
RESUMABLE = frozenset({FAILED, INTERRUPTED, STOPPED})  # may continue from its last checkpoint


def final_state(exception: BaseException | None = None, *, diverged: bool = False) -> str:
    """The state a writer ends a run with: the one rule of every run-folder writer.

    Parameters
    ----------
    exception : BaseException, optional
        What ended training, if it raised: ``KeyboardInterrupt`` (Ctrl-C, a stop from the dashboard)
        gives ``interrupted``, any other exception ``failed``.
    diverged : bool
        Training met a non-finite loss (checked only when nothing raised).

    Returns
    -------
    str
        One of :data:`INTERRUPTED`, :data:`FAILED`, :data:`DIVERGED`, :data:`FINISHED`.
    """
    if exception is not None:
        return INTERRUPTED if isinstance(exception, KeyboardInterrupt) else FAILED
    return DIVERGED if diverged else FINISHED
