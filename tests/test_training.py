"""Training: what a run records is what really trained (optimizer, schedule, clipping, generator).

Every assertion reads the run directory a real (tiny) Lightning training wrote, never the factories.
"""

from __future__ import annotations

import json
import math
import signal

import numpy as np
import pytest
import torch
from torch import nn
from transfers import NO_TRANSFER, ONE_CAPTURE

from fnodiag.models import build_model, count_parameters
from fnodiag.ptycho.metrics import METRIC_KEYS
from fnodiag.runs import StoreReader
from fnodiag.sweeps.summary import run_row
from fnodiag.training.clipping import adaptive_clip_, clip_norm_, global_grad_norm, unitwise_norm
from fnodiag.training.evaluate import generator_state
from fnodiag.training.optimizers import OPTIMIZERS, build_optimizer
from fnodiag.training.run import train
from fnodiag.training.schedulers import expected_lr, warmup_cosine_factor
from fnodiag.training.system import ReconstructionSystem

EPOCHS = 3
STEPS_PER_EPOCH = 81 // 8  # tiny train split, drop_last

ARMS = {
    "adam": ({"optim.beta1": 0.8, "optim.beta2": 0.99, "optim.weight_decay": 1e-4}, "Adam"),
    "adamw": ({"optim.weight_decay": 0.01, "optim.beta1": 0.85}, "AdamW"),
    "sgd": ({"optim.momentum": 0.9, "optim.lr": 3e-3}, "SGD"),
}


@pytest.fixture(scope="module")
def arm_runs(tmp_path_factory, dataset_cache, tiny_cfg):
    """One tiny 3-epoch warmup-cosine run per optimizer."""
    out = tmp_path_factory.mktemp("arms")
    runs = {}
    for name, (extra, _) in ARMS.items():
        cfg = tiny_cfg.override(
            {
                "optim.name": name,
                "schedule.name": "warmup_cosine",
                "schedule.warmup_epochs": 1,
                "schedule.min_lr_ratio": 0.05,
                "train.epochs": EPOCHS,
                **extra,
            }
        ).validate()
        runs[name] = (cfg, train(cfg, out, name=name, cache_dir=dataset_cache, progress=False))
    return runs


@pytest.mark.slow
@pytest.mark.parametrize("name", list(ARMS))
def test_recorded_optimizer_is_the_configured_one(arm_runs, name):
    cfg, run = arm_runs[name]
    eff = run.read_json("effective_config.json")
    assert eff["optimizer"]["class"] == ARMS[name][1]
    (group,) = eff["optimizer"]["param_groups"]
    assert group["initial_lr"] == pytest.approx(cfg.optim.lr)
    assert group["weight_decay"] == pytest.approx(cfg.optim.weight_decay)
    if name == "sgd":
        assert group["momentum"] == pytest.approx(0.9) and group["nesterov"] is True
    else:
        assert group["betas"] == pytest.approx([cfg.optim.beta1, cfg.optim.beta2])
    assert group["n_parameters"] == eff["generator"]["parameters"]
    assert eff["scheduler"]["class"] == "WarmupCosineLR" and eff["scheduler"]["interval"] == "epoch"
    assert eff["grad_clip"]["algorithm"] == "none"
    assert eff["seed"] == cfg.train.seed and eff["device"] == "cpu" and eff["precision"] == "32-true"
    assert eff["steps_per_epoch"] == STEPS_PER_EPOCH
    assert (eff["infer_batch_size"], eff["num_workers"], eff["capture"]) == (16, 0, {"every": 0})


@pytest.mark.parametrize("name", list(ARMS))
def test_realised_lr_follows_the_schedule_every_step(arm_runs, name):
    cfg, run = arm_runs[name]
    lr = StoreReader(run.store_path).scalars("lr")
    assert len(lr) == EPOCHS * STEPS_PER_EPOCH
    expected = [expected_lr(cfg.schedule, cfg.optim.lr, int(e), EPOCHS) for e in lr.epoch]
    np.testing.assert_allclose(lr.value, expected, rtol=1e-9)
    assert np.array_equal(lr.step, np.arange(len(lr)))
    # warmup (0.1·lr) -> peak (lr) -> cosine (0.525·lr): the schedule really stepped
    history = run.read_history()
    np.testing.assert_allclose(history["lr"], cfg.optim.lr * np.array([0.1, 1.0, 0.525]), rtol=1e-9)


def test_run_directory_is_complete(arm_runs):
    cfg, run = arm_runs["adam"]
    assert run.read_status()["state"] == "finished"
    assert run.read_config() == cfg
    history = run.read_history()
    assert len(history["train_loss"]) == len(history["val_loss"]) == EPOCHS
    assert all(math.isfinite(v) for v in history["train_loss"] + history["val_loss"])
    metrics = run.read_metrics()
    for tag in ("best", "last"):
        assert set(METRIC_KEYS) <= set(metrics[tag])
    assert run.best_ckpt_path.is_file() and run.last_ckpt_path.is_file() and run.recon_path.stat().st_size > 1000
    # model.pt is a generator-only state dict that loads strictly into a fresh generator
    gen = build_model(cfg.model, cfg.data.N)
    gen.load_state_dict(torch.load(run.model_path, weights_only=True))
    assert count_parameters(gen) == run.read_json("effective_config.json")["generator"]["parameters"]
    # per-step records: one row per optimizer step, finite loss and grad norms
    reader = StoreReader(run.store_path)
    for name in ("train/loss", "grad/norm_preclip", "grad/norm_postclip"):
        rec = reader.scalars(name)
        assert len(rec) == EPOCHS * STEPS_PER_EPOCH and np.isfinite(rec.value).all()


def test_optimizers_give_different_training(arm_runs):
    """The reference's SGD/AdamW/Adam arms gave identical numbers; real arms cannot."""
    finals = {name: run.read_history()["val_loss"][-1] for name, (_, run) in arm_runs.items()}
    assert len({round(v, 10) for v in finals.values()}) == 3, finals
    w = {name: generator_state(run.last_ckpt_path)["head.weight"] for name, (_, run) in arm_runs.items()}
    assert not torch.equal(w["adam"], w["adamw"]) and not torch.equal(w["adam"], w["sgd"])


def _unit_norms(x: torch.Tensor, axis: int) -> np.ndarray:
    """Per-output-unit L2 norms by numpy (complex by magnitude); a vector is one unit."""
    a = np.abs(x.detach().cpu().numpy().astype(np.complex128))
    if a.ndim <= 1:
        return np.array([np.sqrt((a**2).sum())])
    return np.sqrt((np.moveaxis(a, axis, 0).reshape(a.shape[axis], -1) ** 2).sum(axis=1))


def _agc_ratios(generator: nn.Module, clip_factor: float, eps: float = 1e-3) -> dict[str, np.ndarray]:
    """``||G_i|| / (clip_factor * max(||W_i||, eps))`` for every output unit of every parameter, written
    out independently of the package: spectral weights and transposed convolutions are (C_in, C_out, ...),
    so their units lie on axis 1; every other weight is (C_out, ...)."""
    from fnodiag.models.spectral import SpectralConv2d

    params = []
    for mod_name, module in generator.named_modules():
        if isinstance(module, SpectralConv2d):
            params += [(f"{mod_name}.weights.{k}", w, 1) for k, w in enumerate(module.weights)]
        elif not isinstance(module, nn.ParameterList):
            axis = 1 if isinstance(module, nn.ConvTranspose2d) else 0
            params += [
                (f"{mod_name}.{n}", p, axis if p.ndim >= 2 else 0) for n, p in module.named_parameters(recurse=False)
            ]
    assert len(params) == len(list(generator.parameters()))  # every parameter once
    return {
        name: _unit_norms(p.grad, axis) / (clip_factor * np.maximum(_unit_norms(p, axis), eps))
        for name, p, axis in params
        if p.grad is not None
    }


@pytest.mark.parametrize("algorithm, value", [("norm", 1e-4), ("value", 1e-7), ("agc", 1e-4)])
def test_clipping_is_applied_and_recorded(tiny_cfg, dataset_cache, tmp_path, monkeypatch, algorithm, value):
    """Real training; after every clip the gradients obey the rule of the algorithm."""
    original = ReconstructionSystem.configure_gradient_clipping
    seen = []

    def checked(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None):
        original(self, optimizer, gradient_clip_val, gradient_clip_algorithm)
        if algorithm == "value":
            seen.append(
                max(
                    float(torch.view_as_real(p.grad).abs().max() if p.grad.is_complex() else p.grad.abs().max())
                    for p in self.parameters()
                    if p.grad is not None
                )
            )
        elif algorithm == "agc":
            seen.append(max(float(r.max()) for r in _agc_ratios(self.generator, value).values()))

    monkeypatch.setattr(ReconstructionSystem, "configure_gradient_clipping", checked)
    cfg = tiny_cfg.override({"clip.algorithm": algorithm, "clip.value": value, "train.epochs": 1})
    run = train(cfg, tmp_path, name="clip", cache_dir=dataset_cache, progress=False)
    eff = run.read_json("effective_config.json")
    assert eff["grad_clip"]["algorithm"] == algorithm and eff["grad_clip"]["value"] == pytest.approx(value)
    reader = StoreReader(run.store_path)
    pre, post = reader.scalars("grad/norm_preclip").value, reader.scalars("grad/norm_postclip").value
    assert (post < pre).all()
    assert run.read_history()["clip_fraction"] == [1.0]
    if algorithm == "norm":
        np.testing.assert_allclose(post, value, rtol=1e-3)
    elif algorithm == "value":  # max |g| <= value, and it is reached (every step clips)
        assert len(seen) == STEPS_PER_EPOCH and max(seen) <= value * (1 + 1e-6) and min(seen) > 0.5 * value
    else:  # every output unit within clip_factor * max(||W_i||, eps), and the bound reached
        assert len(seen) == STEPS_PER_EPOCH and max(seen) <= 1 + 1e-4 and min(seen) > 1 - 1e-4


@pytest.mark.parametrize("layout", ["symmetric", "reference"])
def test_agc_bounds_every_output_unit_of_the_real_generator(tiny_cfg, layout):
    """Spectral weights (C_in, C_out, m_h, m_w) are clipped per output channel (axis 1), as every unit is."""
    cfg = tiny_cfg.override({"model.arch": "stable_hybrid", "model.spectral_layout": layout}).validate()
    torch.manual_seed(0)
    generator = build_model(cfg.model, cfg.data.N)
    out = generator(torch.rand(4, 1, cfg.data.N, cfg.data.N))
    (out.abs() ** 2).mean().mul(1e3).backward()
    clip = 1e-5  # LayerScale keeps the spectral gradients small: this clips some of their units, not all
    before = _agc_ratios(generator, clip)
    spectral = [k for k in before if "spectral.weights" in k]
    assert len(spectral) == (2 if layout == "symmetric" else 1) * 3  # 2 encoder blocks + the bottleneck
    assert all(before[k].size == generator.get_submodule(k.rsplit(".weights", 1)[0]).out_channels for k in spectral)
    assert any((before[k] > 1.01).any() for k in spectral) and any((before[k] < 0.99).any() for k in spectral)
    grads = {n: p.grad.clone() for n, p in generator.named_parameters()}
    adaptive_clip_(generator, clip_factor=clip)
    after = _agc_ratios(generator, clip)
    assert set(after) == set(before)
    for k, r in after.items():
        assert (r <= 1 + 1e-5).all(), k
        clipped = before[k] > 1
        np.testing.assert_allclose(r[clipped], 1.0, rtol=1e-5, err_msg=k)  # clipped exactly to the bound
        np.testing.assert_allclose(r[~clipped], before[k][~clipped], rtol=1e-6, err_msg=k)  # others untouched
    assert any(not torch.equal(p.grad, grads[n]) for n, p in generator.named_parameters() if "spectral" in n)


def test_exponential_and_plateau_schedules(tiny_cfg, dataset_cache, tmp_path):
    cfg = tiny_cfg.override({"schedule.name": "exponential", "schedule.gamma": 0.5})
    run = train(cfg, tmp_path, name="exp", cache_dir=dataset_cache, progress=False)
    assert run.read_json("effective_config.json")["scheduler"]["class"] == "ExponentialLR"
    np.testing.assert_allclose(run.read_history()["lr"], [cfg.optim.lr, 0.5 * cfg.optim.lr])
    cfg = tiny_cfg.override({"schedule.name": "plateau", "train.epochs": 1})
    eff = train(cfg, tmp_path, name="plateau", cache_dir=dataset_cache, progress=False).read_json(
        "effective_config.json"
    )
    assert eff["scheduler"]["class"] == "ReduceLROnPlateau" and eff["scheduler"]["monitor"] == "val/loss"


def test_plateau_schedule_reduces_the_lr_on_a_plateau():
    """Driven by a validation loss that stops improving: factor after ``patience`` bad epochs, floored at min_lr."""
    from fnodiag.config import ScheduleConfig
    from fnodiag.training.schedulers import MONITOR, build_scheduler

    cfg = ScheduleConfig(name="plateau", plateau_factor=0.5, plateau_patience=1, plateau_min_lr=2e-3)
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1e-2)
    entry = build_scheduler(opt, cfg, total_epochs=10)
    assert entry["monitor"] == MONITOR and entry["interval"] == "epoch"
    lrs = []
    for val_loss in (1.0, 0.5, 0.5, 0.5, 0.5, 0.5, 0.4, 0.4, 0.4, 0.4, 0.4):
        entry["scheduler"].step(val_loss)
        lrs.append(opt.param_groups[0]["lr"])
    assert lrs == pytest.approx([1e-2, 1e-2, 1e-2, 5e-3, 5e-3, 2.5e-3, 2.5e-3, 2.5e-3, 2e-3, 2e-3, 2e-3])


def test_non_finite_loss_stops_the_run_and_keeps_last_good_checkpoint(tiny_cfg, dataset_cache, tmp_path, monkeypatch):
    bad_step = STEPS_PER_EPOCH + 3  # inside the second epoch
    original = ReconstructionSystem.physics_loss

    def physics_loss(self, x):
        loss = original(self, x)
        return loss * float("nan") if self.training and self.global_step == bad_step else loss

    monkeypatch.setattr(ReconstructionSystem, "physics_loss", physics_loss)
    run = train(tiny_cfg.override({"train.epochs": 3}), tmp_path, name="nan", cache_dir=dataset_cache, progress=False)
    status = run.read_status()
    assert status["state"] == "diverged" and status["step"] == bad_step and "non-finite" in status["message"]
    ckpt = torch.load(run.last_ckpt_path, weights_only=True)
    assert ckpt["global_step"] == STEPS_PER_EPOCH  # written at the end of the first (good) epoch
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values() if v.is_floating_point() or v.is_complex())
    assert StoreReader(run.store_path).scalars("train/loss").step.max() == bad_step - 1


def test_training_steps_between_flushes_never_read_a_tensor(tiny_cfg, dataset_cache, tmp_path, count_transfers):
    """Steps 1-3 of an epoch read no tensor on the host; the capture of step 4 (and steps 5-7) is one transfer.

    SGD, because torch's Adam reads its own step counter with ``.item()`` (a CPU tensor, not a
    device sync); frames off (a frame is its own transfer, every ``frame_every`` steps).
    """
    from transfer_window import TransferWindow

    cfg = tiny_cfg.override(
        {"train.epochs": 1, "optim.name": "sgd", "train.frame_every": 0, "train.capture_every": 4, "model.blocks": 1}
    )
    quiet, captured = TransferWindow(count_transfers, 1, 3), TransferWindow(count_transfers, 4, 7)
    run = train(cfg, tmp_path, name="t", cache_dir=dataset_cache, progress=False, extra_callbacks=[quiet, captured])
    assert quiet.counts == NO_TRANSFER
    assert captured.counts == ONE_CAPTURE
    reader = StoreReader(run.store_path)
    assert reader.scalars("train/loss").step.tolist() == list(range(STEPS_PER_EPOCH))
    assert reader.layer_matrix("activation", "std").steps.tolist() == [0, 4, 8]
    assert run.read_status()["state"] == "finished"


# ---- pure functions, no Trainer ----------------------------------------------------------


def test_warmup_cosine_factor_known_values():
    f = lambda e: warmup_cosine_factor(e, warmup_epochs=2, total_epochs=10, min_lr_ratio=0.05)  # noqa: E731
    assert [f(0), f(1), f(2)] == pytest.approx([0.1, 0.55, 1.0])
    assert f(6) == pytest.approx(0.05 + 0.95 * 0.5)  # halfway through the cosine
    assert f(10) == pytest.approx(0.05)
    assert warmup_cosine_factor(0, warmup_epochs=0, total_epochs=4, min_lr_ratio=0.0) == 1.0


def test_optimizer_registry_rejects_unknown_names():
    from fnodiag.config import OptimConfig

    with pytest.raises(ValueError, match="adam, adamw, sgd"):
        build_optimizer(nn.Linear(2, 2).parameters(), OptimConfig(name="lamb"))
    opt = build_optimizer(nn.Linear(2, 2).parameters(), OptimConfig(name="sgd", momentum=0.0))
    assert opt.param_groups[0]["nesterov"] is False
    assert set(OPTIMIZERS) == {"adam", "adamw", "sgd", "radam", "nadam", "rmsprop"}


def test_global_grad_norm_includes_complex_gradients():
    a = nn.Parameter(torch.zeros(3))
    b = nn.Parameter(torch.zeros(2, dtype=torch.complex64))
    a.grad = torch.tensor([3.0, 0.0, 0.0])
    b.grad = torch.tensor([4j, 0], dtype=torch.complex64)
    assert global_grad_norm([a, b]).item() == pytest.approx(5.0)


def test_adaptive_clip_is_unitwise():
    """Row 0 of a Linear has ||W_0|| = 1 and ||G_0|| = 10 → scaled to 0.1·1 = 0.1; row 1 stays."""
    lin = nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 2.0]]))
    lin.weight.grad = torch.tensor([[0.0, 10.0], [0.0, 0.1]])
    adaptive_clip_(lin, clip_factor=0.1)
    np.testing.assert_allclose(lin.weight.grad.numpy(), [[0.0, 0.1], [0.0, 0.1]], rtol=1e-6)
    conv_t = nn.ConvTranspose2d(3, 5, 2)
    assert unitwise_norm(conv_t.weight, 1).shape == (1, 5, 1, 1)


def test_clip_norm_matches_torch_on_complex_and_real_grads():
    torch.manual_seed(0)
    a = nn.Parameter(torch.randn(5))
    b = nn.Parameter(torch.randn(3, dtype=torch.complex64))
    a.grad, b.grad = torch.randn(5), torch.randn(3, dtype=torch.complex64)
    ref = [g.clone() for g in (a.grad, b.grad)]
    total = global_grad_norm([a, b])
    expected = torch.sqrt(ref[0].square().sum() + ref[1].abs().square().sum())
    assert total.item() == pytest.approx(expected.item(), rel=1e-6)
    clip_norm_([a, b], 0.5, total)
    assert global_grad_norm([a, b]).item() == pytest.approx(0.5, rel=1e-5)
    torch.testing.assert_close(b.grad, ref[1] * (0.5 / (expected + 1e-6)))


def test_unitwise_norm_of_complex_weights_uses_output_axis():
    w = torch.randn(3, 5, 4, 4, dtype=torch.complex64)  # spectral layout (C_in, C_out, m, m)
    got = unitwise_norm(w, 1)
    assert got.shape == (1, 5, 1, 1)
    torch.testing.assert_close(got.reshape(-1), w.abs().square().sum(dim=(0, 2, 3)).sqrt())


def test_interrupted_run_resumes_from_last_checkpoint(tiny_cfg, dataset_cache, tmp_path, monkeypatch):
    """Kill a run in its third epoch, resume it: it continues after epoch 2 without duplicate records."""
    cfg = tiny_cfg.override({"train.epochs": 4})
    original = ReconstructionSystem.training_step

    def interrupting_step(self, batch, batch_idx):
        if self.global_step == 2 * STEPS_PER_EPOCH + 2:
            raise KeyboardInterrupt
        return original(self, batch, batch_idx)

    monkeypatch.setattr(ReconstructionSystem, "training_step", interrupting_step)
    try:  # Lightning's graceful shutdown: status via on_exception, SIGINT ignored, then exit(1)
        with pytest.raises(SystemExit):
            train(cfg, tmp_path, name="r", cache_dir=dataset_cache, progress=False)
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    run_dir = tmp_path / "r"
    assert json.loads((run_dir / "status.json").read_text())["state"] == "interrupted"
    monkeypatch.setattr(ReconstructionSystem, "training_step", original)
    run = train(cfg, tmp_path, name="r", cache_dir=dataset_cache, progress=False, resume=True)
    assert run.read_status()["state"] == "finished"
    history = run.read_history()
    assert len(history["train_loss"]) == len(history["lr"]) == 4
    steps = StoreReader(run.store_path).scalars("train/loss").step
    assert np.array_equal(steps, np.arange(4 * STEPS_PER_EPOCH))  # each step once, in order
    assert run.read_json("effective_config.json")["resumed_from"]["epoch"] == 2


def test_run_diverging_before_any_checkpoint_records_no_metrics(tiny_cfg, dataset_cache, tmp_path, monkeypatch):
    original = ReconstructionSystem.physics_loss
    monkeypatch.setattr(
        ReconstructionSystem,
        "physics_loss",
        lambda self, x: original(self, x) * (float("nan") if self.global_step == 2 else 1.0),
    )
    run = train(tiny_cfg, tmp_path, name="early", cache_dir=dataset_cache, progress=False)
    assert run.read_status()["state"] == "diverged" and not run.last_ckpt_path.exists()
    assert run.read_metrics() == {"best": None, "last": None}
    collapse = run.read_json("collapse.json")  # no capture (capture_every 0), no metrics: nothing to judge
    assert collapse["verdict"] == "insufficient_data" and collapse["learned_then_collapsed"] is False
    assert run_row(run, "a", 0)["outcome"] == "diverged"


def test_validation_amp_ssim_per_epoch_matches_the_final_metrics(arm_runs):
    """The per-epoch val/amp_ssim of the last epoch equals the last weights' evaluation."""
    _, run = arm_runs["adam"]
    history = run.read_history()
    assert len(history["val_amp_ssim"]) == EPOCHS and all(math.isfinite(v) for v in history["val_amp_ssim"])
    assert history["val_amp_ssim"][-1] == pytest.approx(run.read_metrics()["last"]["amp_ssim"], abs=1e-5)
    epoch_rows = StoreReader(run.store_path).scalars("epoch/val_amp_ssim", scope="epoch")
    assert len(epoch_rows) == EPOCHS
