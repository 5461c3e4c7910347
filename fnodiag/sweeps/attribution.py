"""Remove-one-condition attribution: which condition, taken away from a collapsing baseline, prevents it.

A sweep definition with ``baseline = "ARM"`` (e.g. ``phase5``: the reference's Phase-5 conditions)
asks the subtractive question. Every other arm with the baseline's architecture is one removal:
its changed condition is the set of configuration fields where its resolved configuration differs
from the baseline's (read from each run's ``config.json``, the seed ignored), so the table states
what really differed, not what the arm's name promises. Per removal the table gives the collapse
count (outcome ``learned then collapsed``, :mod:`fnodiag.analysis.outcome`) over the seeds with the
condition (the baseline) and without it (the arm), and the last-weights amp SSIM of both. A removal
that changes ``data.*`` fields trains on its own dataset; the row says so (``other_data``) and whether
the definition declares that as the arm's condition (``data_arm``, its ``data_arms``).

The answer is inconclusive when the control did not learn on every seed (nothing can be told from
a budget too small to learn) or the baseline did not learn then collapse on most of its seeds
(there is no collapse to remove).
"""

from __future__ import annotations

import numpy as np

from fnodiag.analysis.outcome import COLLAPSED, LEARNED
from fnodiag.runs import states

__all__ = [
    "arm_outcome",
    "collapses",
    "condition_label",
    "config_differences",
    "removal_attribution",
    "removal_markdown",
]


def config_differences(base: dict, other: dict) -> list[dict]:
    """Fields where two RunConfig dicts differ, ``train.seed`` ignored.

    Parameters
    ----------
    base, other : dict
        ``RunConfig.to_dict()`` of the baseline and of one arm (``{"section": {"field": value}}``).

    Returns
    -------
    list of dict
        ``{"field": "section.field", "baseline": value, "arm": value}`` in section / field order.
    """
    out = []
    for section in dict.fromkeys([*base, *other]):
        b, o = base.get(section) or {}, other.get(section) or {}
        for name in dict.fromkeys([*b, *o]):
            key = f"{section}.{name}"
            if key != "train.seed" and b.get(name) != o.get(name):
                out.append({"field": key, "baseline": b.get(name), "arm": o.get(name)})
    return out


def _fmt_value(v) -> str:
    return "null" if v is None else str(v).lower() if isinstance(v, bool) else str(v)


def condition_label(changes: list[dict]) -> str:
    """``train.forward_gain batch → none`` (several fields joined by ``", "``)."""
    return ", ".join(f"{c['field']} {_fmt_value(c['baseline'])} → {_fmt_value(c['arm'])}" for c in changes) or "nothing"


def arm_outcome(rows: list[dict], arm: str | None) -> dict | None:
    """Collapse count (learned then collapsed), learned count and last-weights amp SSIM (mean, std) of an
    arm's finished seeds; None when none finished."""
    done = [r for r in rows if r["arm"] == arm and r["state"] in states.DONE]
    if arm is None or not done:
        return None
    v = np.array([np.nan if r["last_amp_ssim"] is None else float(r["last_amp_ssim"]) for r in done])
    v = v[np.isfinite(v)]
    return {
        "n_done": len(done),
        "n_collapsed": sum(r["outcome"] == COLLAPSED for r in done),
        "n_learned": sum(r["outcome"] == LEARNED for r in done),
        "amp_ssim": {"mean": float(v.mean()), "std": float(v.std())} if v.size else None,
    }


def collapses(o: dict | None) -> bool:
    """Most finished seeds learned then collapsed."""
    return bool(o) and o["n_collapsed"] * 2 > o["n_done"]


def _data_note(t: dict) -> str:
    """`` (other data: the arm's condition)`` for a declared data arm's row, a warning for an undeclared one."""
    if not t.get("other_data"):
        return ""
    return " (other data: the arm's condition)" if t.get("data_arm") else " (other data ⚠ not declared in data_arms)"


def removal_attribution(
    rows: list[dict], baseline: str, control_check: dict | None = None, data_arms: tuple[str, ...] | list[str] = ()
) -> dict:
    """The remove-one-condition table and its sentence.

    Parameters
    ----------
    rows : list of dict
        :func:`fnodiag.sweeps.summary.run_row` rows (``arm``, ``state``, ``outcome``, ``last_amp_ssim``,
        ``expected`` = the run's config dict).
    baseline : str
        The arm carrying every condition.
    control_check : dict, optional
        :func:`fnodiag.sweeps.summary.control_check` of the sweep's control.
    data_arms : sequence of str
        The definition's ``data_arms``: removals whose other data is their declared condition.

    Returns
    -------
    dict
        ``{"kind": "removal", "baseline", "conclusion": "inconclusive" | "answered" | "pending",
        "rows": [{"arm", "changed": [{"field", "baseline", "arm"}], "condition", "other_data": bool,
        "data_arm": bool, "with", "without", "prevented": int | None, "prevents": bool | None}], "text"}``;
        ``other_data``: the arm trains on its own dataset (a ``data.*`` field changed), ``data_arm``: the
        definition declares it; ``with`` is the baseline's outcome, ``without`` the arm's (``n_done``,
        ``n_collapsed``, ``n_learned``, ``amp_ssim``).
    """
    configs = {}
    for r in rows:
        if r.get("expected") and r["arm"] not in configs:
            configs[r["arm"]] = r["expected"]
    base_cfg = configs.get(baseline)
    base_out = arm_outcome(rows, baseline)
    table = []
    if base_cfg is not None:
        arch = base_cfg["model"]["arch"]
        for arm, cfg in configs.items():
            if arm == baseline or cfg["model"]["arch"] != arch:
                continue
            changed = config_differences(base_cfg, cfg)
            without = arm_outcome(rows, arm)
            prevented = None if without is None else without["n_done"] - without["n_collapsed"]
            table.append(
                {
                    "arm": arm,
                    "changed": changed,
                    "condition": condition_label(changed),
                    "other_data": any(c["field"].startswith("data.") for c in changed),
                    "data_arm": arm in data_arms,
                    "with": base_out,
                    "without": without,
                    "prevented": prevented,
                    "prevents": None if without is None else not collapses(without),
                }
            )
    if control_check is not None and not control_check["ok"]:
        conclusion, text = (
            "inconclusive",
            (f"Inconclusive: {control_check['reason']}, so removing a condition cannot show what the collapse needs."),
        )
    elif base_out is None:
        conclusion, text = "pending", f"The baseline {baseline!r} has not finished yet: no attribution."
    elif not collapses(base_out):
        conclusion = "inconclusive"
        text = (
            f"Inconclusive: the baseline {baseline!r} did not learn then collapse on most seeds "
            f"({base_out['n_collapsed']}/{base_out['n_done']} learned then collapsed, {base_out['n_learned']} "
            "learned), so there is no collapse for a removed condition to prevent."
        )
    else:
        conclusion = "answered"
        done = [t for t in table if t["without"]]
        yes = [t for t in done if t["prevents"]]
        no = [t for t in done if not t["prevents"]]
        parts = [
            f"The baseline {baseline!r} learned then collapsed on {base_out['n_collapsed']}/{base_out['n_done']} seeds."
        ]
        if yes:
            parts.append(
                "Removing "
                + "; ".join(
                    f"{t['condition']} ({t['arm']}{', own dataset' if t['other_data'] else ''}) prevents the "
                    f"collapse on {t['prevented']}/{t['without']['n_done']} seeds "
                    f"(learned on {t['without']['n_learned']})"
                    for t in yes
                )
                + "."
            )
        if no:
            parts.append(
                "Removing "
                + "; ".join(
                    f"{t['condition']} ({t['arm']}{', own dataset' if t['other_data'] else ''}) does not: "
                    f"{t['without']['n_collapsed']}/{t['without']['n_done']} "
                    "seeds still collapse"
                    for t in no
                )
                + "."
            )
        if not done:
            parts.append("No removal arm has finished yet.")
        text = " ".join(parts)
    if any(r["state"] not in states.DONE for r in rows):
        text += " (Some runs have not finished: provisional.)"
    return {"kind": "removal", "baseline": baseline, "conclusion": conclusion, "rows": table, "text": text}


def outcome_cells(o: dict | None) -> tuple[str, str]:
    """An :func:`arm_outcome` as two table cells: ``"collapsed/done"`` and ``"amp SSIM mean ± std"``."""
    if not o:
        return "–", "–"
    ssim = f"{o['amp_ssim']['mean']:.3f} ± {o['amp_ssim']['std']:.3f}" if o["amp_ssim"] else "–"
    return f"{o['n_collapsed']}/{o['n_done']}", ssim


def removal_markdown(att: dict) -> list[str]:
    """The ``## Attribution: remove one condition`` section of ``summary.md``."""
    lines = [
        f"## Attribution: remove one condition from `{att['baseline']}`",
        "",
        att["text"],
        "",
        "| removed / changed condition | arm | collapsed with (baseline) | collapsed without (arm) | "
        "amp SSIM with | amp SSIM without |",
        "|---|---|---|---|---|---|",
    ]
    for t in att["rows"]:
        (cw, sw), (cn, sn) = outcome_cells(t["with"]), outcome_cells(t["without"])
        lines.append(f"| {t['condition']}{_data_note(t)} | {t['arm']} | {cw} | {cn} | {sw} | {sn} |")
    lines += ["", "Collapsed = learned then collapsed (a run that never learned is not counted)."]
    if any(t.get("other_data") for t in att["rows"]):
        lines.append(
            "A row marked *other data* trains on its own dataset: changing the data is the condition it tests, "
            "so its scores are measured on its own test set."
        )
    return lines + [""]
