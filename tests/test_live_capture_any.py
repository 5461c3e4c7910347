"""``fnodiag.LiveCapture`` in a plain Lightning Trainer on a model that is not one of fnodiag's generators."""

from __future__ import annotations

import json
import subprocess
import sys

import lightning as L
import numpy as np
import pytest
import torch
from torch import nn
from transfers import NO_TRANSFER, ONE_CAPTURE

import fnodiag
from fnodiag.runs import RunDir, StoreReader


class ComplexLinear(nn.Module):
    """``z = x W^T`` with a complex weight: complex activations and complex gradients."""

    def __init__(self, n_in: int, n_out: int):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(n_out, n_in, dtype=torch.complex64) / n_in**0.5)

    def forward(self, x):
        return x.to(torch.complex64) @ self.weight.T


class TinyComplexNet(L.LightningModule):
    """MLP -> complex linear -> real head; trains on a regression target with SGD."""

    def __init__(self, lr: float = 0.05):
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(nn.Linear(8, 16), nn.GELU())
        self.cplx = ComplexLinear(16, 4)
        self.head = nn.Linear(8, 1)

    def forward(self, x):
        z = self.cplx(self.net(x))
        return self.head(torch.cat([z.real, z.imag], dim=-1))

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = nn.functional.mse_loss(self(x), y)
        self.log("train_loss", loss, on_epoch=True, on_step=False)
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)


def _data(n=24):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 8, generator=g)
    y = x[:, :1] * 2 - x[:, 1:2]
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=4, shuffle=False)


def _fit(model, callback, steps=6):
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
    trainer.fit(model, _data())
    return trainer


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    torch.manual_seed(0)
    model = TinyComplexNet()
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    run = tmp_path_factory.mktemp("runs") / "tiny-complex"
    _fit(model, fnodiag.LiveCapture(run, every=2))
    return run, initial


def test_live_capture_any_model_layers_steps_and_scalars(trained):
    run, _ = trained
    with StoreReader(RunDir(run).store_path) as r:
        assert r.layers("activation") == ["net.0", "net.1", "cplx", "head", "output"]
        m = r.layer_matrix("activation", "std")
        assert m.steps.tolist() == [0, 2, 4]
        assert np.isfinite(m.values).all()
        grads = r.layer_matrix("grad", "norm")
        assert grads.layers == ["net.0", "cplx", "head"] and np.isfinite(grads.values).all()
        assert np.isfinite(r.layer_matrix("param", "update_ratio").values).all()
        loss = r.scalars("train/loss")
        assert loss.step.tolist() == list(range(6)) and np.isfinite(loss.value).all()
        assert np.allclose(r.scalars("lr").value, 0.05)
        pre, post = r.scalars("grad/norm_preclip").value, r.scalars("grad/norm_postclip").value
        assert len(pre) == 6 and np.allclose(pre, post)  # no clipping configured
    rd = RunDir(run)
    eff = rd.read_json("effective_config.json")
    assert eff["kind"] == "lightning" and eff["optimizer"]["class"] == "SGD"
    assert eff["capture"]["every"] == 2 and eff["capture"]["probe_source"] == "first training batch"
    assert eff["capture"]["probe_batch"] == 2 and eff["generator"]["parameters"] == 8 * 16 + 16 + 16 * 4 + 9
    assert rd.read_status()["state"] == "finished"
    assert rd.read_origin()["kind"] == "lightning" and rd.read_origin()["hparams"] == {"lr": 0.05}


def test_live_capture_matches_independent_computation_at_step_0(trained):
    """Step 0 stats are those of the initial weights on the first two samples of the first batch."""
    run, initial = trained
    model = TinyComplexNet()
    model.load_state_dict(initial)
    x, y = next(iter(_data()))
    with torch.no_grad():
        z = model.cplx(model.net(x[:2])).numpy()
    a = np.abs(z).astype(np.float64)  # complex activations are measured by magnitude
    loss = nn.functional.mse_loss(model(x), y)
    loss.backward()
    grad = model.cplx.weight.grad.numpy()
    with StoreReader(RunDir(run).store_path) as r:
        st = {
            (rec_stat): v
            for rec_stat, v, s in zip(
                r.layer_stats(layer="cplx", source="activation").stat,
                r.layer_stats(layer="cplx", source="activation").value,
                r.layer_stats(layer="cplx", source="activation").step,
            )
            if s == 0
        }
        g0 = r.layer_matrix("grad", "norm")
        first_loss = float(r.scalars("train/loss").value[0])
    assert st["mean"] == pytest.approx(a.mean(), rel=1e-5)
    assert st["std"] == pytest.approx(a.std(), rel=1e-4)
    assert g0.values[g0.layers.index("cplx"), 0] == pytest.approx(np.sqrt((np.abs(grad) ** 2).sum()), rel=1e-5)
    assert first_loss == pytest.approx(float(loss), rel=1e-6)


def test_live_capture_run_read_back_in_another_process_and_listed_by_the_dashboard(trained):
    run, _ = trained
    code = (
        "import json, sys; from fnodiag.runs import StoreReader; r = StoreReader(sys.argv[1]); "
        "m = r.layer_matrix('activation', 'abs_mean'); "
        "print(json.dumps({'layers': m.layers, 'steps': m.steps.tolist(), 'loss': len(r.scalars('train/loss'))}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(RunDir(run).store_path)],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    got = json.loads(out.stdout)
    assert got == {"layers": ["net.0", "net.1", "cplx", "head", "output"], "steps": [0, 2, 4], "loss": 6}
    from fnodiag.dashboard.catalog import scan, summarize

    cat = scan(run.parent)
    assert not cat.problems
    (entry,) = [e for entries in cat.sweeps.values() for e in entries]
    row = summarize(entry)
    assert row["state"] == "finished" and row["optimizer"].startswith("SGD")


def test_live_capture_module_paths_and_given_probe(tmp_path):
    torch.manual_seed(1)
    probe = torch.randn(3, 8)
    cb = fnodiag.LiveCapture(tmp_path / "paths", module=["cplx", "head"], probe=probe, every=3)
    _fit(TinyComplexNet(), cb, steps=4)
    with StoreReader(RunDir(tmp_path / "paths").store_path) as r:
        m = r.layer_matrix("activation", "mean")
        assert m.layers == ["cplx", "head"] and m.steps.tolist() == [0, 3]
    sub = fnodiag.LiveCapture(tmp_path / "sub", module="net", every=1)
    _fit(TinyComplexNet(), sub, steps=2)
    with StoreReader(RunDir(tmp_path / "sub").store_path) as r:
        assert r.layers("activation") == ["0", "1", "output"]


def test_live_capture_bad_settings_are_one_line_errors(tmp_path):
    with pytest.raises(ValueError, match="capture period"):
        fnodiag.LiveCapture(tmp_path / "a", every=0)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("x")
    with pytest.raises(FileExistsError, match="not empty"):
        fnodiag.LiveCapture(tmp_path / "full")
    assert (tmp_path / "full" / "keep.txt").read_text() == "x"
    with pytest.raises(ValueError, match="not a submodule"):
        _fit(TinyComplexNet(), fnodiag.LiveCapture(tmp_path / "b", module="nope"), steps=1)


# -- the capture core under Lightning: no host sync between captures, errors that never stop training --------


def test_steps_between_captures_never_read_a_tensor(tmp_path, count_transfers):
    """12 steps, capture every 5: steps 1-4 and 6-9 read nothing; step 5 is one transfer (its .cpu() and .numpy())."""
    from transfer_window import TransferWindow

    torch.manual_seed(0)
    quiet, captured = TransferWindow(count_transfers, 1, 4), TransferWindow(count_transfers, 5, 5)
    trainer = L.Trainer(
        max_steps=12,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[fnodiag.LiveCapture(tmp_path / "run", every=5), quiet, captured],
    )
    trainer.fit(TinyComplexNet(), _data(48))
    assert quiet.counts == NO_TRANSFER
    assert captured.counts == ONE_CAPTURE
    with StoreReader(RunDir(tmp_path / "run").store_path) as r:
        assert r.scalars("train/loss").step.tolist() == list(range(12))  # every step reached the store
        assert r.layer_matrix("activation", "std").steps.tolist() == [0, 5, 10]


def test_a_wrong_shape_probe_leaves_the_run_finished_with_the_warning_recorded(tmp_path, capsys):
    run = tmp_path / "bad-probe"
    _fit(TinyComplexNet(), fnodiag.LiveCapture(run, every=2, probe=torch.randn(2, 5)), steps=6)
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("fnodiag")]
    assert len(err) == 1 and "capture disabled at step 0" in err[0] and "probe=" in err[0]
    rd = RunDir(run)
    status = rd.read_status()
    assert status["state"] == "finished" and "capture disabled at step 0" in status["message"]
    assert "probe" in rd.read_json("effective_config.json")["capture"]["error"]
    with StoreReader(rd.store_path) as r:
        assert r.scalars("train/loss").step.tolist() == list(range(6)) and r.layers("activation") == []
    assert len(rd.read_history()["train_loss"]) == 1  # one epoch: 24 samples in batches of 4


def test_an_unknown_module_writes_nothing_and_the_folder_is_usable_afterwards(tmp_path):
    run = tmp_path / "later"
    with pytest.raises(ValueError, match="not a submodule"):
        _fit(TinyComplexNet(), fnodiag.LiveCapture(run, module="nope"), steps=1)
    with pytest.raises(ValueError, match="unknown target"):
        _fit(TinyComplexNet(), fnodiag.LiveCapture(run, targets=["net.0", "nada"]), steps=1)
    assert not run.exists()
    _fit(TinyComplexNet(), fnodiag.LiveCapture(run, every=3), steps=3)
    assert RunDir(run).read_status()["state"] == "finished"


class FailsAtFirstStep(TinyComplexNet):
    def training_step(self, batch, batch_idx):
        raise RuntimeError("the user's own bug")


def test_a_run_that_failed_before_its_first_step_may_use_its_folder_again(tmp_path):
    run = tmp_path / "retry"
    with pytest.raises(RuntimeError, match="own bug"):
        _fit(FailsAtFirstStep(), fnodiag.LiveCapture(run), steps=2)
    assert RunDir(run).read_status()["state"] == "failed"  # recorded, but no training record
    _fit(TinyComplexNet(), fnodiag.LiveCapture(run, every=2), steps=2)
    assert RunDir(run).read_status()["state"] == "finished"
    with pytest.raises(FileExistsError, match="training record"):
        fnodiag.LiveCapture(run)


def test_a_submodule_without_a_probe_is_captured_on_its_own_first_input(tmp_path):
    """``cplx`` takes (B, 16) features, not the LightningModule's (B, 8) input: its own first input is kept."""
    torch.manual_seed(0)
    model = TinyComplexNet()
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    frames = lambda z: {"re": z.real.T, "im": z.imag.T}  # noqa: E731
    cb = fnodiag.LiveCapture(tmp_path / "sub", module="cplx", every=2, frames=frames)
    _fit(model, cb, steps=4)
    rd = RunDir(tmp_path / "sub")
    assert rd.read_json("effective_config.json")["capture"]["probe_source"] == "first input of 'cplx'"
    assert rd.read_status()["state"] == "finished" and "capture" not in rd.read_status()["message"]
    model.load_state_dict(initial)
    x, _ = next(iter(_data()))
    with torch.no_grad():
        z = model.cplx(model.net(x[:2]))
    with StoreReader(rd.store_path) as r:
        m = r.layer_matrix("activation", "mean")
        assert m.layers == ["output"] and m.steps.tolist() == [0, 2]
        assert m.values[0, 0] == pytest.approx(float(z.abs().mean()), rel=1e-5)
        f = r.frames()
        assert f.names == ["re", "im"] and f.channels["re"].shape == (2, 1, 4, 2)
