"""fnodiag: diagnose training collapse of FNO/U-NO ptychography generators.

``fnodiag.LiveCapture`` (the live per-layer capture callback, usable in any Lightning ``Trainer``)
is imported on first use, so ``import fnodiag`` (the dashboard's) does not import Lightning.
"""

__version__ = "0.1.0"


def __getattr__(name: str):
    if name == "LiveCapture":
        from fnodiag.training.live_capture import LiveCapture

        return LiveCapture
    raise AttributeError(f"module 'fnodiag' has no attribute {name!r}")
