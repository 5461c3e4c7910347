"""The sweep's verdict: what happened to each arm, judged against a control arm that must learn.

Reads the rows of :func:`fnodiag.sweeps.summary.run_row` (each with its :mod:`fnodiag.analysis.outcome`) and the
per-arm table of :func:`fnodiag.sweeps.summary.arm_table`. A sweep definition names its control
(``control = "ARM"``); when that arm did not reach the target on every seed the verdict is
*inconclusive* and claims nothing about the other arms.
"""

from __future__ import annotations

import math

from fnodiag.analysis.outcome import LEARNED, OUTCOMES, STOPPED, TARGET_AMP_SSIM
from fnodiag.runs import states

__all__ = ["control_check", "verdict"]


def _nan(x) -> float:
    return float("nan") if x is None else float(x)


def _seed_scores(rows: list[dict]) -> str:
    """``seed 7: 0.348 (below target), seed 8: stopped (running)`` for one arm's rows."""
    parts = []
    for r in rows:
        ssim = _nan(r["last_amp_ssim"])
        score = f"amp SSIM {ssim:.3f}" if math.isfinite(ssim) else "no score"
        parts.append(
            f"seed {r['seed']}: {score} ({r['outcome']}" + (f", {r['state']})" if r["outcome"] == STOPPED else ")")
        )
    return ", ".join(parts)


def control_check(rows: list[dict], control: str | None) -> dict | None:
    """Did the sweep's control arm learn (outcome ``learned``) on every seed? None without a control.

    Returns
    -------
    dict or None
        ``{"arm", "ok", "reason", "seeds": [{"seed", "state", "outcome", "last_amp_ssim"}]}``; ``ok``
        is False when the control was not run, has not finished on every seed or did not reach the
        target on one; ``reason`` says which, with the per-seed numbers.
    """
    if control is None:
        return None
    rs = [r for r in rows if r["arm"] == control]
    seeds = [
        {"seed": r["seed"], "state": r["state"], "outcome": r["outcome"], "last_amp_ssim": r["last_amp_ssim"]}
        for r in rs
    ]
    if not rs:
        return {
            "arm": control,
            "ok": False,
            "seeds": seeds,
            "reason": f"the control arm {control!r} was not run in this sweep folder (run it with --arms {control})",
        }
    if all(r["outcome"] == LEARNED for r in rs):
        return {
            "arm": control,
            "ok": True,
            "seeds": seeds,
            "reason": f"the control arm {control!r} learned on every seed ({_seed_scores(rs)})",
        }
    unfinished = sum(r["outcome"] == STOPPED for r in rs)
    why = (
        f"has not finished on {unfinished} of {len(rs)} seeds"
        if unfinished == len(rs)
        else f"did not reach amp SSIM >= {TARGET_AMP_SSIM:.2f} (last weights) on every seed"
    )
    return {
        "arm": control,
        "ok": False,
        "seeds": seeds,
        "reason": f"the control arm {control!r} {why}: {_seed_scores(rs)}",
    }


def verdict(arms: dict[str, dict], rows: list[dict], control: str | None = None) -> dict:
    """The sweep's verdict: what happened to each arm, judged against a working control.

    With a ``control`` arm that did not learn on every seed the verdict is ``inconclusive``: the
    text says so first, with the control's per-seed amp SSIM, and says nothing about the other
    arms (a control that cannot learn means the budget, not the optimizer, decided the outcome).
    Otherwise the text names the arms that learned on every seed, then for each other arm how
    many seeds learned then collapsed, never learned, stayed below target, diverged or stopped.

    Returns
    -------
    dict
        ``target_amp_ssim``; ``conclusion`` (``"inconclusive"``, ``"controlled"`` or
        ``"no control"``); ``control`` (:func:`control_check`); ``avoided_collapse`` (arms that
        learned on every seed that finished; empty when inconclusive); ``did_not`` (the other
        finished arms; empty when inconclusive); ``incomplete`` (arms with no finished seed);
        ``outcomes`` ({arm: {outcome: count}}); ``text``.
    """
    check = control_check(rows, control)
    outcomes = {arm: a.get("outcomes", {}) for arm, a in arms.items()}
    incomplete = [arm for arm, a in arms.items() if not a["n_done"]]
    n_missing = sum(r["state"] not in states.DONE for r in rows)
    tail = f" Incomplete: {n_missing} of {len(rows)} runs have not finished." if n_missing else ""
    if check is not None and not check["ok"]:
        text = (
            f"Inconclusive: {check['reason']}. A control that does not learn cannot tell a collapse from a "
            "problem this budget cannot learn, so this sweep answers nothing about the other arms; train longer "
            "or on a setting the control learns." + tail
        )
        return {
            "target_amp_ssim": TARGET_AMP_SSIM,
            "conclusion": "inconclusive",
            "control": check,
            "avoided_collapse": [],
            "did_not": [],
            "incomplete": incomplete,
            "outcomes": outcomes,
            "text": text,
        }
    learned, did_not = [], []
    for arm in arms:
        done = [r for r in rows if r["arm"] == arm and r["state"] in states.DONE]
        if done:
            (learned if all(r["outcome"] == LEARNED for r in done) else did_not).append(arm)
    parts = [
        f"Control: {check['reason']}."
        if check
        else 'No control arm named (add control = "ARM" to the definition): these outcomes are not checked against '
        "an arm known to learn."
    ]
    parts.append(
        f"Learned (amp SSIM >= {TARGET_AMP_SSIM:.2f}, last weights) on every finished seed: "
        f"{', '.join(learned) or 'no arm'}."
    )
    for outcome in OUTCOMES[1:]:
        hit = [
            f"{arm} ({n}/{len([r for r in rows if r['arm'] == arm])} seeds)"
            for arm in did_not + incomplete
            if (n := outcomes[arm].get(outcome))
        ]
        if hit and not (outcome == STOPPED and n_missing):
            parts.append(f"{outcome[0].upper()}{outcome[1:]}: {', '.join(hit)}.")
    for arm in did_not:
        s = arms[arm]["last_amp_ssim"]
        if s:
            parts.append(f"{arm}: amp SSIM {s['mean']:.3f} ± {s['std']:.3f}.")
    return {
        "target_amp_ssim": TARGET_AMP_SSIM,
        "conclusion": "controlled" if check else "no control",
        "control": check,
        "avoided_collapse": learned,
        "did_not": did_not,
        "incomplete": incomplete,
        "outcomes": outcomes,
        "text": " ".join(parts) + tail,
    }
