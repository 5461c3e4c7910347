"""``fnodiag.watch`` on a plain PyTorch loop: the run folder, no host sync between captures, errors, no Lightning."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn
from transfers import NO_TRANSFER, ONE_CAPTURE

import fnodiag
from fnodiag.runs import RunDir, StoreReader
from fnodiag.runs.names import GRAD_NORM_PRE, LR, TRAIN_LOSS


class Net(nn.Module):
    """conv -> GELU -> conv on (B, 1, 8, 8): a model fnodiag does not know."""

    def __init__(self):
        super().__init__()
        self.inp = nn.Conv2d(1, 4, 3, padding=1)
        self.act = nn.GELU()
        self.out = nn.Conv2d(4, 1, 3, padding=1)

    def forward(self, x):
        return self.out(self.act(self.inp(x)))


def _batches(n: int, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(4, 1, 8, 8, generator=g) for _ in range(n)]


def _step(model, opt, x) -> torch.Tensor:
    loss = (model(x) - x.flip(-1)).pow(2).mean()
    loss.backward()
    opt.step()
    opt.zero_grad()
    return loss


def _frames(out):
    return {"pred": out[0, 0], "mean": out.mean(0)[0].numpy()}


def test_watch_records_a_plain_loop_into_a_run_folder_every_reader_lists(tmp_path):
    torch.manual_seed(0)
    model = Net()
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    batches = _batches(7)
    with fnodiag.watch(model, tmp_path / "runs" / "net", optimizer=opt, every=3, frames=_frames) as w:
        losses = []
        for x in batches:
            loss = _step(model, opt, x)
            w.log(loss=loss)
            losses.append(loss.detach())
    run = RunDir(tmp_path / "runs" / "net")
    assert run.read_origin() == {"kind": "torch", "module": "test_watch.Net"}
    status = run.read_status()
    assert status["state"] == "finished" and status["step"] == 7 and status["message"] == "training finished"
    eff = run.read_json("effective_config.json")
    assert eff["kind"] == "torch" and eff["optimizer"]["class"] == "SGD" and eff["generator"]["parameters"] == 77
    assert (
        eff["capture"]["targets"] == ["inp", "act", "out", "output"] and eff["capture"]["probe_source"] == "first input"
    )
    with StoreReader(run.store_path) as r:
        np.testing.assert_allclose(r.scalars(TRAIN_LOSS).value, torch.stack(losses).numpy(), rtol=1e-6)
        assert r.scalars(TRAIN_LOSS).step.tolist() == list(range(7)) and np.allclose(r.scalars(LR).value, 0.05)
        act = r.layer_matrix("activation", "mean")
        assert act.layers == ["inp", "act", "out", "output"] and act.steps.tolist() == [0, 3, 6]
        grads = r.layer_matrix("grad", "norm")  # per-module norms combine to the step's global norm
        pre = dict(zip(r.scalars(GRAD_NORM_PRE).step.tolist(), r.scalars(GRAD_NORM_PRE).value.tolist()))
        for j, step in enumerate(grads.steps):
            assert np.sqrt(np.nansum(grads.values[:, j] ** 2)) == pytest.approx(pre[int(step)], rel=1e-5)
        assert np.isfinite(r.layer_matrix("param", "update_ratio").values).all()
        frames = r.frames()
        assert frames.names == ["pred", "mean"] and frames.step.tolist() == [0, 3, 6]
        assert frames.channels["pred"].shape == (3, 1, 8, 8) and len(frames.amp) == 0
    # step 0: the initial weights on the first two samples of the first batch (the kept first input)
    model.load_state_dict(initial)
    with torch.no_grad():
        out = model(batches[0][:2])
    assert act.values[act.layers.index("output"), 0] == pytest.approx(float(out.mean()), rel=1e-5, abs=1e-7)
    np.testing.assert_allclose(
        frames.channels["pred"][0, 0], out[0, 0].numpy(), atol=float(np.ptp(out[0, 0].numpy())) / 255
    )
    from fnodiag.dashboard.catalog import scan, summarize

    cat = scan(tmp_path / "runs")
    assert not cat.problems
    (entry,) = [e for entries in cat.sweeps.values() for e in entries]
    row = summarize(entry)
    assert row["state"] == "finished" and row["optimizer"].startswith("SGD")


def test_steps_between_captures_never_read_a_tensor_and_each_capture_is_one_transfer(tmp_path, count_transfers):
    torch.manual_seed(0)
    model = Net()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    batches = _batches(12)
    w = fnodiag.watch(model, tmp_path / "run", optimizer=opt, every=5)
    w.log(loss=_step(model, opt, batches[0]))  # step 0: a capture
    _step(model, opt, batches[1])  # its transfer happens at step 1's pre-step hook
    w.log(loss=torch.tensor(1.0))
    calls = count_transfers(strict=True)
    for x in batches[2:5]:  # steps 2-4: no capture, no flush
        w.log(loss=_step(model, opt, x), other=torch.tensor(3.0))
    assert calls == NO_TRANSFER
    for x in batches[5:7]:  # step 5 captures; its transfer (with steps 1-5's scalars) runs at step 6's pre-hook
        w.log(loss=_step(model, opt, x))
    assert calls == ONE_CAPTURE
    w.close()
    with StoreReader(RunDir(tmp_path / "run").store_path) as r:
        assert r.scalars(TRAIN_LOSS).step.tolist() == list(range(7))
        assert r.scalars("other").step.tolist() == [2, 3, 4]
        assert r.layer_matrix("activation", "std").steps.tolist() == [0, 5]


def test_without_an_optimizer_each_log_is_a_step_and_only_activations_are_captured(tmp_path):
    torch.manual_seed(0)
    model = Net()
    with fnodiag.watch(model, tmp_path / "run", every=2, probe=torch.ones(1, 1, 8, 8)) as w:
        for x in _batches(5):
            w.log(loss=model(x).pow(2).mean())
    with StoreReader(RunDir(tmp_path / "run").store_path) as r:
        assert r.scalars(TRAIN_LOSS).step.tolist() == [0, 1, 2, 3, 4]
        assert r.layer_matrix("activation", "std").steps.tolist() == [0, 2, 4]
        assert r.layers("grad") == [] and r.layers("param") == []
    eff = RunDir(tmp_path / "run").read_json("effective_config.json")
    assert eff["optimizer"] is None and eff["steps_from"] == "watch.log" and eff["capture"]["probe_source"] == "given"


def _raise(error):
    def fail(*args, **kwargs):
        raise error

    return fail


@pytest.mark.parametrize("broken, fix", [("probe", "probe="), ("hook", "targets="), ("store", "disk")])
def test_a_capture_error_never_stops_the_loop(tmp_path, capsys, monkeypatch, broken, fix):
    torch.manual_seed(0)
    model = Net()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    probe = torch.ones(2, 3, 8, 8) if broken == "probe" else None  # 3 channels: the first conv refuses it
    w = fnodiag.watch(model, tmp_path / "run", optimizer=opt, every=2, probe=probe)
    if broken == "store":
        monkeypatch.setattr(w.writer.store, "log_layer_stats", _raise(OSError("disk full")))
    if broken == "hook":  # a statistic that fails inside the forward hooks of the probe pass
        monkeypatch.setattr("fnodiag.diagnostics.hooks.activation_stats", _raise(RuntimeError("bad stat")))
    for x in _batches(6):
        w.log(loss=_step(model, opt, x))
    status = w.close()
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("fnodiag: capture disabled at step") and "training goes on" in err[0]
    assert fix in err[0]
    run = RunDir(tmp_path / "run")
    assert status["state"] == "finished" and "capture disabled at step" in status["message"]
    assert run.read_status()["state"] == "finished"
    capture = run.read_json("effective_config.json")["capture"]
    assert capture["disabled_at_step"] == 0 and fix in capture["error"]
    with StoreReader(run.store_path) as r:
        assert r.scalars(TRAIN_LOSS).step.tolist() == list(range(6))  # the loop's scalars went on to the end
        assert r.layers("activation") == []


class DictNet(nn.Module):
    """Called as ``model({"x": (B, 3), "name": str}, scale=...)``."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 2)

    def forward(self, batch, scale=1.0):
        return self.lin(batch["x"]) * scale


def test_the_first_call_is_kept_as_the_probe_whatever_its_arguments(tmp_path):
    torch.manual_seed(0)
    model, x = DictNet(), torch.randn(5, 3)
    with fnodiag.watch(model, tmp_path / "run", every=1) as w:
        w.log(loss=model({"x": x, "name": "batch 0"}, scale=torch.tensor(2.0)).mean())
    with torch.no_grad():
        expected = model({"x": x[:2]}, scale=2.0)
    with StoreReader(RunDir(tmp_path / "run").store_path) as r:
        m = r.layer_matrix("activation", "mean")
        assert m.layers == ["lin", "output"] and m.steps.tolist() == [0]
        assert m.values[1, 0] == pytest.approx(float(expected.mean()), rel=1e-5)


def test_setting_errors_write_nothing_and_the_folder_stays_usable(tmp_path):
    model = Net()
    with pytest.raises(ValueError, match="unknown target.*'nope'"):
        fnodiag.watch(model, tmp_path / "run", targets=["inp", "nope"])
    with pytest.raises(ValueError, match="capture period"):
        fnodiag.watch(model, tmp_path / "run", every=0)
    with pytest.raises(TypeError, match="torch.optim.Optimizer"):
        fnodiag.watch(model, tmp_path / "run", optimizer="sgd")
    assert not (tmp_path / "run").exists()
    with fnodiag.watch(model, tmp_path / "run", targets=["inp"]) as w:
        w.log(loss=model(torch.ones(2, 1, 8, 8)).mean())
    assert RunDir(tmp_path / "run").read_status()["state"] == "finished"
    with pytest.raises(FileExistsError, match="training record"):
        fnodiag.watch(model, tmp_path / "run")


@pytest.mark.parametrize("exc, state", [(RuntimeError("boom"), "failed"), (KeyboardInterrupt(), "interrupted")])
def test_an_exception_in_the_block_closes_the_run_and_is_raised_again(tmp_path, exc, state):
    model = Net()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    with pytest.raises(type(exc)):
        with fnodiag.watch(model, tmp_path / "run", optimizer=opt) as w:
            w.log(loss=_step(model, opt, torch.ones(2, 1, 8, 8)))
            raise exc
    status = RunDir(tmp_path / "run").read_status()
    assert status["state"] == state and status["step"] == 1
    assert w.closed and not opt._optimizer_step_pre_hooks and not opt._optimizer_step_post_hooks


PLAIN_LOOP = """
import json, sys, torch
import fnodiag
model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
opt = torch.optim.Adam(model.parameters(), lr=1e-2)
with fnodiag.watch(model, sys.argv[1], optimizer=opt, every=2) as w:
    for _ in range(4):
        loss = model(torch.randn(8, 4)).pow(2).mean(); loss.backward(); opt.step(); opt.zero_grad()
        w.log(loss=loss)
print(json.dumps({"lightning": sorted(m for m in sys.modules if m.split(".")[0] == "lightning")}))
"""


@pytest.mark.slow
def test_watch_never_imports_lightning(tmp_path):
    out = subprocess.run(
        [sys.executable, "-c", PLAIN_LOOP, str(tmp_path / "run")], capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.splitlines()[-1]) == {"lightning": []}
    assert RunDir(tmp_path / "run").read_status()["state"] == "finished"
