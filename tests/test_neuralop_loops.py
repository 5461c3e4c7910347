"""Real neuraloperator FNOs watched in every kind of loop: a plain loop (``fnodiag.watch``), neuraloperator's
own ``Trainer`` (``watch`` given only the optimizer) and Lightning (``fnodiag.LiveCapture``).

Issue 22's done-when: every spectral convolution recorded with finite statistics, >= 95 % of the recorded
(layer, statistic) cells finite, layers in forward order, a wrong-shape probe leaves the run ``finished``
with the warning recorded, an unknown module path writes nothing and the folder is then usable.
"""

from __future__ import annotations

import lightning as L
import numpy as np
import pytest
import torch
from neuralop.layers.spectral_convolution import SpectralConv
from neuralop.models import FNO
from torch import nn

import fnodiag
from fnodiag.diagnostics.stats import ACTIVATION_STATS
from fnodiag.runs import RunDir, StoreReader
from fnodiag.runs.names import GRAD_NORM_PRE, TRAIN_LOSS

#: (FNO keyword arguments, sample shape (C, *S)): 1-D, the issue's 2-D model, a small 3-D one
MODELS = {
    "1d": (dict(n_modes=(8,), hidden_channels=16, n_layers=3), (1, 64)),
    "2d": (dict(n_modes=(8, 8), hidden_channels=24, n_layers=4), (1, 32, 32)),
    "3d": (dict(n_modes=(4, 4, 4), hidden_channels=8, n_layers=2), (1, 12, 12, 12)),
}


def make(kind: str) -> FNO:
    torch.manual_seed(0)
    return FNO(in_channels=1, out_channels=1, **MODELS[kind][0])


def heat_pairs(kind: str, n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` smooth random fields and the same fields after heat diffusion (a low-pass in Fourier space)."""
    shape = MODELS[kind][1]
    g = torch.Generator().manual_seed(seed)
    u0 = torch.randn(n, *shape, generator=g)
    dims = tuple(range(2, 2 + len(shape) - 1))
    k2 = sum(
        torch.fft.fftfreq(shape[1 + i]).reshape([-1 if j == i else 1 for j in range(len(dims))]) ** 2
        for i in range(len(dims))
    )
    u = torch.fft.ifftn(torch.fft.fftn(u0, dim=dims) * torch.exp(-200.0 * k2), dim=dims).real
    return u0, u


def spectral_convs(model: nn.Module, prefix: str = "") -> list[str]:
    return [prefix + n for n, m in model.named_modules() if isinstance(m, SpectralConv)]


def check_run(run, model: nn.Module, *, prefix: str = "", steps: list[int]) -> None:
    """The done-when checks on a finished run folder of a watched FNO."""
    rd = RunDir(run)
    assert rd.read_status()["state"] == "finished", rd.read_status()
    assert "capture" not in rd.read_status()["message"]
    plan = rd.read_json("effective_config.json")["capture"]
    with StoreReader(rd.store_path) as r:
        layers = r.layers("activation")
        assert layers == plan["targets"]  # the store keeps the traced forward order
        cells = []
        for stat in ACTIVATION_STATS:
            m = r.layer_matrix("activation", stat)
            assert m.steps.tolist() == steps
            cells.append(np.isfinite(m.values).ravel())
            for conv in spectral_convs(model, prefix):  # every spectral convolution, every statistic, finite
                assert np.isfinite(m.values[m.layers.index(conv)]).all(), (conv, stat)
        cells = np.concatenate(cells)
        assert cells.mean() >= 0.95, f"{cells.sum()} of {cells.size} (layer, statistic) cells finite"
        grads = r.layer_matrix("grad", "norm")
        assert grads.steps.tolist() == steps
        for conv in spectral_convs(model, prefix):  # its factorized weight's gradient, recorded per module
            rows = [i for i, name in enumerate(grads.layers) if name == conv or name.startswith(conv + ".")]
            assert rows and np.isfinite(grads.values[rows]).all() and (grads.values[rows] > 0).all()
        assert np.isfinite(r.scalars(GRAD_NORM_PRE).value).all()
    # forward order: positional embedding and lifting, the blocks in order, the projection, the output
    names = [n[len(prefix) :] if n.startswith(prefix) else n for n in layers]
    first = lambda p: min(i for i, t in enumerate(names) if t.startswith(p))  # noqa: E731
    last = lambda p: max(i for i, t in enumerate(names) if t.startswith(p))  # noqa: E731
    assert last("lifting") < first("fno_blocks") and last("fno_blocks") < first("projection")
    assert names[-1] == "output"
    convs = [n for n in layers if n in spectral_convs(model, prefix)]
    assert convs == spectral_convs(model, prefix)  # block 0 before block 1 ...


@pytest.mark.parametrize("kind", list(MODELS))
def test_plain_loop_watch_records_every_spectral_conv_in_forward_order(tmp_path, kind):
    model = make(kind)
    x, y = heat_pairs(kind, 8)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    with fnodiag.watch(model, tmp_path / kind, optimizer=opt, every=2) as w:
        for step in range(5):
            i = (2 * step) % 8
            loss = nn.functional.mse_loss(model(x[i : i + 2]), y[i : i + 2])
            loss.backward()
            opt.step()
            opt.zero_grad()
            w.log(loss=loss)
    check_run(tmp_path / kind, model, steps=[0, 2, 4])
    with StoreReader(RunDir(tmp_path / kind).store_path) as r:
        assert r.scalars(TRAIN_LOSS).step.tolist() == list(range(5))


def test_neuralop_trainer_needs_only_the_optimizer_handed_to_watch(tmp_path):
    """neuraloperator's Trainer steps a torch optimizer: ``watch(model, run, optimizer=opt)`` and no other call."""
    from neuralop.losses import LpLoss
    from neuralop.training import Trainer

    model = make("2d")
    x, y = heat_pairs("2d", 12)
    loader = torch.utils.data.DataLoader(
        [{"x": a, "y": b} for a, b in zip(x[:8], y[:8])], batch_size=2, shuffle=False
    )  # 4 steps an epoch, the Trainer calls model(x=..., y=...)
    tests = {"32": torch.utils.data.DataLoader([{"x": a, "y": b} for a, b in zip(x[8:], y[8:])], batch_size=2)}
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    scheduler = torch.optim.lr_scheduler.StepLR(opt, step_size=10)
    w = fnodiag.watch(model, tmp_path / "trainer", optimizer=opt, every=3)
    Trainer(model=model, n_epochs=2, device="cpu", verbose=False).train(
        loader, tests, opt, scheduler, training_loss=LpLoss(d=2), eval_losses={"l2": LpLoss(d=2)}
    )
    w.close()
    check_run(tmp_path / "trainer", model, steps=[0, 3, 6])
    rd = RunDir(tmp_path / "trainer")
    assert rd.read_json("effective_config.json")["capture"]["probe_source"] == "first input"
    with StoreReader(rd.store_path) as r:
        assert r.scalars(GRAD_NORM_PRE).step.tolist() == list(range(8))  # every optimizer step, no w.log


class FNOSystem(L.LightningModule):
    """An FNO inside a LightningModule, as its users write one."""

    def __init__(self, kind: str = "2d"):
        super().__init__()
        self.model = make(kind)

    def forward(self, x):
        return self.model(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = nn.functional.mse_loss(self(x), y)
        self.log("train_loss", loss)
        return loss

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=1e-3)


def fit(system, callback, steps: int = 5, kind: str = "2d") -> L.Trainer:
    x, y = heat_pairs(kind, 8)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=2)
    trainer = L.Trainer(
        max_steps=steps,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[callback],
    )
    trainer.fit(system, loader)
    return trainer


def test_lightning_live_capture_records_every_spectral_conv_in_forward_order(tmp_path):
    system = FNOSystem()
    fit(system, fnodiag.LiveCapture(tmp_path / "lightning", every=2))
    check_run(tmp_path / "lightning", system.model, prefix="model.", steps=[0, 2, 4])


def test_a_wrong_shape_probe_leaves_the_fno_run_finished_with_the_warning_recorded(tmp_path, capsys):
    model = make("2d")
    x, y = heat_pairs("2d", 4)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    probe = torch.zeros(2, 3, 32, 32)  # 3 channels: the FNO's lifting takes 1 (+ 2 grid channels)
    with fnodiag.watch(model, tmp_path / "bad", optimizer=opt, every=1, probe=probe) as w:
        for _ in range(3):
            loss = nn.functional.mse_loss(model(x), y)
            loss.backward()
            opt.step()
            opt.zero_grad()
            w.log(loss=loss)
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("fnodiag")]
    assert len(err) == 1 and "capture disabled at step 0" in err[0] and "probe=" in err[0]
    rd = RunDir(tmp_path / "bad")
    assert rd.read_status()["state"] == "finished" and "capture disabled at step 0" in rd.read_status()["message"]
    assert "probe" in rd.read_json("effective_config.json")["capture"]["error"]
    with StoreReader(rd.store_path) as r:
        assert r.scalars(TRAIN_LOSS).step.tolist() == [0, 1, 2] and r.layers("activation") == []


def test_an_unknown_module_path_writes_nothing_and_the_folder_is_then_usable(tmp_path):
    run = tmp_path / "later"
    with pytest.raises(ValueError, match="not a submodule"):
        fit(FNOSystem(), fnodiag.LiveCapture(run, module="model.fno_block"), steps=1)
    with pytest.raises(ValueError, match="unknown target"):
        fnodiag.watch(make("2d"), run, targets=["fno_blocks.convs.0", "fno_blocks.conv.9"])
    assert not run.exists()
    system = FNOSystem()
    fit(system, fnodiag.LiveCapture(run, module="model.fno_blocks", every=2), steps=3)
    rd = RunDir(run)
    assert rd.read_status()["state"] == "finished" and "capture" not in rd.read_status()["message"]
    with StoreReader(rd.store_path) as r:  # the submodule's own first call: fno_blocks(x, 0), block 0
        m = r.layer_matrix("activation", "spatial_std")
        assert "convs.0" in m.layers and np.isfinite(m.values).all() and m.steps.tolist() == [0, 2]
