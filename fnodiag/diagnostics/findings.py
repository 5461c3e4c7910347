"""Findings: what went wrong in a run, where, when and how strongly, each one sentence with a link to its evidence.

A :class:`Finding` names its kind, the layer / module / parameter (or None for the whole run), the step
window ``(first, last)``, the statistic, the size of the change (a ratio to the baseline, or a count)
and a one-sentence summary. The detectors (:mod:`fnodiag.diagnostics.detectors` and
:mod:`fnodiag.diagnostics.regime`) are pure functions of a run's records;
:func:`fnodiag.analysis.findings.findings_from_run` gathers those from a run folder.

Severity and ranking. Every kind has a severity (:data:`KIND_SEVERITY`):

``critical``
    the run's output is lost: non-finite values, output collapse;
``error``
    a layer or a setting is broken: dead channels or units, vanishing or exploding gradients, a setting
    that differs between asked and got;
``warning``
    a statistic left its usual range: a layer's statistics left their early regime, update-to-weight
    ratios, LayerScale / normalisation affine drift, spectral energy above the kept modes.

:func:`rank` orders by severity, then earliest first step (a finding without a step, e.g. a setting,
holds from the start), then the larger ``score``, then upstream layers first. ``score`` is the strength
of the change in decades, ``min(|log10 size|, 12)`` (a fall to 0 or a rise to infinity scores 12).
The severity comes first so that a cascade reads cause-of-failure first: when a 300x learning-rate kick
makes activations explode at step 52 and kills ``decoder.0`` at step 56, the first finding is the
output collapse that starts at ``decoder.0`` (the run's failure), and the explosions follow it.
"""

from __future__ import annotations

import math
import urllib.parse
from dataclasses import asdict, dataclass, field, replace

import numpy as np

from fnodiag.runs import jsonable

SEVERITIES = ("critical", "error", "warning")
KIND_SEVERITY = {
    "nonfinite": "critical",
    "collapse": "critical",
    "settings": "error",
    "dead_channels": "error",
    "dead_units": "error",
    "vanishing_gradients": "error",
    "exploding_gradients": "error",
    "regime_change": "warning",
    "update_ratio": "warning",
    "affine_drift": "warning",
    "spectral_above": "warning",
}
KINDS = tuple(KIND_SEVERITY)
SCORE_CAP = 12.0
#: Dashboard tab showing each store source's evidence (the ``tab`` of a link).
TABS = {"activation": "activations", "grad": "gradients", "param": "parameters", "scalar": "overview"}
SPECTRA_TAB = "spectra"
APP_PATH = "/app"


@dataclass(frozen=True)
class Finding:
    """One thing that went wrong in a run.

    Attributes
    ----------
    kind : str
        One of :data:`KINDS`.
    sentence : str
        What happened, in one sentence.
    layer : str or None
        Layer, module or parameter (None: the whole run).
    first, last : int or None
        Step window: where it started and the last step it still held (None: no step, e.g. a setting).
    statistic : str or None
        The statistic (or scalar name) that shows it.
    source : str or None
        Store source of the evidence: ``activation``, ``grad``, ``param``, ``scalar`` (None: run files).
    size : float or None
        Size of the change: ratio to the baseline (``inf`` / 0 for a rise to infinity / fall to 0), or a count.
    score : float
        Strength in decades, ``min(|log10 size|, 12)``; see the module docstring.
    position : int
        Index of the layer in the run's layer order (upstream first); breaks ranking ties.
    tab : str or None
        Dashboard tab of the evidence.
    link : str or None
        ``/app?run=...&tab=...&stat=...&layer=...&step=...`` (set by :meth:`with_link`).
    details : dict
        Kind-specific numbers (baseline, value, ...), JSON-ready.
    """

    kind: str
    sentence: str
    layer: str | None = None
    first: int | None = None
    last: int | None = None
    statistic: str | None = None
    source: str | None = None
    size: float | None = None
    score: float = 0.0
    position: int = 0
    tab: str | None = None
    link: str | None = None
    details: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.kind not in KIND_SEVERITY:
            raise ValueError(f"unknown finding kind {self.kind!r}; valid kinds: {', '.join(KINDS)}")

    @property
    def severity(self) -> str:
        """``critical``, ``error`` or ``warning`` (:data:`KIND_SEVERITY`)."""
        return KIND_SEVERITY[self.kind]

    def with_link(self, run: str) -> Finding:
        """This finding with its evidence link for ``run`` (the run's path relative to the served folder)."""
        return replace(self, link=evidence_link(run, self))

    def to_dict(self) -> dict:
        """JSON-ready dict (``severity`` added; NaN / inf written as null) for ``findings.json``."""
        return jsonable({**asdict(self), "severity": self.severity}, nonfinite="null")


def evidence_link(run: str, finding: Finding) -> str:
    """``/app?run=<run>&tab=<tab>&stat=<stat>&layer=<layer>&step=<step>``, leaving out what is None."""
    query = {"run": run, "tab": finding.tab, "stat": finding.statistic, "layer": finding.layer, "step": finding.first}
    return f"{APP_PATH}?{urllib.parse.urlencode({k: v for k, v in query.items() if v is not None})}"


def strength(size: float | None) -> float:
    """``min(|log10 size|, SCORE_CAP)``: 0 for None / NaN, the cap for 0 and infinity."""
    if size is None or math.isnan(size):
        return 0.0
    if size <= 0 or math.isinf(size):
        return SCORE_CAP
    return min(abs(math.log10(size)), SCORE_CAP)


def rank(findings) -> list[Finding]:
    """Findings in order: severity, earliest first step (None first), larger score, upstream, kind, layer."""
    return sorted(
        findings,
        key=lambda f: (
            SEVERITIES.index(f.severity),
            -1 if f.first is None else f.first,
            -f.score,
            f.position,
            f.kind,
            f.layer or "",
        ),
    )


# --------------------------------------------------------------------------- helpers


def finding(kind, sentence, layer, first, last, stat, source, size, position, tab=None, **details) -> Finding:
    """A :class:`Finding` scored from its ``size`` (:func:`strength`), its tab from its source unless given."""
    return Finding(
        kind=kind,
        sentence=sentence,
        layer=layer,
        first=first,
        last=last,
        statistic=stat,
        source=source,
        size=size,
        score=strength(size),
        position=position,
        tab=tab or TABS.get(source),
        details=details,
    )


def trailing_start(mask: np.ndarray) -> int:
    """Index where the final run of True in ``mask`` starts (``len(mask)`` when the last entry is False)."""
    false = np.flatnonzero(~np.asarray(mask, dtype=bool))
    return int(false[-1]) + 1 if len(false) else 0


def align(src, layers, steps) -> np.ndarray:
    """``src = (layers, steps, values)`` re-indexed to ``layers`` x ``steps``, ``(LAYER, STEP)`` NaN where absent."""
    out = np.full((len(layers), len(steps)), np.nan)
    s_layers, s_steps, s_values = src
    if not len(s_layers):
        return out
    col = {int(st): j for j, st in enumerate(s_steps)}
    cols = np.array([col.get(int(st), -1) for st in steps], dtype=np.int64)
    row = {name: i for i, name in enumerate(s_layers)}
    for i, name in enumerate(layers):
        if name in row:
            ok = cols >= 0
            out[i, ok] = np.asarray(s_values)[row[name], cols[ok]]
    return out


def fmt(x: float | None) -> str:
    """A number for a sentence: 3 significant digits, ``0`` / ``inf`` spelled plainly."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return f"{x:.3g}"


def times(ratio: float) -> str:
    """``"120x higher"`` / ``"1e+03x lower"`` / ``"to 0"`` for a ratio to a baseline."""
    if ratio == 0:
        return "to 0"
    if math.isinf(ratio):
        return "to infinity"
    return f"{fmt(ratio)}x higher" if ratio >= 1 else f"{fmt(1 / ratio)}x lower"


__all__ = [
    "APP_PATH",
    "KINDS",
    "KIND_SEVERITY",
    "SCORE_CAP",
    "SEVERITIES",
    "SPECTRA_TAB",
    "TABS",
    "Finding",
    "align",
    "evidence_link",
    "finding",
    "fmt",
    "rank",
    "strength",
    "times",
    "trailing_start",
]
