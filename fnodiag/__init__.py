"""fnodiag: diagnose training collapse of FNO/U-NO ptychography generators.

``fnodiag.LiveCapture`` (the live per-layer capture callback, usable in any Lightning ``Trainer``)
and ``fnodiag.show`` (the dashboard's views in a notebook cell, :mod:`fnodiag.dashboard.notebook`)
are imported on first use, so ``import fnodiag`` imports neither Lightning nor Panel.
"""

__version__ = "0.1.0"


def __getattr__(name: str):
    if name == "LiveCapture":
        from fnodiag.training.live_capture import LiveCapture

        return LiveCapture
    if name == "show":
        from fnodiag.dashboard.notebook import show

        return show
    raise AttributeError(f"module 'fnodiag' has no attribute {name!r}")
