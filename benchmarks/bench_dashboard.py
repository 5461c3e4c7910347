"""Dashboard scale: open a 50-layer x 10,000-step run and tick it live; prints measured figures.

Builds a synthetic run store (RunStore) of LAYERS x STEPS with the activation statistics the
dashboard draws, per-module gradient norms and per-step scalars, then measures in one process:

* open: ``Dashboard(root)`` (scan, read, plot, render all views to Bokeh models) plus
  ``get_root`` of the page, against the 2 s target;
* tick: one more step appended by a writer, then ``Dashboard.tick()`` (read the new rows, stream
  them into the shown tab's figures), for each plot tab in turn, against the 50 ms target;
* the store alone reading one stat (``layer_matrix``), for scale.

``--slowdown N`` measures instead what open dashboards cost a training run: the median step time
(from the ``wall`` times of its ``train/loss`` rows) of a tiny ``fnodiag train`` subprocess with
``--capture-every 1``, without and with N readers tailing its store every 250 ms, as the ratio. Readers
are other processes each running a session's own code path (``Dashboard(root)`` then
``Dashboard.tick()`` every ``TICK_MS``: new rows streamed into every figure, status re-reads,
folder rescans), or, with ``--reader-kind tail``, threads of this process each tailing the store
with :class:`fnodiag.dashboard.live.Tail` as the views do. Readers tick and rest in turns of ``--phase`` seconds
during the same run, and steps are compared by phase, so other load on the machine (which drifts
over seconds to minutes) weighs on both sides alike.

Usage: ``python benchmarks/bench_dashboard.py [--layers 50] [--steps 10000]``
       ``python benchmarks/bench_dashboard.py --slowdown 4 [--reader-kind dashboard|tail] [--epochs 20]``
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from fnodiag.config import RunConfig
from fnodiag.runs import RunDir, RunStore, StoreReader

ACT_STATS = ("spatial_std", "std", "abs_mean", "nonfinite")


def build(root: Path, layers: int, steps: int) -> RunDir:
    run = RunDir.create(root / "big", RunConfig())
    names = (
        ["lifter"]
        + [f"encoder.{i // 3}.{['', 'spectral', 'local'][i % 3]}".rstrip(".") for i in range(layers - 2)]
        + ["output"]
    )
    names = list(dict.fromkeys(names))[:layers]
    rng = np.random.default_rng(0)
    with RunStore(run.store_path, flush_every=None) as store:
        for s in range(steps):
            base = np.exp(-s / steps * 3) * (1 + 0.1 * rng.random(len(names)))
            store.log_layer_stats(
                s,
                s // 100,
                "activation",
                {(n, st): float(base[i] * (k + 1)) for i, n in enumerate(names) for k, st in enumerate(ACT_STATS)},
            )
            store.log_layer_stats(s, s // 100, "grad", {(n, "norm"): float(base[i]) for i, n in enumerate(names)})
            store.log_scalars(
                s,
                s // 100,
                {
                    "train/loss": float(base[0]),
                    "lr": 1e-3,
                    "grad/norm_preclip": 1.0,
                    "grad/norm_postclip": 0.9,
                    "grad/clipped": 1.0,
                },
            )
            if s % 100 == 99:
                store.log_scalars(
                    s, s // 100, {"epoch/val_loss": float(base[0]), "epoch/clip_fraction": 0.5}, scope="epoch"
                )
    run.write_status("running", step=steps - 1, epoch=steps // 100)
    return run, names


TINY = [
    "--N",
    "32",
    "--object-size",
    "64",
    "--blocks",
    "2",
    "--width",
    "4",
    "--modes",
    "4",
    "--batch-size",
    "8",
    "--capture-every",
    "1",
    "--accelerator",
    "cpu",
    "--no-progress",
]
DONE = ("finished", "diverged", "failed", "interrupted")


def active(t0: float, phase: float, now: float | None = None) -> bool:
    """Readers tick in odd phases of ``phase`` seconds since ``t0`` and are idle in even ones."""
    return int(((time.time() if now is None else now) - t0) // phase) % 2 == 1


def reader_process(root: Path, t0: float, phase: float) -> None:
    """One dashboard session without a browser: wait for a run, then ``Dashboard.tick()`` every TICK_MS (odd phases)."""
    from fnodiag.dashboard.dashboard import TICK_MS, Dashboard
    from fnodiag.runs import RunDir

    print("ready", flush=True)
    run = RunDir(root / "bench")
    while not run.store_path.is_file():
        time.sleep(0.05)
    dash, costs = Dashboard(root), []
    dash.tabs.active = 2  # Gradients: the tab whose tick reads the most
    dash.tick()
    opened = time.time()  # the session's one-off open cost ends here; steps before it are not compared
    cpu0 = time.process_time()
    while (run.read_status() or {}).get("state") not in DONE:
        if active(t0, phase):
            t = time.perf_counter()
            dash.tick()
            costs.append((time.perf_counter() - t) * 1e3)
        time.sleep(TICK_MS / 1e3)
    print(
        f"ticks {len(costs)} median {statistics.median(costs) if costs else 0:.2f} ms "
        f"cpu {time.process_time() - cpu0:.1f} s points {dash.points_sent}",
        flush=True,
    )
    print(f"opened {opened!r}", flush=True)


def tail_thread(run, stop: threading.Event, t0: float, phase: float, out: list) -> None:
    """What one session's views read each tick: new loss / grad / lr rows and new activation and grad matrices."""
    from fnodiag.dashboard.live import Tail

    while not run.store_path.is_file() and not stop.is_set():
        time.sleep(0.05)
    tail, n = Tail(run), 0
    while not stop.is_set():
        if active(t0, phase):
            for name in ("train/loss", "grad/norm_preclip", "grad/norm_postclip", "lr"):
                tail.scalar(name, new=True)
            tail.matrix("activation", "spatial_std", new=True)
            tail.matrix("grad", "norm", new=True)
            n += 1
        stop.wait(0.25)
    tail.close()
    out.append(f"ticks {n}")


def phase_step_times(run, t0: float, phase: float, after: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Step durations (consecutive ``train/loss`` wall times after ``after``) wholly inside idle / active phases."""
    from fnodiag.runs import StoreReader

    with StoreReader(run.store_path) as r:
        rec = r.scalars("train/loss")
    wall = rec.wall[np.argsort(rec.step)]
    wall = wall[wall >= after]
    a, b = wall[:-1], wall[1:]
    same = np.array([int((x - t0) // phase) == int((y - t0) // phase) for x, y in zip(a, b)], bool)
    on = np.array([active(t0, phase, x) for x in a], bool)
    dt = b - a
    return dt[same & ~on], dt[same & on]


def one_run(tmp: Path, cache: Path, epochs: int, readers: int, kind: str, phase: float):
    """Train the tiny run once, readers alternating on / off; ``(idle step times, active step times, note)``."""
    from fnodiag.runs import RunDir

    root = Path(tempfile.mkdtemp(dir=tmp, prefix="run-"))
    run = RunDir(root / "bench")
    t0 = time.time()
    procs, threads, stop, notes = [], [], threading.Event(), []
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    if kind == "dashboard":
        for _ in range(readers):
            procs.append(
                subprocess.Popen(
                    [sys.executable, __file__, "--reader", str(root), "--t0", repr(t0), "--phase", str(phase)],
                    stdout=subprocess.PIPE,
                    text=True,
                    env=env,
                )
            )
        for p in procs:
            assert p.stdout.readline().strip() == "ready"  # imports done before training starts
    else:
        for _ in range(readers):
            threads.append(threading.Thread(target=tail_thread, args=(run, stop, t0, phase, notes), daemon=True))
            threads[-1].start()
    cmd = [
        sys.executable,
        "-m",
        "fnodiag.cli",
        "train",
        *TINY,
        "--epochs",
        str(epochs),
        "--out",
        str(root),
        "--name",
        "bench",
        "--cache-dir",
        str(cache),
    ]
    try:
        subprocess.run(cmd, check=True, capture_output=True, env=env, timeout=900)
    finally:
        stop.set()
        opened = [0.0]
        for p in procs:
            try:
                lines = p.communicate(timeout=60)[0].strip().splitlines()
            except subprocess.TimeoutExpired:
                p.kill()
                continue
            notes += [x for x in lines if not x.startswith("opened ")]
            opened += [float(x.split()[1]) for x in lines if x.startswith("opened ")]
            if not any(x.startswith("opened ") for x in lines):
                opened.append(float("inf"))  # never opened: nothing to compare
        for t in threads:
            t.join(timeout=10)
    idle, busy = phase_step_times(run, t0, phase, after=max(opened))
    return idle, busy, "; ".join(notes)


def slowdown(readers: int, kind: str, epochs: int, rounds: int, phase: float) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cache = tmp / "cache"
        subprocess.run(
            [
                sys.executable,
                "-m",
                "fnodiag.cli",
                "train",
                *TINY,
                "--epochs",
                "1",
                "--out",
                str(tmp / "warm"),
                "--name",
                "warm",
                "--cache-dir",
                str(cache),
            ],
            check=True,
            capture_output=True,
            timeout=600,
        )
        idle_all, busy_all = [], []
        for k in range(rounds):
            idle, busy, note = one_run(tmp, cache, epochs, readers, kind, phase)
            idle_all.append(idle)
            busy_all.append(busy)
            print(
                f"round {k + 1}: median step, readers idle {np.median(idle) * 1e3:.1f} ms ({len(idle)} steps), "
                f"{readers} {kind} readers ticking {np.median(busy) * 1e3:.1f} ms ({len(busy)} steps)   [{note}]",
                flush=True,
            )
        a, b = float(np.median(np.concatenate(idle_all))), float(np.median(np.concatenate(busy_all)))
        print(
            f"tiny run, --capture-every 1, {epochs} epochs x {rounds}, readers on / off every {phase:g} s: "
            f"median step {a * 1e3:.1f} ms without readers, {b * 1e3:.1f} ms with {readers} {kind} readers "
            f"ticking every 250 ms   ratio {b / a:.3f}   ({os.cpu_count()} CPU cores, shared with other load)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=50)
    parser.add_argument("--steps", type=int, default=10_000)
    parser.add_argument("--ticks", type=int, default=20)
    parser.add_argument("--slowdown", type=int, metavar="N", help="measure training step time with N readers instead")
    parser.add_argument(
        "--reader-kind",
        choices=("dashboard", "tail"),
        default="dashboard",
        help="dashboard: processes running Dashboard.tick(); tail: threads of fnodiag.dashboard.live.Tail reads",
    )
    parser.add_argument("--epochs", type=int, default=20, help="epochs of the tiny run (--slowdown; 10 steps each)")
    parser.add_argument("--rounds", type=int, default=2, help="training runs (--slowdown)")
    parser.add_argument("--phase", type=float, default=2.0, help="seconds readers tick / rest in turn (--slowdown)")
    parser.add_argument("--reader", help=argparse.SUPPRESS)
    parser.add_argument("--t0", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.reader:
        return reader_process(Path(args.reader), args.t0, args.phase)
    if args.slowdown is not None:
        return slowdown(args.slowdown, args.reader_kind, args.epochs, args.rounds, args.phase)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "runs"
        t0 = time.perf_counter()
        run, names = build(root, args.layers, args.steps)
        print(
            f"built {len(names)} layers x {args.steps} steps store in {time.perf_counter() - t0:.1f} s "
            f"({run.store_path.stat().st_size / 1e6:.0f} MB)"
        )
        with StoreReader(run.store_path) as r:
            t0 = time.perf_counter()
            r.layer_matrix("activation", "spatial_std")
            print(f"store alone, one stat (layer_matrix): {(time.perf_counter() - t0) * 1e3:.0f} ms")

        from bokeh.document import Document

        from fnodiag.dashboard.dashboard import Dashboard

        Dashboard(root)  # warm imports and HoloViews option trees once
        t0 = time.perf_counter()
        dash = Dashboard(root)
        dash.layout().get_root(Document())
        open_s = time.perf_counter() - t0
        print(
            f"open (all views built and rendered to Bokeh): {open_s:.2f} s   target < 2 s   "
            f"[heatmap binned to <= 400 columns, lines to <= 2000 points]"
        )

        medians, step = [], args.steps
        with RunStore(run.store_path, flush_every=None) as store:
            for tab, view in enumerate(dash.views):  # only the shown tab streams; the others catch up when shown
                dash.tabs.active = tab
                costs, sent = [], []
                for _ in range(args.ticks + 1):
                    store.log_layer_stats(step, 0, "activation", {(n, st): 0.5 for n in names for st in ACT_STATS})
                    store.log_layer_stats(step, 0, "grad", {(n, "norm"): 0.5 for n in names})
                    store.log_scalars(
                        step, 0, {"train/loss": 0.1, "lr": 1e-3, "grad/norm_preclip": 1.0, "grad/norm_postclip": 0.9}
                    )
                    store.flush()
                    step += 1
                    t0 = time.perf_counter()
                    sent.append(dash.tick())
                    costs.append((time.perf_counter() - t0) * 1e3)
                catch_up, costs, sent = costs[0], costs[1:], sent[1:]
                medians.append(statistics.median(costs))
                print(
                    f"live tick, {view.title} shown (one new step): "
                    f"median {medians[-1]:.1f} ms, max {max(costs):.1f} ms"
                    f"   target < 50 ms   points per tick {int(statistics.median(sent))}   "
                    f"first tick after opening the tab (catch-up) {catch_up:.1f} ms"
                )
        print(f"ratio open/target {open_s / 2:.2f}, tick/target {max(medians) / 50:.2f} (slowest tab)")


if __name__ == "__main__":
    main()
