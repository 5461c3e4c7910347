"""Benchmark of the run store: write a long run, open it as the dashboard does, and time a live tick.

Writes LAYERS x STATS per-layer values and a few scalars for every one of STEPS steps through
:class:`fnodiag.runs.RunStore` (default 50 x 10 x 10,000, flushed every 0.25 s as in training), then
times what the dashboard does with :class:`fnodiag.runs.StoreReader`: open the store and load one
stat's full ``layer_matrix`` plus all scalars (target < 2 s), and one live tail tick with
``after=position`` once one new step has been written (target < 50 ms). Prints times and their
ratio to the targets (a ratio below 1 meets the target); machines are shared, so read the ratios.

Run: ``.venv/bin/python benchmarks/bench_store.py [--steps 10000 --layers 50 --stats 10]``
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from fnodiag.runs import SOURCES, RunStore, StoreReader

OPEN_TARGET_S, TICK_TARGET_S = 2.0, 0.050


def write_step(
    store: RunStore, step: int, layers: list[str], stats: list[str], sources: list[str], rng: np.random.Generator
) -> None:
    """Log one training step: 4 scalars plus every (layer, stat) of every source."""
    epoch = step // 500
    store.log_scalars(
        step,
        epoch,
        {"train/loss": float(rng.random()), "lr": 1e-3, "grad/norm_preclip": float(rng.random()), "grad/norm": 1.0},
    )
    vals = rng.standard_normal(len(layers) * len(stats)).tolist()
    for source in sources:
        store.log_layer_stats(step, epoch, source, dict(zip(((layer, s) for layer in layers for s in stats), vals)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=10_000, help="training steps to write")
    ap.add_argument("--layers", type=int, default=50, help="layers per step")
    ap.add_argument("--stats", type=int, default=10, help="statistics per layer")
    ap.add_argument("--sources", type=int, default=1, choices=(1, 2, 3), help="how many of activation/grad/param")
    ap.add_argument("--ticks", type=int, default=30, help="live ticks to time")
    args = ap.parse_args()
    layers = [f"blocks.{i}.spectral" for i in range(args.layers)]
    stats = [f"stat{j}" for j in range(args.stats)]
    sources = list(SOURCES[: args.sources])
    rng = np.random.default_rng(0)

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "run.sqlite"
        store = RunStore(path)
        t0 = time.perf_counter()
        for step in range(args.steps):
            write_step(store, step, layers, stats, sources, rng)
        store.flush()
        write_s = time.perf_counter() - t0
        n_values = args.steps * (args.layers * args.stats * len(sources) + 4)
        size_mb = sum(p.stat().st_size for p in Path(tmp).iterdir()) / 1e6
        print(
            f"write: {args.steps} steps x {args.layers} layers x {args.stats} stats x {len(sources)} source(s) "
            f"+ 4 scalars = {n_values:,} values in {write_s:.2f} s "
            f"({write_s / args.steps * 1e3:.3f} ms/step, {n_values / write_s / 1e6:.2f} M values/s), "
            f"{size_mb:.1f} MB on disk"
        )

        # Open as the dashboard does, while the writer still holds the store open.
        t0 = time.perf_counter()
        reader = StoreReader(path)
        names, layer_names = reader.scalar_names(), reader.layers(sources[0])
        matrix = reader.layer_matrix(sources[0], stats[0])
        scal = reader.scalars()
        open_s = time.perf_counter() - t0
        assert matrix.values.shape == (args.layers, args.steps) and len(scal) == 4 * args.steps
        assert len(names) == 4 and len(layer_names) == args.layers
        print(
            f"open: reader + names + layer_matrix {matrix.values.shape} + {len(scal):,} scalars in "
            f"{open_s * 1e3:.0f} ms (target {OPEN_TARGET_S * 1e3:.0f} ms, ratio {open_s / OPEN_TARGET_S:.3f})"
        )

        t0 = time.perf_counter()
        every = reader.layer_stats(source=sources[0])
        all_s = time.perf_counter() - t0
        print(f"all layer stats of one source: {len(every):,} values in {all_s * 1e3:.0f} ms")

        # Live ticks: one new step is written and flushed, then the dashboard fetches what is new.
        pos_s, pos_m, ticks = scal.position, matrix.position, []
        for k in range(args.ticks):
            write_step(store, args.steps + k, layers, stats, sources, rng)
            store.flush()
            t0 = time.perf_counter()
            new_s = reader.scalars(after=pos_s)
            new_m = reader.layer_matrix(sources[0], stats[0], after=pos_m)
            last = reader.last_step()
            ticks.append(time.perf_counter() - t0)
            assert len(new_s) == 4 and new_m.values.shape == (args.layers, 1) and last == args.steps + k
            pos_s, pos_m = new_s.position, new_m.position
        med, worst = statistics.median(ticks), max(ticks)
        print(
            f"live tick (scalars + layer_matrix after=position + last_step, 1 new step): median "
            f"{med * 1e3:.2f} ms, max {worst * 1e3:.2f} ms over {args.ticks} ticks "
            f"(target {TICK_TARGET_S * 1e3:.0f} ms, ratio {worst / TICK_TARGET_S:.3f})"
        )
        reader.close()
        store.close()


if __name__ == "__main__":
    main()
