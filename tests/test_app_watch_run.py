"""The dashboard opens a ``fnodiag.watch`` run of a real neuraloperator FNO, live and finished, without a browser.

The run is a plain PyTorch loop (no Lightning, no ptychography): the folder is listed, its layers are the traced
targets in forward order with every spectral convolution, new steps stream in while the loop still runs, the
Overview leaves out the amp SSIM panels it can never fill, the Reconstructions tab names the run's own frames,
and the Checkpoint tab offers no checkpoint the run does not have.
"""

from __future__ import annotations

import pytest
import torch
from bokeh.document import Document
from neuralop.layers.spectral_convolution import SpectralConv
from neuralop.models import FNO
from torch import nn

import fnodiag
from fnodiag.dashboard.catalog import SINGLE, checkpoints, scan, summarize
from fnodiag.dashboard.dashboard import Dashboard
from fnodiag.runs import RunDir, states


def loop_steps(model, opt, w, x, y, n: int) -> None:
    for _ in range(n):
        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad()
        w.log(loss=loss)


def view(d: Dashboard, title: str):
    return next(v for v in d.views if v.title == title)


@pytest.fixture()
def watched(tmp_path):
    """``runs/fno``: a 2-D FNO watched every 2 steps with a frame of its prediction; the dashboard opened after
    3 steps (the run is live), then 4 more steps; returns (root, model, dashboard, points streamed then)."""
    torch.manual_seed(0)
    model = FNO(n_modes=(8, 8), hidden_channels=16, in_channels=1, out_channels=1, n_layers=2)
    x = torch.randn(4, 1, 32, 32)
    y = x.roll(1, -1)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    frames = lambda out: {"prediction": out[0, 0].float().numpy()}  # noqa: E731
    root = tmp_path / "runs"
    with fnodiag.watch(model, root / "fno", optimizer=opt, every=2, probe=x[:2], frames=frames) as w:
        loop_steps(model, opt, w, x, y, 3)
        d = Dashboard(root)
        assert d.store.rows[0]["state"] == states.RUNNING
        d.layout().get_root(Document())
        d.tabs.active = [v.title for v in d.views].index("Activations")
        d.tick()
        loop_steps(model, opt, w, x, y, 4)
        sent = view(d, "Activations").tick()
    return root, model, d, sent


@pytest.mark.slow
def test_the_dashboard_opens_a_live_then_finished_watch_run_of_a_neuralop_fno(watched):
    root, model, d, sent = watched
    assert sent > 0  # steps 4 and 6 streamed into the open Activations tab while the loop ran
    cat = scan(root)
    assert not cat.problems and [e.label for e in cat.sweeps[SINGLE]] == ["fno"]
    (entry,) = cat.sweeps[SINGLE]
    row = summarize(entry)
    assert row["state"] == states.FINISHED and row["step"] == 7 and row["optimizer"].startswith("Adam")
    assert checkpoints(entry) == []  # nothing to offer in the Checkpoint tab

    d.store.refresh()
    d.store.arms = list(d.store.param.arms.objects)
    d.store.seeds = list(d.store.param.seeds.objects)
    for k in range(len(d.tabs)):  # every tab builds and ticks over the finished run
        d.tabs.active = k
        d.tick()

    convs = [n for n, m in model.named_modules() if isinstance(m, SpectralConv)]
    targets = RunDir(root / "fno").read_json("effective_config.json")["capture"]["targets"]
    (act,) = view(d, "Activations")._feeds
    assert act.layers == targets and [n for n in act.layers if n in convs] == convs  # forward order, every conv
    grads = view(d, "Gradients")._feeds[0]
    assert all(any(n == c or n.startswith(c + ".") for n in grads.layers) for c in convs)

    overview = view(d, "Overview")
    assert overview._bars not in overview._layout.objects  # no amp SSIM of best / last weights to show
    (figures,) = [o for o in overview._layout.objects if type(o).__name__ == "Row"]
    assert len(figures.objects) == 1  # the loss only: no validation amp SSIM curve

    (frames,) = view(d, "Reconstructions")._feeds
    assert frames.steps == [0, 2, 4, 6] and "prediction" in frames.info.object
