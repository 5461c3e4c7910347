"""fnodiag: diagnose training collapse of neural operators (FNO/U-NO ptychography generators, and any model).

The public face, imported on first use so that ``import fnodiag`` (the dashboard's) imports neither
torch, Lightning nor Panel:

* ``fnodiag.watch(model, run, *, optimizer=None, every=10, probe=None, targets=None, frames=None)``:
  live per-layer capture of any PyTorch loop (:func:`fnodiag.training.watch.watch`; no Lightning);
* ``fnodiag.LiveCapture``: the same capture as a callback of any Lightning ``Trainer``
  (:class:`fnodiag.training.live_capture.LiveCapture`);
* ``fnodiag.show(runs, *, tabs=None)``: the dashboard's views in a notebook cell, live while runs train
  (:func:`fnodiag.dashboard.notebook.show`).
"""

__version__ = "0.1.0"
__all__ = ["LiveCapture", "show", "watch"]


def __getattr__(name: str):
    if name == "watch":
        from fnodiag.training.watch import watch  # on first use: `import fnodiag` stays free of torch

        return watch
    if name == "LiveCapture":
        from fnodiag.training.live_capture import LiveCapture  # on first use: Lightning only when asked for

        return LiveCapture
    if name == "show":
        from fnodiag.dashboard.notebook import show  # on first use: Panel/Bokeh only when a notebook asks

        return show
    raise AttributeError(f"module 'fnodiag' has no attribute {name!r}")
