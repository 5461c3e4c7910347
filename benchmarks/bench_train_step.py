"""Training step time of ``stable_hybrid`` at the stage-a size: fnodiag's Lightning run vs plain PyTorch.

Both loops train the same generator, forward model, loss and optimizer on the same batches, in one
process. The Lightning side is the real thing users run: ``ReconstructionSystem`` in a Trainer with
the run recorder (store writes, effective configuration) and checkpointing. The plain side is the
minimal ``zero_grad / loss / backward / step`` loop. Prints the median step times and their ratio.

Usage: python benchmarks/bench_train_step.py [--steps 8] [--warmup 2] [--device cpu|cuda] [--batch 16]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import lightning as L
import numpy as np
import torch

from fnodiag.config import preset
from fnodiag.ptycho.simulate import simulate
from fnodiag.runs import RunDir, RunStore
from fnodiag.training.data import GridLinesDataModule
from fnodiag.training.live_capture import PROBE_BATCH, LiveCapture
from fnodiag.training.live_frames import LiveFrames, probe_truth
from fnodiag.training.run import build_trainer
from fnodiag.training.system import ReconstructionSystem


class StepTimer(L.Callback):
    """Wall time of every optimizer step (batch start to batch end, device synchronised)."""

    def __init__(self):
        self.times, self._t = [], 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        _sync(pl_module.device)
        self._t = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        _sync(pl_module.device)
        self.times.append(time.perf_counter() - self._t)


def _sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def plain_steps(cfg, data, n_steps: int, device: str) -> list[float]:
    torch.manual_seed(cfg.train.seed)
    system = ReconstructionSystem(cfg.to_dict(), probe=data.probe).to(device)
    gen, fm, loss_fn = system.generator, system.forward_model, system.loss_fn
    opt = torch.optim.Adam(gen.parameters(), lr=cfg.optim.lr)
    x_all = torch.from_numpy(data.train.diffraction).unsqueeze(1)
    times = []
    for i in range(n_steps):
        x = x_all[i * cfg.train.batch_size : (i + 1) * cfg.train.batch_size].to(device)
        _sync(device)
        t = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(fm(gen(x)), x)
        loss.backward()
        opt.step()
        _sync(device)
        times.append(time.perf_counter() - t)
    return times


def lightning_steps(
    cfg,
    data,
    n_steps: int,
    workdir: Path,
    capture_every: int = 0,
    frame_every: int = 0,
    timer: L.Callback | None = None,
) -> tuple[list[float], int]:
    """Step times (``timer``'s, default ``StepTimer``) and the store's bytes of a real fnodiag Lightning run:
    recorder, checkpointing, live capture every ``capture_every`` steps and frames every ``frame_every`` (0: off)."""
    L.seed_everything(cfg.train.seed, verbose=False)
    run = RunDir.create(Path(tempfile.mkdtemp(dir=workdir)) / "run", cfg)
    store = RunStore(run.store_path)
    timer = timer or StepTimer()
    callbacks = [timer]
    probe = torch.from_numpy(data.train.diffraction[:PROBE_BATCH]).unsqueeze(1)
    if capture_every:
        callbacks.insert(0, LiveCapture(store, module="generator", probe=probe, every=capture_every))
    if frame_every:
        callbacks.insert(0, LiveFrames(store, probe, probe_truth(data.train, PROBE_BATCH), every=frame_every))
    trainer = build_trainer(
        cfg, run, store, {"key": data.key, "N": cfg.data.N}, progress=False, extra_callbacks=callbacks
    )
    trainer.fit_loop.epoch_loop.max_steps = n_steps
    trainer.limit_train_batches = n_steps
    trainer.limit_val_batches = 0
    dm = GridLinesDataModule(data, batch_size=cfg.train.batch_size, infer_batch_size=cfg.train.infer_batch_size)
    trainer.fit(ReconstructionSystem(cfg.to_dict(), probe=data.probe), datamodule=dm)
    store.close()
    return timer.times, run.store_path.stat().st_size


def stage_a_setup(description: str, steps: int = 8):
    """Parse the common flags, build the stage-a stable_hybrid config and simulate its data."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--steps", type=int, default=steps, help="timed steps per loop")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cpu or cuda")
    ap.add_argument("--batch", type=int, default=16, help="batch size (stage-a: 16)")
    args = ap.parse_args()
    accel = "gpu" if args.device == "cuda" else "cpu"
    cfg = preset("stage-a").override(
        {
            "model.arch": "stable_hybrid",
            "train.epochs": 1,
            "train.batch_size": args.batch,
            "train.capture_every": 0,
            "train.accelerator": accel,
            "train.devices": "1",
        }
    )
    t0 = time.perf_counter()
    data = simulate(cfg.data)
    print(
        f"data: {len(data.train.diffraction)} train patches of {cfg.data.N}² simulated "
        f"in {time.perf_counter() - t0:.1f} s"
    )
    return args, cfg, data


def main() -> None:
    args, cfg, data = stage_a_setup(__doc__.splitlines()[0])
    n = args.warmup + args.steps
    with tempfile.TemporaryDirectory() as tmp:  # plain before and after, so warm-up order does not favour either
        plain = plain_steps(cfg, data, n, args.device)[args.warmup :]
        light = lightning_steps(cfg, data, n, Path(tmp))[0][args.warmup :]
        plain += plain_steps(cfg, data, n, args.device)[args.warmup :]
    p, q = statistics.median(plain), statistics.median(light)
    print(
        f"stable_hybrid stage-a ({cfg.model.spectral_layout} layout), batch {args.batch}, device {args.device}, "
        f"torch threads {torch.get_num_threads()}"
    )
    print(f"plain PyTorch step  : median {p * 1e3:8.1f} ms  (min {min(plain) * 1e3:.1f}, n={len(plain)})")
    print(f"fnodiag Lightning   : median {q * 1e3:8.1f} ms  (min {min(light) * 1e3:.1f}, n={len(light)})")
    print(f"ratio Lightning / plain: {q / p:.3f}")


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
