"""Which arms of a sweep train on other data, and whether the definition says that is their condition.

Every data setting (``data.*``) takes part in the dataset cache key (:func:`fnodiag.ptycho.simulate.dataset_key`),
so arms that differ in one train on different datasets. That is allowed only where it is the arm's
condition: a definition names those arms in ``data_arms`` (e.g. ``phase5``'s ``phase_on`` and
``nimgs_1``), and every other arm must train on the data of its *data reference* arm (the baseline,
else the control, else the first arm). :func:`check_declared` enforces it for a definition (before
anything runs); :func:`data_report` reads it back from what the runs of a sweep folder really
trained on, for the summary, its comparability warnings and the remove-one-condition table.

Pure functions on dicts (``RunConfig.to_dict()`` shapes and summary rows); no files.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from fnodiag.config import ConfigError

__all__ = [
    "DATA_ARMS_KEY",
    "check_declared",
    "data_changes",
    "data_markdown",
    "data_report",
    "data_warnings",
    "reference_arm",
]

DATA_ARMS_KEY = "data_arms"  # the definition's top-level key naming the arms allowed to change the data


def _fmt(v) -> str:
    return "null" if v is None else str(v).lower() if isinstance(v, bool) else str(v)


def data_changes(reference: Mapping, other: Mapping) -> list[dict]:
    """The ``data.*`` fields where two data sections differ.

    Parameters
    ----------
    reference, other : mapping
        The ``data`` sections (``RunConfig.to_dict()["data"]``) of the reference arm and of one arm.

    Returns
    -------
    list of dict
        ``{"field": "data.name", "reference": value, "arm": value}`` in field order.
    """
    names = dict.fromkeys([*reference, *other])
    return [
        {"field": f"data.{n}", "reference": reference.get(n), "arm": other.get(n)}
        for n in names
        if reference.get(n) != other.get(n)
    ]


def changes_label(changes: list[dict]) -> str:
    """``data.set_phi false → true`` (several fields joined by ``", "``; empty when none)."""
    return ", ".join(f"{c['field']} {_fmt(c['reference'])} → {_fmt(c['arm'])}" for c in changes)


def reference_arm(arms: Iterable[str], baseline: str | None = None, control: str | None = None) -> str | None:
    """The arm whose data every undeclared arm must share: the baseline, else the control, else the first arm."""
    arms = list(arms)
    for named in (baseline, control):
        if named is not None and named in arms:
            return named
    return arms[0] if arms else None


def check_declared(
    name: str, data: Mapping[str, Mapping], reference: str, declared: Iterable[str], *, strict: bool = True
) -> dict[str, list[dict]]:
    """The arms whose data differ from the reference arm's; an undeclared one is an error.

    Parameters
    ----------
    name : str
        What to call the definition in messages (its file or name).
    data : mapping
        ``{arm: data section}`` of every arm, in definition order.
    reference : str
        The data reference arm (:func:`reference_arm`).
    declared : iterable of str
        The definition's ``data_arms``.
    strict : bool
        Also refuse a declared arm whose data do not differ (a stale declaration). Off where flags
        that apply to every arm may have erased the difference.

    Returns
    -------
    dict
        ``{arm: data_changes}`` of the arms that train on other data than the reference.

    Raises
    ------
    ConfigError
        An arm changes the data without being declared (the message gives the ``data_arms`` line
        to add), or with ``strict`` a declared arm does not change it.
    """
    declared = list(declared)
    changed = {arm: c for arm, section in data.items() if (c := data_changes(data[reference], section))}
    undeclared = [arm for arm in changed if arm not in declared]
    if undeclared:
        what = "; ".join(f"{arm!r} ({changes_label(changed[arm])})" for arm in undeclared)
        line = ", ".join(f'"{a}"' for a in [*declared, *undeclared])
        raise ConfigError(
            f"sweep definition {name}: arm(s) {what} train on other data than {reference!r}; if that is the "
            f"condition they test, declare it with the top-level line data_arms = [{line}] (above the first "
            "[table]), else move their data.* settings to [shared]"
        )
    stale = [arm for arm in declared if arm not in changed]
    if strict and stale:
        raise ConfigError(
            f"sweep definition {name}: data_arms names {', '.join(map(repr, stale))}, which train(s) on the same "
            f"data as {reference!r}; remove it from data_arms or give it the data.* setting it tests"
        )
    return changed


def data_report(rows: list[dict], reference: str | None, declared: Iterable[str] = ()) -> dict:
    """Per arm: the dataset it trained on and whether that differs from the reference arm's.

    Parameters
    ----------
    rows : list of dict
        :func:`fnodiag.sweeps.summary.run_row` rows: ``arm``, ``data_key`` (the ``effective_config.json``
        ``data.key``, None before a run started) and ``expected`` (its ``config.json`` as a dict).
    reference : str or None
        The data reference arm (None: a plain runs folder, nothing is declared).
    declared : iterable of str
        The definition's ``data_arms``.

    Returns
    -------
    dict
        ``{"reference", "declared": [...], "arms": {arm: {"data_key": str | None | [str, ...],
        "other_data": bool | None, "declared": bool, "changed": [data_changes], "condition": str}},
        "note": str | None}``; ``data_key`` is the key every started seed trained on (a list when the
        seeds disagree), ``other_data`` None while the arm or the reference has no started run.
    """
    declared = list(declared)
    arms = list(dict.fromkeys(r["arm"] for r in rows))
    keys = {a: sorted({r["data_key"] for r in rows if r["arm"] == a and r.get("data_key")}) for a in arms}
    sections = {
        a: next((r["expected"]["data"] for r in rows if r["arm"] == a and r.get("expected")), None) for a in arms
    }
    ref_keys = keys.get(reference) or []
    out = {}
    for a in arms:
        other = None if not keys[a] or not ref_keys else keys[a] != ref_keys
        changed = (
            data_changes(sections[reference], sections[a])
            if reference in sections and sections[reference] is not None and sections[a] is not None
            else []
        )
        out[a] = {
            "data_key": keys[a][0] if len(keys[a]) == 1 else (keys[a] or None),
            "other_data": other,
            "declared": a in declared,
            "changed": changed,
            "condition": changes_label(changed),
        }
    others = [a for a, e in out.items() if e["other_data"] and e["declared"]]
    note = (
        f"{', '.join(others)} train{'s' if len(others) == 1 else ''} on other data than {reference}: that is "
        f"{'the' if len(others) == 1 else 'each'} arm's condition (declared in the definition's data_arms), "
        "not a comparability problem."
        if others
        else None
    )
    return {"reference": reference, "declared": declared, "arms": out, "note": note}


def data_warnings(rows: list[dict], report: dict) -> list[str]:
    """Comparability warnings about data: an undeclared arm on other data, a declared one on the same data,
    seeds of one arm on different datasets; without a reference arm, any two datasets."""
    ref = report["reference"]
    started = sorted({str(r["data_key"]) for r in rows if r.get("data_key")})
    if ref is None:
        return ["runs trained on different datasets: " + ", ".join(started)] if len(started) > 1 else []
    out = []
    ref_key = report["arms"].get(ref, {}).get("data_key")
    for arm, e in report["arms"].items():
        if isinstance(e["data_key"], list):
            out.append(f"the seeds of arm {arm} trained on different datasets: {', '.join(e['data_key'])}")
        elif e["other_data"] and not e["declared"]:
            why = f" ({e['condition']})" if e["condition"] else ""
            out.append(
                f"runs trained on different datasets: arm {arm} trained on {e['data_key']}{why}, not on {ref}'s "
                f"{ref_key}, and the definition does not declare it a data arm (data_arms)"
            )
        elif e["other_data"] is False and e["declared"]:
            out.append(
                f"arm {arm} is declared a data arm (data_arms) but trained on the same dataset as {ref} "
                f"({e['data_key']}): a setting applied to every arm erased its condition"
            )
    return out


def data_markdown(report: dict) -> list[str]:
    """The ``## Data`` section of ``summary.md``: one line when every arm trained on one dataset, else a table
    of each arm's dataset and whether it is other data than the reference arm's (empty before any run started)."""
    entries, ref = report["arms"], report["reference"]
    keys = {
        k
        for e in entries.values()
        for k in ([e["data_key"]] if isinstance(e["data_key"], str) else e["data_key"] or [])
    }
    if not keys:
        return []
    if len(keys) == 1 and not any(e["declared"] for e in entries.values()):
        return ["## Data", "", f"Every arm trained on one dataset, `{keys.pop()}`.", ""]
    lines = ["## Data", ""]
    if report["note"]:
        lines += [report["note"], ""]
    lines += [f"| arm | dataset | other data than {ref or 'the first arm'} | data condition |", "|---|---|---|---|"]
    for arm, e in entries.items():
        key = ", ".join(e["data_key"]) if isinstance(e["data_key"], list) else (e["data_key"] or "–")
        if arm == ref:
            other = "– (reference)"
        elif e["other_data"] is None:
            other = "–"
        elif e["other_data"]:
            other = "yes, the arm's condition" if e["declared"] else "yes ⚠ not declared"
        else:
            other = "no ⚠ declared a data arm" if e["declared"] else "no"
        lines.append(f"| {arm} | {key} | {other} | {e['condition'] or '–'} |")
    return lines + [""]
