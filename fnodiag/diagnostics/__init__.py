"""Diagnostics of training runs: pure statistics (``stats``) and the forward-hook recorder (``hooks``).

``stats`` holds the maths (activation, gradient, weight and scale statistics, and the one-transfer
:func:`to_host`); ``hooks`` holds :class:`ActivationRecorder`, which applies it to named layers of
a generator during forward passes. Stat names (``ACTIVATION_STATS``, ``BRANCH_STAT``,
``PARAM_STATS``, ``SCALE_STATS``) are a contract with the run store and the dashboard.
"""

from fnodiag.diagnostics.hooks import OUTPUT, ActivationRecorder, default_targets
from fnodiag.diagnostics.stats import (
    ACTIVATION_STATS,
    BRANCH_STAT,
    PARAM_STATS,
    SCALE_STATS,
    activation_stats,
    branch_ratio,
    grad_norms,
    scale_params,
    snapshot_weights,
    to_host,
    update_ratios,
    weight_norms,
)

__all__ = [
    "ACTIVATION_STATS",
    "BRANCH_STAT",
    "OUTPUT",
    "PARAM_STATS",
    "SCALE_STATS",
    "ActivationRecorder",
    "activation_stats",
    "branch_ratio",
    "default_targets",
    "grad_norms",
    "scale_params",
    "snapshot_weights",
    "to_host",
    "update_ratios",
    "weight_norms",
]
