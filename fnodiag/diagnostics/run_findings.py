"""Findings of a run folder from its own records, and ``findings.json``: what training writes when a run ends.

:func:`read_records` gathers a run's records (every per-layer statistic and per-step scalar in its
store, and its :func:`~fnodiag.diagnostics.collapse.detect_collapse` report); :func:`record_findings`
runs the pure detectors of :mod:`fnodiag.diagnostics.detectors` on them, gives each finding its evidence
link and ranks them; :func:`save_findings` writes ``findings.json``.

Why here and not only in :mod:`fnodiag.analysis.findings`. ``findings.json`` is written at the end of
every run by the code that ends it: :func:`fnodiag.training.run.train` after ``collapse.json``, and the
``LiveCapture`` / ``watch`` adapters at close. Those live in ``training``, which may import
``diagnostics`` but not ``analysis`` (analysis sits above training). Everything a finding needs is a
run's own records, except one detector: the settings that differ between asked and got, which is the
audit (:func:`fnodiag.analysis.audit.audit_run`, analysis: it checks the training registries against
the configuration). So the records part lives here and training writes ``findings.json`` with it, marked
``"settings_audited": false``; :func:`fnodiag.analysis.findings.write_findings` (``fnodiag diagnose``,
the dashboard's Findings tab, the sweep summary) adds the settings findings and writes the file again
with ``"settings_audited": true``. Only fnodiag's own runs have anything to audit (nothing was asked of a
``LiveCapture`` / ``watch`` or imported run), so for those the two files agree.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from fnodiag.diagnostics.collapse import detect_collapse
from fnodiag.diagnostics.detectors import RunRecords, detect
from fnodiag.diagnostics.findings import Finding, rank
from fnodiag.runs import SOURCES, RunDir, StoreReader

FINDINGS_VERSION = 1


def _run(run) -> RunDir:
    return run if isinstance(run, RunDir) else RunDir(Path(run))


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


def relative(run: RunDir, root) -> str:
    """The run's path relative to the served folder ``root`` (default: the run's parent), POSIX style.

    Raises
    ------
    ValueError
        The run is not inside ``root``.
    """
    base = Path(root) if root is not None else run.path.parent
    try:
        return run.path.resolve().relative_to(base.resolve()).as_posix()
    except ValueError:
        raise ValueError(f"run {str(run.path)!r} is not inside the served folder {str(base)!r}") from None


def record_findings(run, *, root=None, extra=()) -> list[Finding]:
    """Findings of one run folder from its records (plus ``extra`` ones), ranked, each with its evidence link.

    Parameters
    ----------
    run : RunDir, str or Path
        A run folder (fnodiag's own, a ``LiveCapture`` / ``watch`` run, or an imported one).
    root : str or Path, optional
        The folder the dashboard serves; links name the run relative to it (default: the run's parent).
    extra : iterable of Finding
        Findings found elsewhere (the settings audit), ranked with the others.

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
    run = _run(run)
    if not run.path.is_dir():
        raise FileNotFoundError(f"run folder {str(run.path)!r} does not exist; pass a run directory")
    rel = relative(run, root)
    found = detect(read_records(run)) + list(extra)
    return rank(f.with_link(rel) for f in found)


def save_findings(run, found: list[Finding], *, audited: bool) -> None:
    """Write ``findings.json``: ``{"version": 1, "run": <name>, "settings_audited": audited, "findings": [...]}``.

    ``findings`` holds :meth:`Finding.to_dict` in rank order; ``settings_audited`` says whether the
    asked-vs-got settings were checked (see the module docstring).
    """
    run = _run(run)
    payload = {
        "version": FINDINGS_VERSION,
        "run": run.path.name,
        "settings_audited": bool(audited),
        "findings": [f.to_dict() for f in found],
    }
    run.write_json(run.findings_path.name, payload)


def read_findings(run) -> dict | None:
    """A run's ``findings.json`` as written (None when it has none)."""
    return _run(run).read_json(_run(run).findings_path.name, default=None)


def write_end_of_run(run) -> list[Finding] | None:
    """``findings.json`` of a run that just ended (:func:`record_findings`, no settings audit); never raises.

    Called by the code that ends a run; a failure prints one line naming fnodiag and the on-demand fix
    (``fnodiag diagnose RUN``) and returns None, so a run's end is never spoilt by its findings.
    """
    try:
        found = record_findings(run)
        save_findings(run, found, audited=False)
        return found
    except Exception as exc:  # the run itself is done and recorded: never fail it over its findings
        text = " ".join(f"{type(exc).__name__}: {exc}".split())[:300]
        print(
            f"fnodiag: findings.json not written ({text}); write it later with `fnodiag diagnose RUN`", file=sys.stderr
        )
        return None


__all__ = [
    "FINDINGS_VERSION",
    "read_findings",
    "read_records",
    "record_findings",
    "relative",
    "save_findings",
    "write_end_of_run",
]
