"""What happened to one run: its outcome, in words a reader can act on.

A run's *outcome* is one of :data:`OUTCOMES`, decided from its records alone (``status.json``,
``collapse.json``, ``metrics.json``) by the pure function :func:`run_outcome`:

=========================  ==========================================================================
``learned``                finished, healthy, last-weights amp SSIM >= the target (0.80)
``below target``           finished, healthy, last-weights amp SSIM under the target
``learned then collapsed`` finished; its best weights were not a constant output and its last are
                           (``collapse.json`` ``learned_then_collapsed``), or the output's spatial std
                           fell for good after the run had learned (a collapse onset)
``never learned``          finished; its best weights already score like a constant output (the
                           dataset's constant-output fingerprint): there was nothing to collapse from
``diverged``               training stopped on non-finite values
``stopped``                interrupted, failed, died, still running or not started: no outcome yet
=========================  ==========================================================================

Only ``learned then collapsed`` counts as a collapse in the summary's tables (a run that never
learned did not collapse, it failed to start).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from fnodiag.runs import states

__all__ = [
    "OUTCOMES",
    "TARGET_AMP_SSIM",
    "LEARNED",
    "BELOW",
    "COLLAPSED",
    "NEVER",
    "DIVERGED",
    "STOPPED",
    "best_at_fingerprint",
    "run_outcome",
]

LEARNED, BELOW, COLLAPSED, NEVER, DIVERGED, STOPPED = (
    "learned",
    "below target",
    "learned then collapsed",
    "never learned",
    "diverged",
    "stopped",
)
OUTCOMES = (LEARNED, BELOW, COLLAPSED, NEVER, DIVERGED, STOPPED)
TARGET_AMP_SSIM = 0.80  # last-weights amp SSIM a run must reach to have learned


def best_at_fingerprint(collapse: Mapping | None) -> bool | None:
    """Whether a run's best weights score like a constant output, from its ``collapse.json``.

    The collapse detector's constant-output test (:func:`fnodiag.diagnostics.collapse.metrics_at_fingerprint`)
    as it judged the verdict's best weights (``best_weights.at_fingerprint``: ``best.ckpt``, or the
    gain-free best epoch under the batch gain), else as it judged ``metrics.best``. None when
    neither was evaluated (no fingerprint, no best metrics).
    """
    collapse = collapse or {}
    at = (collapse.get("best_weights") or {}).get("at_fingerprint")
    if at is None:
        at = ((collapse.get("metrics") or {}).get("best") or {}).get("at_fingerprint")
    return None if at is None else bool(at)


def run_outcome(
    state: str | None, collapse: Mapping | None, last_amp_ssim: float | None, *, target: float = TARGET_AMP_SSIM
) -> str:
    """The outcome of one run (one of :data:`OUTCOMES`).

    Parameters
    ----------
    state : str or None
        ``status.json`` state as read (``finished``, ``diverged``, ``failed``, ``interrupted``,
        ``running``, ``stopped``), or None / ``"not started"`` for a run without one.
    collapse : dict or None
        The run's ``collapse.json`` (:func:`fnodiag.diagnostics.collapse.detect_collapse`); keys used:
        ``verdict``, ``onset_step``, ``learned_then_collapsed``, ``best_weights.at_fingerprint``,
        ``metrics.best.at_fingerprint``, ``metrics.last.at_fingerprint``.
    last_amp_ssim : float or None
        Amp SSIM of the last weights (``metrics.json["last"]["amp_ssim"]``).
    target : float
        Amp SSIM a run must reach to have ``learned``.

    Returns
    -------
    str
        Decided in this order: not finished -> ``diverged`` / ``stopped``; best weights at the
        fingerprint -> ``never learned``; ``learned_then_collapsed``, or a ``collapsed`` verdict
        with an onset (the output varied, then stayed constant) whose best weights were not at
        the fingerprint -> ``learned then collapsed``; a ``collapsed`` verdict without either
        (last weights constant, best not evaluated) -> ``never learned``; otherwise
        ``learned`` / ``below target`` by ``last_amp_ssim`` (a missing or NaN score is below).
    """
    if state == states.DIVERGED:
        return DIVERGED
    if state != states.FINISHED:
        return STOPPED
    collapse = collapse or {}
    best_const = best_at_fingerprint(collapse)
    if best_const:
        return NEVER
    if collapse.get("learned_then_collapsed"):
        return COLLAPSED
    if collapse.get("verdict") == "collapsed":
        return COLLAPSED if collapse.get("onset_step") is not None else NEVER
    ssim = math.nan if last_amp_ssim is None else float(last_amp_ssim)
    return LEARNED if math.isfinite(ssim) and ssim >= target else BELOW
