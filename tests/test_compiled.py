"""A ``torch.compile``d model watched by ``fnodiag.watch`` and ``LiveCapture``: eager's statistics, no recompilation.

The compiled model is compiled with the ``aot_eager`` backend (the same graph capture as inductor, no C
compiler: seconds, not minutes) through torch's own ``CompileCounterWithBackend``, whose ``frame_count``
is the number of frames dynamo compiled (a recompilation adds one).
"""

from __future__ import annotations

import lightning as L
import numpy as np
import torch
from torch import nn
from torch._dynamo.testing import CompileCounterWithBackend
from torch.utils.data import DataLoader, TensorDataset

import fnodiag
from fnodiag.runs import RunDir, StoreReader
from fnodiag.runs.names import TRAIN_LOSS

STEPS, EVERY = 8, 3  # captures at steps 0, 3, 6


class Net(nn.Module):
    """conv -> GELU -> conv on (B, 1, 8, 8)."""

    def __init__(self):
        super().__init__()
        self.inp = nn.Conv2d(1, 4, 3, padding=1)
        self.act = nn.GELU()
        self.out = nn.Conv2d(4, 1, 3, padding=1)

    def forward(self, x):
        return self.out(self.act(self.inp(x)))


def _batches(n: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return [torch.randn(4, 1, 8, 8, generator=g) for _ in range(n)]


def _train(model: nn.Module, run, after_step=lambda: None) -> None:
    """``STEPS`` SGD steps of ``model`` (a plain or a compiled module), watched into ``run``."""
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    with fnodiag.watch(model, run, optimizer=opt, every=EVERY) as w:
        for x in _batches(STEPS):
            loss = (model(x) - x.flip(-1)).pow(2).mean()
            loss.backward()
            opt.step()
            opt.zero_grad()
            w.log(loss=loss)
            after_step()


def _records(run) -> dict:
    with StoreReader(RunDir(run).store_path) as r:
        out = {("loss", ""): r.scalars(TRAIN_LOSS).value}
        for source, stat in (("activation", "std"), ("activation", "abs_mean"), ("grad", "norm")):
            m = r.layer_matrix(source, stat)
            out[(source, stat)] = (m.layers, m.steps.tolist(), np.asarray(m.values))
        m = r.layer_matrix("param", "update_ratio")
        out[("param", "update_ratio")] = (m.layers, m.steps.tolist(), np.asarray(m.values))
    return out


def test_a_compiled_model_is_watched_with_eager_statistics_and_never_recompiles(tmp_path, count_transfers):
    torch.manual_seed(0)
    eager = Net()
    twin = Net()
    twin.load_state_dict(eager.state_dict())
    counter = CompileCounterWithBackend("aot_eager")
    compiled = torch.compile(twin, backend=counter)

    _train(eager, tmp_path / "eager")
    compiles: list[int] = []
    calls, quiet = count_transfers(strict=True), []  # counted in steps 2 and 5: no capture, no capture written

    def after_step():
        compiles.append(counter.frame_count)
        if len(compiles) in (2, 3, 5, 6):  # the ends of steps 1, 2, 4 and 5
            quiet.append(dict(calls))

    _train(compiled, tmp_path / "compiled", after_step)
    assert quiet[0] == quiet[1] and quiet[2] == quiet[3]  # steps 2 and 5 read nothing from a tensor
    assert quiet[1] != quiet[2]  # while the capture between them was read (the counter counts)
    assert compiles[0] >= 1  # the compiled graph ran
    assert compiles == [compiles[0]] * STEPS  # captures at 0, 3, 6 and the steps between never recompiled

    want, got = _records(tmp_path / "eager"), _records(tmp_path / "compiled")
    np.testing.assert_allclose(got[("loss", "")], want[("loss", "")], rtol=1e-4, atol=1e-6)
    for key in want:
        if key[0] == "loss":
            continue
        (wl, ws, wv), (gl, gs, gv) = want[key], got[key]
        assert gl == wl and gs == ws == [0, 3, 6], key  # the same layers (no "_orig_mod." prefix), every capture
        np.testing.assert_allclose(gv, wv, rtol=1e-4, atol=1e-6, err_msg=str(key))
    eff = RunDir(tmp_path / "compiled").read_json("effective_config.json")
    assert eff["capture"]["compiled"] == "other backend" and eff["generator"]["class"] == "Net"


class Lit(L.LightningModule):
    def __init__(self, backend):
        super().__init__()
        self.net = torch.compile(Net(), backend=backend)

    def training_step(self, batch, batch_idx):
        (x,) = batch
        return (self.net(x) - x.flip(-1)).pow(2).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05)


def test_live_capture_watches_a_compiled_submodule_without_recompiling(tmp_path):
    torch.manual_seed(0)
    counter = CompileCounterWithBackend("aot_eager")
    data = DataLoader(TensorDataset(torch.cat(_batches(STEPS))), batch_size=4)
    seen: list[int] = []

    class Count(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            seen.append(counter.frame_count)

    trainer = L.Trainer(
        max_steps=STEPS,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[fnodiag.LiveCapture(tmp_path / "run", module="net", every=EVERY), Count()],
    )
    trainer.fit(Lit(counter), data)
    assert seen[0] >= 1 and seen == [seen[0]] * STEPS
    with StoreReader(RunDir(tmp_path / "run").store_path) as r:
        m = r.layer_matrix("activation", "std")
        assert m.steps.tolist() == [0, 3, 6] and "inp" in m.layers and np.isfinite(m.values).all()


class ComplexNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(4, 5, dtype=torch.cfloat))

    def forward(self, x):
        return torch.fft.irfft2(torch.fft.rfft2(x)[..., :4, :5] * self.weight, s=x.shape[-2:])


def test_complex_weights_under_inductor_give_one_clear_line(tmp_path, capsys):
    compiled = torch.compile(ComplexNet())  # lazy: nothing is compiled until it is called
    w = fnodiag.watch(compiled, tmp_path / "c", probe=torch.randn(2, 1, 8, 8))
    w.close()
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("fnodiag")]
    assert len(lines) == 1
    assert "inductor" in lines[0] and "complex parameters ('weight')" in lines[0] and 'backend="aot_eager"' in lines[0]
    fnodiag.watch(torch.compile(ComplexNet(), backend="aot_eager"), tmp_path / "d").close()
    fnodiag.watch(torch.compile(Net()), tmp_path / "e").close()  # real weights: inductor is fine
    assert not [line for line in capsys.readouterr().err.splitlines() if line.startswith("fnodiag")]
