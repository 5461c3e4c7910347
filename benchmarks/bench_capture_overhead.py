"""Overhead of live capture: ``stable_hybrid`` stage-a training with capture every k steps vs none.

One process, the same real fnodiag Lightning run (recorder, checkpointing) with the
``LiveCapture`` callback at k = 10 and k = 1 and without it, and at k = 10 with live reconstruction
frames (``LiveFrames``) at the default period M (``train.frame_every``) and at M = 1; all are
interleaved over ``--rounds`` rounds and each is scored by its mean step time (captures happen on
1/k of the steps, frames on 1/M, so the mean, not the median, carries their cost). Budget:
<= 1.05x at k = 10 (frames on or off), <= 1.3x at k = 1. With ``--steps`` a multiple of M the
timed steps hold frames in their true share.

Store growth per 1,000 steps (bytes of ``run.sqlite`` after the run, the empty store's bytes
taken off): at k = 10 without frames, and with frames at M (the per-frame bytes measured from
the M = 1 run).

Usage: python benchmarks/bench_capture_overhead.py [--steps 50] [--rounds=2] [--device cpu|cuda]
"""

from __future__ import annotations

import statistics
import sys
import tempfile
from pathlib import Path

rounds = next((int(a.split("=", 1)[1]) for a in sys.argv if a.startswith("--rounds=")), 2)
sys.argv = [a for a in sys.argv if not a.startswith("--rounds")]
from bench_train_step import lightning_steps, stage_a_setup  # noqa: E402  (same folder)

from fnodiag.config import TrainConfig  # noqa: E402
from fnodiag.runs import RunStore  # noqa: E402
from fnodiag.training.live_capture import PROBE_BATCH  # noqa: E402

BUDGET = {10: 1.05, 1: 1.3}
M = TrainConfig().frame_every


def main() -> None:
    args, cfg, data = stage_a_setup(__doc__.splitlines()[0], steps=50)
    n = args.warmup + args.steps
    arms = {"none": (0, 0), "k10": (10, 0), "k1": (1, 0), "k10+frames": (10, M), "k10+frames1": (10, 1)}
    means: dict[str, list[float]] = {a: [] for a in arms}
    sizes: dict[str, int] = {}
    with tempfile.TemporaryDirectory() as tmp:
        empty = Path(tmp) / "empty.sqlite"
        RunStore(empty).close()
        for _ in range(rounds):
            for arm, (k, m) in arms.items():
                times, sizes[arm] = lightning_steps(cfg, data, n, Path(tmp), capture_every=k, frame_every=m)
                means[arm].append(statistics.fmean(times[args.warmup :]))
        empty_bytes = empty.stat().st_size
    base = min(means["none"])
    print(f"stable_hybrid stage-a, batch {args.batch}, device {args.device}, {args.steps} steps x {rounds} rounds")
    print(f"no capture      : mean step {base * 1e3:8.1f} ms (best round)")
    for k in (10, 1):
        t = min(means[f"k{k}"])
        verdict = "within" if t / base <= BUDGET[k] else "OVER"
        print(
            f"capture every {k:<2}: mean step {t * 1e3:8.1f} ms  ratio {t / base:.3f}  ({verdict} budget {BUDGET[k]}x)"
        )
    t = min(means["k10+frames"])
    verdict = "within" if t / base <= BUDGET[10] else "OVER"
    print(
        f"k=10 + frames every {M}: mean step {t * 1e3:8.1f} ms  ratio {t / base:.3f}  ({verdict} budget {BUDGET[10]}x)"
    )
    t1, t10 = min(means["k10+frames1"]), min(means["k10"])
    per_frame = t1 - t10
    print(
        f"k=10 + frames every 1 : mean step {t1 * 1e3:8.1f} ms  ratio {t1 / base:.3f}  (one frame costs "
        f"{per_frame * 1e3:.1f} ms = {per_frame / base:.3f} of a step; at M = {M}: "
        f"{(t10 + per_frame / M) / base:.3f}x with k = 10)"
    )
    frame_bytes = (sizes["k10+frames1"] - sizes["k10"]) / n  # one frame per step
    base_growth = (sizes["k10"] - empty_bytes) / n * 1000
    print(
        f"store growth per 1,000 steps: {base_growth / 1e6:.2f} MB at k=10 without frames; "
        f"{(base_growth + frame_bytes * 1000 / M) / 1e6:.2f} MB with frames every {M} "
        f"({frame_bytes / 1e3:.1f} kB per frame, {cfg.data.N}x{cfg.data.N} x {PROBE_BATCH} patches x amp+phase)"
    )


if __name__ == "__main__":
    main()
