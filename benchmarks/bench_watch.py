"""Overhead of ``fnodiag.watch`` on a plain PyTorch loop, measured in one process.

The loop is fnodiag's ``quick`` generator (U-NO, preset ``quick``: N = 32, 3 blocks, width 16,
modes 8; or ``--model conv``: a small conv net) trained with Adam on random amplitude batches
through the ptychography forward model; or ``--model fno``: a real ``neuralop.models.FNO`` (the
issue's n_modes (8, 8), hidden 24, 4 layers, 32 x 32 grid) trained with MSE to map a field to its
heat-diffused self (a low-pass in Fourier space). Five copies (same seed, same batches) train side by side:

* ``plain``: ``zero_grad / loss / backward / step``;
* ``watch every=10`` and ``watch every=1``: the same loop under ``fnodiag.watch(model, run,
  optimizer=opt, every=k)`` with ``w.log(loss=loss)`` each step;
* ``watch every=10 nospec``: ``every=10`` with ``spectra=False`` (what the spectral statistics cost);
* ``watch, no capture``: ``every`` larger than the run (only the untimed step 0 captures): the cost
  of a step without a capture (the optimizer hooks, the gradient norm, the buffered scalars and the
  writer's flush every 50 steps).

Interleaved step by step (one step of each copy in turn, the order rotating), so a shared machine's
load falls on all alike. The timed steps are cut into blocks of 10 (each holds one capture at
``every=10``); an arm's ratio is the median over blocks of (its block time / plain's block time).

With ``--compile`` every copy trains ``torch.compile(model)`` (inductor; ``watch`` is handed the
compiled model and watches its original module): the compiled step with and without capture. The
``quick`` generator's complex weights do not compile with inductor: use ``--model conv``.

Usage: python benchmarks/bench_watch.py [--model quick|conv|fno] [--blocks 20] [--warmup 5] [--threads 2] [--compile]
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

ARMS = {"plain": None, "every=10": 10, "every=10 nospec": (10, False), "every=1": 1, "no capture": 10**9}
BLOCK = 10  # steps per timed block: one capture at every=10


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


def neuralop_fno() -> nn.Module:
    """neuraloperator's FNO as issue 22 tried it: n_modes (8, 8), hidden 24, 4 layers, 1 -> 1 channel."""
    from neuralop.models import FNO  # optional third-party package (the test extra): only this arm needs it

    return FNO(n_modes=(8, 8), hidden_channels=24, in_channels=1, out_channels=1, n_layers=4)


def heat_loss(out, x):
    """MSE of ``out`` against ``x`` diffused (a Gaussian low-pass of its 2-D spectrum)."""
    k2 = torch.fft.fftfreq(x.shape[-2])[:, None] ** 2 + torch.fft.fftfreq(x.shape[-1])[None, :] ** 2
    target = torch.fft.ifft2(torch.fft.fft2(x) * torch.exp(-200.0 * k2)).real
    return nn.functional.mse_loss(out, target)


class Arm:
    """One copy of the loop: a fresh model (seed 0), its Adam optimizer, and ``watch`` unless ``every`` is None.

    ``every`` may be ``(every, spectra)``.
    """

    def __init__(self, make_model, every, folder: Path, compiled: bool = False):
        every, spectra = every if isinstance(every, tuple) else (every, True)
        torch.manual_seed(0)
        self.model = make_model()
        self.called = torch.compile(self.model) if compiled else self.model
        self.opt = torch.optim.Adam(self.model.parameters(), lr=1e-3)
        self.w = None
        if every is not None:
            self.w = fnodiag.watch(self.called, folder, optimizer=self.opt, every=every, spectra=spectra)

    def step(self, x, loss_fn) -> float:
        """One training step; its wall time in seconds."""
        start = time.perf_counter()
        self.opt.zero_grad(set_to_none=True)
        loss = loss_fn(self.called(x), x)
        loss.backward()
        self.opt.step()
        if self.w is not None:
            self.w.log(loss=loss)
        return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", choices=("quick", "conv", "fno"), default="quick", help="the watched model")
    ap.add_argument("--blocks", type=int, default=20, help="timed blocks of 10 steps")
    ap.add_argument("--warmup", type=int, default=5, help="untimed steps first (step 0 always captures)")
    ap.add_argument("--batch", type=int, default=8, help="batch size")
    ap.add_argument("--threads", type=int, default=2, help="torch threads")
    ap.add_argument("--compile", action="store_true", help="train torch.compile(model) in every copy (inductor)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = preset("quick")
    n = cfg.data.N
    make_model = {"quick": lambda: build_model(cfg.model, n), "conv": conv_net, "fno": neuralop_fno}[args.model]
    forward = ForwardModel(torch.as_tensor(ideal_disk_probe(n), dtype=torch.complex64))
    physics = get_loss(cfg.train.loss)
    loss_fn = heat_loss if args.model == "fno" else lambda obj, x: physics(forward(obj), x)  # noqa: E731
    g = torch.Generator().manual_seed(1)
    batches = [torch.rand(args.batch, 1, n, n, generator=g) for _ in range(16)]
    steps = args.warmup + BLOCK * args.blocks
    times: dict[str, list[float]] = {a: [] for a in ARMS}
    with tempfile.TemporaryDirectory() as tmp:
        arms = {a: Arm(make_model, k, Path(tmp) / a.replace(" ", "-"), args.compile) for a, k in ARMS.items()}
        order = list(arms)
        for i in range(steps):
            x = batches[i % len(batches)]
            for a in order[i % len(order) :] + order[: i % len(order)]:  # rotate who goes first
                times[a].append(arms[a].step(x, loss_fn))
        for arm in arms.values():
            if arm.w is not None:
                arm.w.close()
    block = lambda a: [sum(times[a][args.warmup + b * BLOCK :][:BLOCK]) for b in range(args.blocks)]  # noqa: E731
    plain = block("plain")
    ratios = {a: [t / p for t, p in zip(block(a), plain)] for a in ARMS if a != "plain"}
    params = sum(p.numel() for p in make_model().parameters())
    print(
        f"fnodiag.watch overhead: model {args.model} ({params:,} parameters), batch {args.batch}, N {n}, "
        f"{args.threads} threads, {'compiled (inductor), ' if args.compile else ''}"
        f"{args.blocks} blocks of {BLOCK} steps interleaved step by step, "
        f"torch {torch.__version__}"
    )
    print(f"plain loop           : median step {statistics.median(times['plain'][args.warmup :]) * 1e3:7.2f} ms")
    for a, values in ratios.items():
        q1, _, q3 = statistics.quantiles(values, n=4)
        print(f"watch {a:<15}: ratio {statistics.median(values):.3f} to plain  (blocks' quartiles {q1:.3f}-{q3:.3f})")


if __name__ == "__main__":
    main()
