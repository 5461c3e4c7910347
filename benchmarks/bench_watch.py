"""Overhead of ``fnodiag.watch`` on a plain PyTorch loop, measured in one process.

The loop is fnodiag's ``quick`` generator (U-NO, preset ``quick``: N = 32, 3 blocks, width 16,
modes 8; or ``--model conv``: a small conv net) trained with Adam on a fixed set of random
amplitude batches through the ptychography forward model. Four arms, each a fresh model with the
same seed, interleaved over ``--rounds`` rounds:

* ``plain``: ``zero_grad / loss / backward / step``;
* ``watch every=10`` and ``watch every=1``: the same loop under ``fnodiag.watch(model, run,
  optimizer=opt, every=k)`` with ``w.log(loss=loss)`` each step;
* ``watch, no capture``: ``every`` larger than the run (only the untimed step 0 captures): the cost
  of a step without a capture (the optimizer hooks, the gradient norm, the buffered scalars and the
  writer's flush every 50 steps).

Each arm is scored per round by its mean step time (a capture costs only 1/k of the steps, so the
mean, not the median, carries it); the printed ratio is the median over rounds of (arm / plain) of
the same round.

Usage: python benchmarks/bench_watch.py [--model quick|conv] [--steps 60] [--warmup 5] [--rounds 5] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

import fnodiag
from fnodiag.config import preset
from fnodiag.models import build_model
from fnodiag.ptycho.forward import ForwardModel, get_loss
from fnodiag.ptycho.simulate import ideal_disk_probe

ARMS = {"plain": None, "every=10": 10, "every=1": 1, "no capture": 10**9}


def conv_net() -> nn.Module:
    """A small real-valued conv net, (B, 1, N, N) -> (B, 1, N, N) complex (amplitude, phase heads)."""

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(
                nn.Conv2d(1, 16, 3, padding=1), nn.GELU(), nn.Conv2d(16, 16, 3, padding=1), nn.GELU()
            )
            self.head = nn.Conv2d(16, 2, 1)

        def forward(self, x):
            a, p = self.head(self.body(x)).unbind(1)
            return torch.polar(torch.sigmoid(a), torch.pi * torch.tanh(p)).unsqueeze(1)

    return Net()


def run_arm(make_model, batches, loss_fn, every, warmup: int, folder: Path) -> float:
    """Mean time of the timed steps of one arm (seconds)."""
    torch.manual_seed(0)
    model = make_model()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    w = fnodiag.watch(model, folder, optimizer=opt, every=every) if every is not None else None
    times = []
    for i, x in enumerate(batches):
        start = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), x)
        loss.backward()
        opt.step()
        if w is not None:
            w.log(loss=loss)
        if i >= warmup:
            times.append(time.perf_counter() - start)
    if w is not None:
        w.close()
    return statistics.fmean(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", choices=("quick", "conv"), default="quick", help="the watched model")
    ap.add_argument("--steps", type=int, default=60, help="timed steps per arm and round")
    ap.add_argument("--warmup", type=int, default=5, help="untimed steps first (step 0 always captures)")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds")
    ap.add_argument("--batch", type=int, default=8, help="batch size")
    ap.add_argument("--threads", type=int, default=2, help="torch threads")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = preset("quick")
    n = cfg.data.N
    make_model = (lambda: build_model(cfg.model, n)) if args.model == "quick" else conv_net
    forward = ForwardModel(torch.as_tensor(ideal_disk_probe(n), dtype=torch.complex64))
    physics = get_loss(cfg.train.loss)
    loss_fn = lambda obj, x: physics(forward(obj), x)  # noqa: E731
    g = torch.Generator().manual_seed(1)
    batches = [torch.rand(args.batch, 1, n, n, generator=g) for _ in range(args.warmup + args.steps)]
    ratios: dict[str, list[float]] = {a: [] for a in ARMS if a != "plain"}
    plain_ms = []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            means = {
                a: run_arm(make_model, batches, loss_fn, k, args.warmup, Path(tmp) / f"{a}-{r}")
                for a, k in ARMS.items()
            }
            plain_ms.append(means["plain"] * 1e3)
            for a in ratios:
                ratios[a].append(means[a] / means["plain"])
    params = sum(p.numel() for p in make_model().parameters())
    print(
        f"fnodiag.watch overhead: model {args.model} ({params:,} parameters), batch {args.batch}, N {n}, "
        f"{args.threads} threads, {args.steps} timed steps x {args.rounds} rounds (interleaved), "
        f"torch {torch.__version__}"
    )
    print(f"plain loop          : mean step {statistics.median(plain_ms):7.2f} ms (median of rounds)")
    for a, values in ratios.items():
        spread = f"rounds {min(values):.3f}-{max(values):.3f}"
        print(f"watch {a:<14}: ratio {statistics.median(values):.3f} to plain  ({spread})")


if __name__ == "__main__":
    main()
