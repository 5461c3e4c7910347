"""Overhead of live capture: ``stable_hybrid`` stage-a training with capture every k steps vs none.

One process, the same real fnodiag Lightning run (recorder, checkpointing) with the
``LiveCapture`` callback at k = 10 and k = 1 and without it; the three are interleaved over
``--rounds`` rounds and each is scored by its mean step time (captures happen on 1/k of the
steps, so the mean, not the median, carries their cost). Budget: <= 1.05x at k = 10, <= 1.3x at k = 1.

Usage: python benchmarks/bench_capture_overhead.py [--steps 20] [--rounds 2] [--device cpu|cuda]
"""
from __future__ import annotations

import statistics
import sys
import tempfile
from pathlib import Path

sys.argv, rounds = [a for a in sys.argv if not a.startswith("--rounds")], 2
from bench_train_step import lightning_steps, stage_a_setup  # noqa: E402  (same folder)

BUDGET = {10: 1.05, 1: 1.3}


def main() -> None:
    args, cfg, data = stage_a_setup(__doc__.splitlines()[0], steps=20)
    n = args.warmup + args.steps
    means: dict[int, list[float]] = {0: [], 10: [], 1: []}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(rounds):
            for k in means:
                means[k].append(statistics.fmean(lightning_steps(cfg, data, n, Path(tmp), capture_every=k)[args.warmup:]))
    base = min(means[0])
    print(f"stable_hybrid stage-a, batch {args.batch}, device {args.device}, {args.steps} steps x {rounds} rounds")
    print(f"no capture      : mean step {base * 1e3:8.1f} ms (best round)")
    for k in (10, 1):
        t = min(means[k])
        verdict = "within" if t / base <= BUDGET[k] else "OVER"
        print(f"capture every {k:<2}: mean step {t * 1e3:8.1f} ms  ratio {t / base:.3f}  ({verdict} budget {BUDGET[k]}x)")


if __name__ == "__main__":
    main()
