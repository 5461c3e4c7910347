"""Diagnostics of training runs: pure statistics (``stats``), target choice (``targets``), the recorder (``hooks``).

``stats`` holds the maths (activation statistics of any rank, gradient, weight and scale statistics,
and the one-transfer :func:`to_host`); ``targets`` chooses the layers to watch (:func:`choose_targets`);
``hooks`` holds :class:`ActivationRecorder`, which applies the maths to those layers during forward
passes. Stat names (``ACTIVATION_STATS``, ``BRANCH_STAT``,
``PARAM_STATS``, ``SCALE_STATS``) are a contract with the run store and the dashboard.
"""

from fnodiag.diagnostics.hooks import ActivationRecorder
from fnodiag.diagnostics.stats import (
    ACTIVATION_STATS,
    BRANCH_STAT,
    GLOBAL_STATS,
    PARAM_STATS,
    SCALE_STATS,
    SPATIAL_STATS,
    absent_stats,
    activation_stat_names,
    activation_stats,
    branch_ratio,
    grad_norms,
    scale_params,
    snapshot_weights,
    to_host,
    update_ratios,
    weight_norms,
)
from fnodiag.diagnostics.targets import OUTPUT, ProbeError, TargetPlan, choose_targets, default_targets, traced_targets

__all__ = [
    "ACTIVATION_STATS",
    "BRANCH_STAT",
    "GLOBAL_STATS",
    "OUTPUT",
    "PARAM_STATS",
    "SCALE_STATS",
    "SPATIAL_STATS",
    "ActivationRecorder",
    "ProbeError",
    "TargetPlan",
    "absent_stats",
    "activation_stat_names",
    "activation_stats",
    "branch_ratio",
    "choose_targets",
    "default_targets",
    "grad_norms",
    "scale_params",
    "snapshot_weights",
    "to_host",
    "traced_targets",
    "update_ratios",
    "weight_norms",
]
