"""Cost of the spectral statistics next to the activation statistics a capture already computes.

For probe-batch activations of the shapes a U-NO layer sees (and a 1-D and a 3-D one), in one process:
the median time of :func:`fnodiag.diagnostics.stats.activation_stats` and of
:func:`fnodiag.diagnostics.spectra.spectral_stats` (8 bands + the energy above the kept modes), and their
ratio; then :func:`~fnodiag.diagnostics.spectra.mode_magnitudes` of a spectral weight. The first call of
each grid builds its cached band matrix and is left out (warm-up).

Usage: python benchmarks/bench_spectra.py [--device cpu|cuda] [--repeats 30] [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from fnodiag.diagnostics.spectra import mode_magnitudes, spectral_stats
from fnodiag.diagnostics.stats import activation_stats
from fnodiag.models.spectral import SpectralConv2d

SHAPES = {
    "lifter 2x32x64x64": ((2, 32, 64, 64), 12),
    "encoder 2x64x32x32": ((2, 64, 32, 32), 12),
    "bottleneck 2x256x8x8": ((2, 256, 8, 8), 4),
    "1-D 2x64x1024": ((2, 64, 1024), 16),
    "3-D 2x16x32x32x32": ((2, 16, 32, 32, 32), 8),
}


def median_time(fn, device, repeats: int) -> float:
    fn()  # warm-up (caches, kernels)
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu", help="torch device to measure on")
    p.add_argument("--repeats", type=int, default=30, help="timed calls per measurement")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"device {device}, {torch.get_num_threads()} threads, median of {args.repeats} calls")
    for name, (shape, modes) in SHAPES.items():
        x = torch.randn(*shape, device=device)
        base = median_time(lambda x=x: activation_stats(x), device, args.repeats)
        spec = median_time(lambda x=x, m=modes: spectral_stats(x, m), device, args.repeats)
        print(
            f"{name:22s} activation_stats {base * 1e3:7.2f} ms  spectral {spec * 1e3:7.2f} ms  ratio {spec / base:5.2f}"
        )
    conv = SpectralConv2d(64, 64, 12, size=64).to(device)
    t = median_time(lambda: mode_magnitudes(conv), device, args.repeats)
    print(f"mode_magnitudes of a 64x64x(2x12)x12 complex weight: {t * 1e3:.2f} ms")


if __name__ == "__main__":
    main()
