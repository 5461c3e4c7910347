"""CSV downloads of the Overview / Activations / Gradients plots (the Compare tab has its own, per plot).

One long table per tab, ``plot, run, series, step, value``: a row per drawn point of every plot of
the tab for the chosen runs, read from the stores when the button is clicked (so a live run's CSV
holds every step written so far, at full resolution: a long run's heatmap may show bin means of
these). Series are what the legend names: ``train`` / ``val`` (loss), a layer name (per-layer
plots), ``pre-clip`` / ``post-clip`` (global gradient norm), ``best`` / ``last`` (amp SSIM bars,
step empty).
"""

from __future__ import annotations

import io

import pandas as pd
import panel as pn

from fnodiag.runs import StoreReader
from fnodiag.runs.names import CLIP_FRACTION, GRAD_NORM_POST, GRAD_NORM_PRE, LR, TRAIN_LOSS, VAL_AMP_SSIM, VAL_LOSS

COLUMNS = ["plot", "run", "series", "step", "value"]

# tab title -> [(plot name, kind, what)]: kind "scalar" (store scalar name, scope) or "layers" (source, stat)
PLOTS = {
    "Overview": [
        ("loss", "scalar", (TRAIN_LOSS, None, "train")),
        ("loss", "scalar", (VAL_LOSS, "epoch", "val")),
        ("validation amp SSIM", "scalar", (VAL_AMP_SSIM, "epoch", "val")),
    ],
    "Activations": [("activation per layer", "layers", ("activation", None))],
    "Gradients": [
        ("gradient norm per layer", "layers", ("grad", "norm")),
        ("global grad norm", "scalar", (GRAD_NORM_PRE, None, "pre-clip")),
        ("global grad norm", "scalar", (GRAD_NORM_POST, None, "post-clip")),
        ("realised learning rate", "scalar", (LR, None, "lr")),
        ("fraction of steps clipped", "scalar", (CLIP_FRACTION, "epoch", "clip fraction")),
    ],
}


def tab_rows(title: str, store) -> list[dict]:
    """The rows of tab ``title`` for the runs chosen in ``store``
    (a :class:`~fnodiag.dashboard.store.DashboardStore`)."""
    rows = []
    for e in store.selected():
        if not e.run.store_path.is_file():
            continue
        with StoreReader(e.run.store_path) as reader:
            for plot, kind, what in PLOTS.get(title, []):
                if kind == "scalar":
                    name, scope, series = what
                    r = reader.scalars(name, scope=scope)
                    rows += [
                        {"plot": plot, "run": e.label, "series": series, "step": s, "value": v}
                        for s, v in zip(r.step.tolist(), r.value.tolist())
                    ]
                else:
                    source, stat = what
                    stat = stat or store.act_stat
                    layers, steps, values = reader.layer_matrix(source, stat)
                    for i, layer in enumerate(layers):
                        rows += [
                            {"plot": f"{plot}: {stat}", "run": e.label, "series": layer, "step": s, "value": v}
                            for s, v in zip(steps.tolist(), values[i].tolist())
                            if v == v
                        ]
        if title == "Overview":
            row = store.row(e)
            rows += [
                {
                    "plot": "amp SSIM of the best / last weights",
                    "run": e.label,
                    "series": k,
                    "step": None,
                    "value": row.get(f"amp_ssim_{k}"),
                }
                for k in ("best", "last")
                if row.get(f"amp_ssim_{k}") is not None
            ]
    return rows


def download_button(title: str, store) -> pn.widgets.FileDownload:
    """A button that downloads :func:`tab_rows` of tab ``title`` as ``<title>.csv``."""

    def callback():
        buf = io.BytesIO(pd.DataFrame(tab_rows(title, store), columns=COLUMNS).to_csv(index=False).encode())
        buf.seek(0)
        return buf

    return pn.widgets.FileDownload(
        callback=callback,
        filename=f"{title.lower()}.csv",
        color="light",
        width=320,
        label="Download this tab's plot data (CSV)",
    )
