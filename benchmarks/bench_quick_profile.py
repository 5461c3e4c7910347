"""Where a quick-size training step's time goes on this machine, measured in one process.

Trains the `quick` sweep's model (hybrid or stable_hybrid) on its data and prints, per variant, the
mean wall time of an optimizer step (mean, not median: live capture costs only every k-th step),
each as a ratio to the plain PyTorch loop
(``zero_grad / loss / backward / step``) at the same thread count:

* plain PyTorch at 1 thread and at ``--threads`` (default: all cores);
* fnodiag's Lightning run (recorder, checkpointing) with live capture off, and on every k steps;
* ``torch.compile`` of the generator (compile time, then per-step time), if asked (``--compile``;
  with torch 2.13 on CPU it fails in the backward pass on the complex spectral weights, and says so);
* one validation pass and one checkpoint save, to put per-epoch costs beside per-step ones.

Usage: python benchmarks/bench_quick_profile.py [--arch hybrid] [--batch 4] [--steps 40] [--threads 2] [--compile]
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
from bench_train_step import lightning_steps  # same folder

from fnodiag.ptycho.simulate import simulate
from fnodiag.sweeps.definition import load_definition
from fnodiag.training.system import ReconstructionSystem


class CycleTimer(L.Callback):
    """Time from one batch start to the next: the whole loop (data, callbacks, step, records) per step."""

    def __init__(self):
        self.starts = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.starts.append(time.perf_counter())

    @property
    def times(self) -> list[float]:
        return [b - a for a, b in zip(self.starts, self.starts[1:])]


def plain(cfg, data, n_steps: int, *, compile_: bool = False) -> tuple[list[float], float]:
    """Step times of the minimal loop; and the first step's time (the compile time with ``compile_``)."""
    torch.manual_seed(cfg.train.seed)
    system = ReconstructionSystem(cfg.to_dict(), probe=data.probe)
    gen, fm, loss_fn = system.generator, system.forward_model, system.loss_fn
    step_gen = torch.compile(gen) if compile_ else gen
    opt = torch.optim.Adam(gen.parameters(), lr=cfg.optim.lr)
    x_all = torch.from_numpy(data.train.diffraction).unsqueeze(1)
    b = cfg.train.batch_size
    times = []
    for i in range(n_steps):
        x = x_all[(i * b) % (len(x_all) - b) :][:b]
        t = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(fm(step_gen(x)), x)
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t)
    return times[1:], times[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--definition", default="quick", help="sweep definition whose shared settings give the size")
    ap.add_argument("--arch", default="hybrid", help="generator")
    ap.add_argument("--steps", type=int, default=40, help="timed steps per variant")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads(), help="the multi-thread count")
    ap.add_argument("--batch", type=int, default=None, help="training batch size (default: the definition's)")
    ap.add_argument("--compile", action="store_true", help="also time torch.compile (slow to compile)")
    args = ap.parse_args()
    defn = load_definition(args.definition)
    cfg = defn.config("control", defn.seeds[0]).override(
        {"model.arch": args.arch, "train.accelerator": "cpu", "train.devices": "1"}
    )
    if args.batch:
        cfg = cfg.override({"train.batch_size": args.batch})
    t0 = time.perf_counter()
    data = simulate(cfg.data)
    n_train = len(data.train.diffraction)
    print(
        f"{args.definition} {args.arch}: N={cfg.data.N}, {n_train} train patches, batch {cfg.train.batch_size} "
        f"({n_train // cfg.train.batch_size} steps/epoch), width {cfg.model.width}, modes {cfg.model.modes}, "
        f"blocks {cfg.model.blocks}; data simulated in {time.perf_counter() - t0:.1f} s"
    )
    rows = []
    for threads in sorted({1, args.threads}):
        torch.set_num_threads(threads)
        base = statistics.mean(plain(cfg, data, args.steps)[0])
        rows.append((f"plain, {threads} thread(s)", base, base))
        with tempfile.TemporaryDirectory() as tmp:
            for k in (0, 10, 25):
                c = cfg.override({"train.capture_every": k})
                times, _ = lightning_steps(c, data, args.steps + 2, Path(tmp), capture_every=k, timer=CycleTimer())
                t = statistics.mean(times[1:])
                rows.append((f"lightning, {threads} thread(s), capture every {k or 'off'}", t, base))
        if args.compile:
            try:
                times, first = plain(cfg, data, args.steps, compile_=True)
                rows.append(
                    (
                        f"plain + torch.compile, {threads} thread(s) (compile {first:.1f} s)",
                        statistics.mean(times),
                        base,
                    )
                )
            except Exception as exc:  # torch 2.13 on CPU: fails on the complex spectral weights
                print(
                    f"torch.compile, {threads} thread(s): failed "
                    f"({type(exc).__name__}: {str(exc).splitlines()[0][:160]})"
                )
    torch.set_num_threads(args.threads)
    system = ReconstructionSystem(cfg.to_dict(), probe=data.probe).eval()
    x_test = torch.from_numpy(data.test.diffraction).unsqueeze(1)
    t = time.perf_counter()
    with torch.no_grad():
        for i in range(0, len(x_test), cfg.train.batch_size):
            system.forward_model(system.generator(x_test[i : i + cfg.train.batch_size]))
    val = time.perf_counter() - t
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        torch.save(system.state_dict(), Path(tmp) / "x.ckpt")
        save = time.perf_counter() - t
    for name, t, base in rows:
        print(f"{name:<62s} mean {t * 1e3:7.1f} ms/step  ratio to plain {t / base:5.2f}")
    print(f"one validation pass ({len(x_test)} patches): {val:.2f} s; one state-dict save: {save * 1e3:.0f} ms")


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
