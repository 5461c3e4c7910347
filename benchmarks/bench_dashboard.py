"""Dashboard scale: open a 50-layer x 10,000-step run and tick it live; prints measured figures.

Builds a synthetic run store (RunStore) of LAYERS x STEPS with the activation statistics the
dashboard draws, per-module gradient norms and per-step scalars, then measures in one process:

* open: ``Dashboard(root)`` (scan, read, plot, render all views to Bokeh models) plus
  ``get_root`` of the page, against the 2 s target;
* tick: one more step appended by a writer, then ``Dashboard.tick()`` (read the new rows, stream
  them into every open figure), against the 50 ms target;
* the store alone reading one stat (``layer_matrix``), for scale.

Usage: ``python benchmarks/bench_dashboard.py [--layers 50] [--steps 10000]``
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fnodiag.config import RunConfig  # noqa: E402
from fnodiag.runs import RunDir, RunStore, StoreReader  # noqa: E402

ACT_STATS = ("spatial_std", "std", "abs_mean", "nonfinite")


def build(root: Path, layers: int, steps: int) -> RunDir:
    run = RunDir.create(root / "big", RunConfig())
    names = ["lifter"] + [f"encoder.{i // 3}.{['', 'spectral', 'local'][i % 3]}".rstrip(".")
                          for i in range(layers - 2)] + ["output"]
    names = list(dict.fromkeys(names))[:layers]
    rng = np.random.default_rng(0)
    with RunStore(run.store_path, flush_every=None) as store:
        for s in range(steps):
            base = np.exp(-s / steps * 3) * (1 + 0.1 * rng.random(len(names)))
            store.log_layer_stats(s, s // 100, "activation",
                                  {(n, st): float(base[i] * (k + 1)) for i, n in enumerate(names)
                                   for k, st in enumerate(ACT_STATS)})
            store.log_layer_stats(s, s // 100, "grad", {(n, "norm"): float(base[i]) for i, n in enumerate(names)})
            store.log_scalars(s, s // 100, {"train/loss": float(base[0]), "lr": 1e-3, "grad/norm_preclip": 1.0,
                                            "grad/norm_postclip": 0.9, "grad/clipped": 1.0})
            if s % 100 == 99:
                store.log_scalars(s, s // 100, {"epoch/val_loss": float(base[0]), "epoch/clip_fraction": 0.5},
                                  scope="epoch")
    run.write_status("running", step=steps - 1, epoch=steps // 100)
    return run, names


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=50)
    parser.add_argument("--steps", type=int, default=10_000)
    parser.add_argument("--ticks", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "runs"
        t0 = time.perf_counter()
        run, names = build(root, args.layers, args.steps)
        print(f"built {len(names)} layers x {args.steps} steps store in {time.perf_counter() - t0:.1f} s "
              f"({run.store_path.stat().st_size / 1e6:.0f} MB)")
        with StoreReader(run.store_path) as r:
            t0 = time.perf_counter()
            r.layer_matrix("activation", "spatial_std")
            print(f"store alone, one stat (layer_matrix): {(time.perf_counter() - t0) * 1e3:.0f} ms")

        from bokeh.document import Document
        from app.dashboard import Dashboard
        Dashboard(root)  # warm imports and HoloViews option trees once
        t0 = time.perf_counter()
        dash = Dashboard(root)
        dash.layout().get_root(Document())
        open_s = time.perf_counter() - t0
        print(f"open (all views built and rendered to Bokeh): {open_s:.2f} s   target < 2 s   "
              f"[heatmap binned to <= 400 columns, lines to <= 2000 points]")

        costs, sent = [], []
        with RunStore(run.store_path, flush_every=None) as store:
            for k in range(args.ticks):
                s = args.steps + k
                store.log_layer_stats(s, 0, "activation", {(n, st): 0.5 for n in names for st in ACT_STATS})
                store.log_layer_stats(s, 0, "grad", {(n, "norm"): 0.5 for n in names})
                store.log_scalars(s, 0, {"train/loss": 0.1, "lr": 1e-3, "grad/norm_preclip": 1.0,
                                         "grad/norm_postclip": 0.9})
                store.flush()
                t0 = time.perf_counter()
                sent.append(dash.tick())
                costs.append((time.perf_counter() - t0) * 1e3)
        print(f"live tick (one new step, all views): median {statistics.median(costs):.1f} ms, max {max(costs):.1f} ms"
              f"   target < 50 ms   points sent per tick: median {int(statistics.median(sent))}")
        print(f"ratio open/target {open_s / 2:.2f}, tick/target {statistics.median(costs) / 50:.2f}")


if __name__ == "__main__":
    main()
