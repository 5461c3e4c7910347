"""Records streamed to the sweep driver: rows per second the driver sustains vs the rate a stage-a run produces.

1. Production: a real stage-a run (the ``stage-a`` preset, ``control`` arm: ``hybrid`` + Adam) trained
   with live capture at every step (``train.capture_every = 1``) for ``--steps`` optimizer steps into a
   local run store; from its store: store rows per step (scalar rows + layer-statistics rows, each of
   the latter holding every layer of one source x stat) and per-layer values per step, and from its
   scalars' wall times the steps per second it sustained (the first steps, warm-up, left out).
2. The driver: those same steps replayed ``--repeat`` times through the driver-owned layout
   (:class:`fnodiag.runs.remote.RemoteStore` -> :class:`~fnodiag.runs.remote.RecordLink` ->
   :class:`~fnodiag.runs.remote.RecordReceiver` committing into the driver's store), once in this
   process (``LocalTransport``) and once through a real Ray actor on a local Ray (``--no-ray`` skips
   it): each batch pickled to another process, written there, acknowledged, with back-pressure.

Prints rows/s and per-layer values/s of each, and the ratio of the driver's sustained capture steps
per second to the run's (above 1: one driver keeps up with that many such runs at once). Machines are
shared and noisy: read ``uptime`` (printed before and after) with the numbers.

Usage: python benchmarks/bench_records.py [--steps 20] [--repeat 20] [--no-ray] [--store RUN.sqlite]
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import tempfile
import time
from pathlib import Path

import numpy as np
from lightning.pytorch.callbacks import Callback

from fnodiag.config import preset
from fnodiag.runs.remote import LocalTransport, RecordLink, RecordReceiver, RemoteStore
from fnodiag.sweeps.ray import _ActorTransport
from fnodiag.training.run import train


class _StopAfter(Callback):
    """Stop training after ``steps`` optimizer steps."""

    def __init__(self, steps: int):
        self.steps = steps

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step >= self.steps:
            trainer.should_stop = True


def produce(folder: Path, steps: int) -> tuple[Path, float]:
    """Train a stage-a control run, capture every step, for ``steps`` steps; (its store, steps/s after warm-up)."""
    cfg = preset("stage-a")
    cfg = cfg.override(
        {"model.arch": "hybrid", "optim.name": "adam", "train.capture_every": 1, "train.accelerator": "cpu"}
    ).validate()
    run = train(cfg, folder, name="stage-a-control", progress=False, extra_callbacks=[_StopAfter(steps)])
    return run.store_path, wall_rate(run.store_path)


def wall_rate(store: Path) -> float:
    """Optimizer steps per second of the run in ``store`` (from its step scalars' wall times; warm-up left out)."""
    with sqlite3.connect(f"file:{store}?mode=ro", uri=True) as db:
        walls = [w for (w,) in db.execute("SELECT MIN(wall) FROM scalars WHERE scope = 0 GROUP BY step ORDER BY step")]
    skip = min(5, len(walls) // 3)
    return (len(walls) - 1 - skip) / (walls[-1] - walls[skip])


def load_steps(store: Path) -> list[tuple[int, int, dict, dict]]:
    """Every captured step of ``store``: (step, epoch, {scalar: value}, {source: {(layer, stat): value}})."""
    with sqlite3.connect(f"file:{store}?mode=ro", uri=True) as db:
        names = dict(db.execute("SELECT id, text FROM names"))
        steps: dict[int, tuple[int, dict, dict]] = {}
        for step, epoch, name, value in db.execute("SELECT step, epoch, name_id, value FROM scalars WHERE scope = 0"):
            steps.setdefault(step, (epoch, {}, {}))[1][names[name]] = value
        for step, epoch, src, stat, ids, vals in db.execute(
            "SELECT step, epoch, source_id, stat_id, layer_ids, vals FROM layer_stats"
        ):
            layers = steps.setdefault(step, (epoch, {}, {}))[2].setdefault(names[src], {})
            for lid, v in zip(np.frombuffer(ids, "<i4"), np.frombuffer(vals, "<f8")):
                layers[(names[int(lid)], names[stat])] = float(v)
    return [(s, e, sc, ly) for s, (e, sc, ly) in sorted(steps.items()) if ly]


def _counts(steps) -> tuple[int, int]:
    """(store rows, per-layer values) of ``steps``: one row per scalar and per (source, stat)."""
    rows = sum(len(sc) + sum(len({stat for _, stat in v}) for v in ly.values()) for _, _, sc, ly in steps)
    values = sum(len(sc) + sum(len(v) for v in ly.values()) for _, _, sc, ly in steps)
    return rows, values


def stream(transport_for, folder: Path, steps, repeat: int) -> float:
    """Seconds to stream ``steps`` x ``repeat`` through the driver-owned layout until the driver wrote them all."""
    receiver, transport = transport_for(folder)
    link = RecordLink(transport, "bench-s1")
    link.begin()
    store = RemoteStore(link, folder / "scratch" / "run.sqlite", flush_every=0.25)  # as training flushes
    offset = max(s for s, *_ in steps) + 1
    started = time.perf_counter()
    for r in range(repeat):
        for step, epoch, scalars, layers in steps:
            store.log_scalars(step + r * offset, epoch, scalars)
            for source, values in layers.items():
                store.log_layer_stats(step + r * offset, epoch, source, values)
    store.close()
    link.end()
    elapsed = time.perf_counter() - started
    transport.wait(transport.submit("release", "bench-s1"))
    return elapsed


def local_transport(folder: Path):
    receiver = RecordReceiver(folder / "driver")
    return receiver, LocalTransport(receiver)


def ray_transport(folder: Path):
    import ray  # optional extra: only this benchmark's Ray part needs it

    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
    actor = ray.remote(RecordReceiver).options(num_cpus=0, max_concurrency=1).remote(str(folder / "driver"))
    return actor, _ActorTransport(ray, actor)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=20, help="optimizer steps of the stage-a run (capture every step)")
    ap.add_argument("--repeat", type=int, default=20, help="times its steps are replayed through the driver")
    ap.add_argument("--no-ray", action="store_true", help="skip the Ray actor transport")
    ap.add_argument(
        "--store",
        type=Path,
        default=None,
        help="the run.sqlite of a stage-a run already trained with capture every step (skips training one)",
    )
    args = ap.parse_args()
    print("uptime:", os.getloadavg())
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        store, run_rate = (args.store, wall_rate(args.store)) if args.store else produce(tmp / "produce", args.steps)
        steps = load_steps(store)
        rows, values = _counts(steps)
        per_step_rows, per_step_values = rows / len(steps), values / len(steps)
        print(
            f"stage-a control run, capture every step: {len(steps)} captured steps, {per_step_rows:.0f} store rows "
            f"({per_step_values:.0f} per-layer values) per step, {run_rate:.2f} steps/s -> "
            f"{per_step_rows * run_rate:.0f} rows/s ({per_step_values * run_rate:.0f} values/s) produced"
        )
        kinds = [("in-process", local_transport)] + ([] if args.no_ray else [("Ray actor", ray_transport)])
        for i, (label, transport_for) in enumerate(kinds):
            seconds = stream(transport_for, tmp / f"driver{i}", steps, args.repeat)
            n = len(steps) * args.repeat
            print(
                f"driver via {label}: {n} steps in {seconds:.2f} s = {rows * args.repeat / seconds:.0f} rows/s "
                f"({values * args.repeat / seconds:.0f} values/s), {n / seconds:.1f} steps/s = "
                f"{n / seconds / run_rate:.1f}x one stage-a run's rate"
            )
    print("uptime:", os.getloadavg())


if __name__ == "__main__":
    main()
