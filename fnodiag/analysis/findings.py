"""Findings of a run folder: every detector, the asked-vs-got settings included, and ``findings.json``.

:func:`findings_from_run` is :func:`~fnodiag.diagnostics.run_findings.record_findings` (the run's
records read from its store, the pure detectors of :mod:`fnodiag.diagnostics.detectors`, evidence links,
ranking) plus the settings that differ between asked and got (:func:`settings_findings` over
:func:`~fnodiag.analysis.audit.audit_run`'s warnings; it lives here because the audit is analysis). It
works for fnodiag's runs, ``LiveCapture`` / ``watch`` runs and imported runs (which have no per-layer
records: only what their files show). :func:`write_findings` saves them as the run's ``findings.json``
with ``"settings_audited": true``; training writes the file without the audit when a run ends
(:func:`fnodiag.diagnostics.run_findings.write_end_of_run`, where the module docstring says why).
"""

from __future__ import annotations

import re
from pathlib import Path

from fnodiag.analysis.audit import audit_run
from fnodiag.diagnostics.findings import Finding
from fnodiag.diagnostics.run_findings import FINDINGS_VERSION, read_records, record_findings, save_findings
from fnodiag.runs import RunDir

_FIELD = re.compile(r"^[^:]*: (?P<field>.+?) asked ")
_STEP = re.compile(r" at step (?P<step>\d+)")


def settings_findings(warnings: list[str]) -> list[Finding]:
    """One ``settings`` finding per :func:`~fnodiag.analysis.audit.audit_run` warning, its sentence the warning.

    The statistic is the warning's field (``optimizer.class``, ``lr per step (...)``, ...); a per-step
    learning-rate difference carries its first differing step, every other setting holds from the start
    (no step).
    """
    out = []
    for text in warnings:
        field, step = _FIELD.match(text), _STEP.search(text)
        out.append(
            Finding(
                kind="settings",
                sentence=f"Asked and got differ: {text}.",
                first=int(step["step"]) if step else None,
                statistic=field["field"] if field else None,
                tab="overview",
                details={"warning": text},
            )
        )
    return out


def _run(run) -> RunDir:
    return run if isinstance(run, RunDir) else RunDir(Path(run))


def findings_from_run(run, *, root=None) -> list[Finding]:
    """Every finding of one run folder, ranked, each with its evidence link.

    Parameters
    ----------
    run : RunDir, str or Path
        A run folder (fnodiag's own, a ``LiveCapture`` / ``watch`` run, or an imported one).
    root : str or Path, optional
        The folder the dashboard serves; links name the run relative to it (default: the run's parent).

    Returns
    -------
    list of Finding
        Ranked (:func:`~fnodiag.diagnostics.findings.rank`); empty for a run with nothing to report.

    Raises
    ------
    FileNotFoundError
        No such run folder.
    ValueError
        The run is not inside ``root``.
    """
    run = _run(run)  # record_findings refuses a missing folder (the audit of one finds nothing)
    return record_findings(run, root=root, extra=settings_findings(audit_run(run)))


def write_findings(run, *, root=None) -> list[Finding]:
    """:func:`findings_from_run` written to the run's ``findings.json``; returns the findings.

    The file holds ``{"version": 1, "run": <name>, "settings_audited": true, "findings": [Finding.to_dict(),
    ...]}`` in rank order.
    """
    run = _run(run)
    found = findings_from_run(run, root=root)
    save_findings(run, found, audited=True)
    return found


def window(f: Finding) -> str:
    """A finding's step window for a line of text: ``"step 220"``, ``"steps 220-480"`` or ``"from the start"``."""
    if f.first is None:
        return "from the start"
    return f"step {f.first}" if f.last in (None, f.first) else f"steps {f.first}-{f.last}"


def finding_lines(found: list[Finding], *, links: bool = True) -> list[str]:
    """One numbered line per finding (severity, kind, layer, window, sentence) and its link indented below."""
    if not found:
        return ["  no findings: nothing left its usual range"]
    lines = []
    for i, f in enumerate(found, 1):
        where = f" {f.layer}" if f.layer else ""
        lines.append(f"  {i}. [{f.severity}] {f.kind}{where}, {window(f)}: {f.sentence}")
        if links and f.link:
            lines.append(f"     evidence: {f.link}")
    return lines


def first_finding(run, *, root=None) -> dict | None:
    """The top finding of a run as a JSON-ready dict (:meth:`Finding.to_dict`), None when it has none.

    A run of a sweep that has not started yet (no folder) has none.
    """
    run = _run(run)
    if not run.path.is_dir():
        return None
    found = findings_from_run(run, root=root)
    return found[0].to_dict() if found else None


__all__ = [
    "FINDINGS_VERSION",
    "finding_lines",
    "findings_from_run",
    "first_finding",
    "read_records",
    "settings_findings",
    "window",
    "write_findings",
]
