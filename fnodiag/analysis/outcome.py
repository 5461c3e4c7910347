"""What happened to one run: its outcome, in words a reader can act on.

A run's *outcome* is one of :data:`OUTCOMES`, decided from its records alone (``status.json``,
``collapse.json``, ``metrics.json``) by the pure function :func:`run_outcome`:

===========================  ==========================================================================
``learned``                  finished, healthy, last-weights amp SSIM >= the target (0.80)
``below target``             finished, healthy, last-weights amp SSIM under the target
``learned then collapsed``   finished; its best weights were not a constant output and its last are
                             (``collapse.json`` ``learned_then_collapsed``), or the output's spatial std
                             fell for good after the run had learned (a collapse onset)
``never learned``            finished; its best weights already score like a constant output (the
                             dataset's constant-output fingerprint): there was nothing to collapse from
``diverged``                 training stopped on non-finite values
``stopped``                  interrupted, failed, died, still running or not started: no outcome yet
===========================  ==========================================================================

Only ``learned then collapsed`` counts as a collapse in the summary's tables (a run that never
learned did not collapse, it failed to start).

:func:`read_outcome` reads a run directory once and applies :func:`run_outcome`: it is the one reading
behind the sweep summary's run rows and the dashboard's overview rows, so the two always agree.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from fnodiag.runs import RunDir, states
from fnodiag.runs.damage import DamagedRecord

__all__ = [
    "OUTCOMES",
    "TARGET_AMP_SSIM",
    "LEARNED",
    "BELOW",
    "COLLAPSED",
    "NEVER",
    "DIVERGED",
    "STOPPED",
    "SCORES",
    "best_at_fingerprint",
    "run_outcome",
    "read_outcome",
    "outcome_of",
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
SCORES = ("amp_ssim", "phase_ssim", "amp_mae", "phase_mae")  # metrics.json scores read per weights (best, last)


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


def read_outcome(run: RunDir, *, target: float = TARGET_AMP_SSIM) -> dict:
    """What a run's records say about what trained and how it ended, with its :func:`run_outcome`.

    The one reading shared by the sweep summary (``fnodiag.sweeps.summary.run_row``) and the
    dashboard's overview rows (``fnodiag.dashboard.catalog.summarize``).

    Parameters
    ----------
    run : RunDir
        A run directory (it may not hold a status yet).
    target : float
        Amp SSIM a run must reach to have ``learned``.

    Raises
    ------
    DamagedRecord
        A record that cannot be read (one line naming the file): the caller shows the run as damaged.

    Returns
    -------
    dict
        ``records``: the parsed ``status`` (None before one was written), ``effective``, ``history``,
        ``metrics`` and ``collapse`` files ({} when absent); and the values ``state`` (as read:
        a dead writer's ``running`` is ``stopped``; :data:`~fnodiag.runs.states.NOT_STARTED` before a
        status), ``outcome`` (:func:`run_outcome`), ``optimizer`` (the class that trained), ``lr``
        (the base lr of group 0), ``best_val_loss`` / ``final_val_loss`` (over finite epochs),
        ``best_<score>`` / ``last_<score>`` for :data:`SCORES`, ``collapse`` (the verdict),
        ``onset_step``, ``earliest_layer``, ``earliest_step``, ``learned_then_collapsed``.
    """
    status = run.read_status() if run.status_path.is_file() else None
    files = ("effective_config.json", "history.json", "metrics.json", "collapse.json")
    return outcome_of(status, *(_record(run, name) for name in files), target=target)


def _record(run: RunDir, name: str) -> dict:
    """A run's JSON record ({} when absent); one that is no JSON object is a DamagedRecord naming it."""
    value = run.read_json(name, default={})
    if value is not None and not isinstance(value, dict):
        raise DamagedRecord(
            f"{str(run.path / name)!r} holds a JSON {type(value).__name__}, not the object fnodiag writes; "
            "delete or rewrite it",
            run.path / name,
        )
    return value or {}


def outcome_of(
    status: Mapping | None = None,
    effective: Mapping | None = None,
    history: Mapping | None = None,
    metrics: Mapping | None = None,
    collapse: Mapping | None = None,
    *,
    target: float = TARGET_AMP_SSIM,
) -> dict:
    """:func:`read_outcome`'s values from records already read (pure): None / {} is a record not written.

    ``outcome_of()`` is a run without any record (``not started``): what a reader shows, under its own
    state, for a run whose records cannot be read (:class:`~fnodiag.runs.damage.DamagedRecord`).
    """
    eff, hist, metrics, collapse = effective or {}, history or {}, metrics or {}, collapse or {}
    group = ((eff.get("optimizer") or {}).get("param_groups") or [{}])[0]
    val = [v for v in hist.get("val_loss", []) if v is not None and math.isfinite(v)]
    best, last = metrics.get("best") or {}, metrics.get("last") or {}
    state = (status or {}).get("state") or states.NOT_STARTED
    return {
        "records": {"status": status, "effective": eff, "history": hist, "metrics": metrics, "collapse": collapse},
        "state": state,
        "outcome": run_outcome(state, collapse, last.get("amp_ssim"), target=target),
        "optimizer": (eff.get("optimizer") or {}).get("class"),
        "lr": group.get("initial_lr", group.get("lr")),
        "best_val_loss": min(val) if val else None,
        "final_val_loss": val[-1] if val else None,
        **{f"{tag}_{k}": m.get(k) for tag, m in (("best", best), ("last", last)) for k in SCORES},
        "collapse": collapse.get("verdict"),
        "onset_step": collapse.get("onset_step"),
        "earliest_layer": collapse.get("earliest_layer"),
        "earliest_step": collapse.get("earliest_step"),
        "learned_then_collapsed": collapse.get("learned_then_collapsed"),
    }
