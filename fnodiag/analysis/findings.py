"""Findings of a run folder: its records read from the store, every detector, and ``findings.json``.

:func:`findings_from_run` gathers a run's records (every per-layer statistic and per-step scalar in its
store, and its :func:`~fnodiag.diagnostics.collapse.detect_collapse` report), runs the pure detectors of
:mod:`fnodiag.diagnostics.detectors`, adds the settings that differ between asked and got
(:func:`settings_findings` over :func:`~fnodiag.analysis.audit.audit_run`'s warnings; it lives here
because the audit is analysis), gives each finding its evidence link and ranks them
(:func:`~fnodiag.diagnostics.findings.rank`). It works for fnodiag's runs, ``LiveCapture`` / ``watch``
runs and imported runs (which have no per-layer records: only what their files show).
:func:`write_findings` saves them as the run's ``findings.json``.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from fnodiag.analysis.audit import audit_run
from fnodiag.diagnostics.collapse import detect_collapse
from fnodiag.diagnostics.detectors import RunRecords, detect
from fnodiag.diagnostics.findings import Finding, rank
from fnodiag.runs import SOURCES, RunDir, StoreReader

FINDINGS_VERSION = 1
_FIELD = re.compile(r"^[^:]*: (?P<field>.+?) asked ")
_STEP = re.compile(r" at step (?P<step>\d+)")


def read_records(run: RunDir) -> RunRecords:
    """Every per-layer statistic and per-step scalar of a run's store, and its collapse report.

    Parameters
    ----------
    run : RunDir

    Returns
    -------
    RunRecords
        Empty ``layers`` / ``scalars`` for a run without a store (e.g. an imported run without a log).
    """
    records = RunRecords(collapse=detect_collapse(run))
    if not run.store_path.is_file():
        return records
    with StoreReader(run.store_path) as reader:
        for source in SOURCES:
            for stat in reader.stats(source):
                m = reader.layer_matrix(source, stat)
                if m.layers:
                    records.layers[(source, stat)] = (m.layers, m.steps, m.values)
        rows = reader.scalars(scope="step")
        for name in dict.fromkeys(rows.name.tolist()):
            keep = rows.name == name
            order = np.argsort(rows.step[keep], kind="stable")
            records.scalars[name] = (rows.step[keep][order], rows.value[keep][order])
    return records


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


def _relative(run: RunDir, root) -> str:
    """The run's path relative to the served folder ``root`` (default: the run's parent), POSIX style."""
    base = Path(root) if root is not None else run.path.parent
    try:
        return run.path.resolve().relative_to(base.resolve()).as_posix()
    except ValueError:
        raise ValueError(f"run {str(run.path)!r} is not inside the served folder {str(base)!r}") from None


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
    """
    run = run if isinstance(run, RunDir) else RunDir(Path(run))
    if not run.path.is_dir():
        raise FileNotFoundError(f"run folder {str(run.path)!r} does not exist; pass a run directory")
    found = detect(read_records(run)) + settings_findings(audit_run(run))
    rel = _relative(run, root)
    return rank(f.with_link(rel) for f in found)


def write_findings(run, *, root=None) -> list[Finding]:
    """:func:`findings_from_run` written to the run's ``findings.json``; returns the findings.

    The file holds ``{"version": 1, "run": <name>, "findings": [Finding.to_dict(), ...]}`` in rank order.
    """
    run = run if isinstance(run, RunDir) else RunDir(Path(run))
    found = findings_from_run(run, root=root)
    payload = {"version": FINDINGS_VERSION, "run": run.path.name, "findings": [f.to_dict() for f in found]}
    run.write_json(run.findings_path.name, payload)
    return found


__all__ = ["FINDINGS_VERSION", "findings_from_run", "read_records", "settings_findings", "write_findings"]
