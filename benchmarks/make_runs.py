"""Write a runs folder of N realistic run directories quickly, without training (dashboard scale checks).

Every run is written through :mod:`fnodiag.runs` (``RunDir`` + ``RunStore``): ``config.json``, an
``effective_config.json`` that records what the config asked (so the settings audit passes),
``status.json``, ``history.json``, ``metrics.json``, ``collapse.json`` and a store with per-step
scalars (loss, lr, gradient norms), per-epoch validation scalars and per-layer statistics
(activation statistics and gradient norms) of ``layers`` layers at every step. Sweeps get their
``sweep.json`` through :mod:`fnodiag.sweeps.manifest`. States: most runs finished, some
diverged, interrupted or failed (every few); a run written as ``running`` by this process reads as
``stopped`` once it exits (its writer is gone), as a killed run would.

Usage::

    python benchmarks/make_runs.py OUT --runs 1000                     # 1000 single runs
    python benchmarks/make_runs.py OUT --sweep big:10x5 --layers 50 --steps 2000
    python benchmarks/make_runs.py                                     # 200 runs in a temporary folder, timed

Importable: :func:`make_folder`, :func:`make_sweep`, :func:`write_run` (the browser tests use them).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

import numpy as np

from fnodiag.analysis.audit import expected_effective
from fnodiag.config import RunConfig
from fnodiag.runs import RunDir, RunStore, states
from fnodiag.runs.names import (
    CLIP_FRACTION,
    GRAD_CLIPPED,
    GRAD_NORM_POST,
    GRAD_NORM_PRE,
    LR,
    TRAIN_LOSS,
    VAL_AMP_SSIM,
    VAL_LOSS,
)
from fnodiag.sweeps.definition import SweepDefinition, run_name
from fnodiag.sweeps.manifest import record_result, write_spec

ACT_STATS = ("spatial_std", "std", "abs_mean", "nonfinite")
OPTIMIZERS = ("adam", "adamw", "sgd", "radam", "nadam", "rmsprop")
STEPS_PER_EPOCH = 10
# small model settings shared by every run (the audit builds the generator once to count its parameters)
BASE = {"data.N": 32, "data.object_size": 64, "model.blocks": 2, "model.width": 4, "model.modes": 4}


def layer_names(n: int) -> list[str]:
    """``n`` layer names in network order, as the U-NO's recorder names them (``lifter`` ... ``output``)."""
    middle = [f"encoder.{i // 3}" + ("", ".spectral", ".local")[i % 3] for i in range(max(0, n - 2))]
    return ["lifter", *middle, "output"][:n]


def _nested(flat: dict) -> dict:
    """``{"a.b[0].c": v}`` -> ``{"a": {"b": [{"c": v}]}}`` (the paths of :func:`expected_effective`)."""
    out: dict = {}
    for path, value in flat.items():
        keys = [int(k) if k.isdigit() else k for k in re.findall(r"[^.\[\]]+", path)]
        node = out
        for k, nxt in zip(keys, keys[1:]):
            if isinstance(k, int):
                while len(node) <= k:
                    node.append({})
                node = node[k]
            else:
                node = node.setdefault(k, [] if isinstance(nxt, int) else {})
        last = keys[-1]
        if isinstance(last, int):
            while len(node) <= last:
                node.append(None)
        node[last] = value
    return out


def _state(k: int) -> str:
    """Mostly finished; every 7th diverged, every 11th interrupted, every 13th failed, every 17th 'running'."""
    for every, state in ((17, states.RUNNING), (13, states.FAILED), (11, states.INTERRUPTED), (7, states.DIVERGED)):
        if k % every == every - 1:
            return state
    return states.FINISHED


def write_store(path, names: list[str], steps: int, *, seed: int, lr: float, done: int | None = None, diverged=False):
    """A run store at ``path``: per-step scalars and per-layer statistics of ``names`` at each of ``done`` steps.

    Returns
    -------
    (loss (STEP,) float64, ends: the steps that closed an epoch)
    """
    rng = np.random.default_rng(seed)
    done = steps if done is None else done
    decay = 0.5 + 2.5 * rng.random()
    loss = 0.6 * np.exp(-decay * np.arange(done) / max(steps, 1)) + 0.02 * rng.random(done)
    if diverged and done:
        loss[-1] = np.nan
    with RunStore(path, flush_every=None) as store:
        for s in range(done):
            epoch = s // STEPS_PER_EPOCH
            scale = np.exp(-decay * s / max(steps, 1)) * (1 + 0.05 * rng.random(len(names)))
            store.log_layer_stats(
                s,
                epoch,
                "activation",
                {(n, st): float(scale[i] * (j + 1)) for i, n in enumerate(names) for j, st in enumerate(ACT_STATS)},
            )
            store.log_layer_stats(s, epoch, "grad", {(n, "norm"): float(0.1 * scale[i]) for i, n in enumerate(names)})
            gn = float(1.0 + 0.2 * rng.random())
            scalars = {TRAIN_LOSS: float(loss[s]), LR: lr, GRAD_NORM_PRE: gn, GRAD_NORM_POST: gn, GRAD_CLIPPED: 0.0}
            store.log_scalars(s, epoch, scalars)
            if s % STEPS_PER_EPOCH == STEPS_PER_EPOCH - 1:
                store.log_scalars(
                    s,
                    epoch,
                    {VAL_LOSS: float(loss[s]) * 0.9, VAL_AMP_SSIM: float(0.9 - loss[s]), CLIP_FRACTION: 0.0},
                    scope="epoch",
                )
    return loss, list(range(STEPS_PER_EPOCH - 1, done, STEPS_PER_EPOCH))


class Templates:
    """Stores written once per (variant, state) and copied into each run: a store takes ~50 ms to create
    and close (schema, WAL checkpoint), a copy ~1 ms. ``variants`` distinct curves per state."""

    def __init__(self, folder: Path, layers: int, steps: int, variants: int = 8):
        self.folder, self.layers, self.steps, self.variants = Path(folder), layers, steps, variants
        self.made: dict[tuple, tuple] = {}

    def get(self, k: int, state: str, lr: float) -> tuple[Path, np.ndarray, list[int]]:
        key = (k % self.variants, state)
        if key not in self.made:
            rng = np.random.default_rng(k)
            done = self.steps if state == states.FINISHED else int(self.steps * (0.3 + 0.6 * rng.random()))
            path = self.folder / f"store-{key[0]}-{state.replace(' ', '_')}.sqlite"
            loss, ends = write_store(
                path, layer_names(self.layers), self.steps, seed=k, lr=lr, done=done, diverged=state == states.DIVERGED
            )
            self.made[key] = (path, loss, ends)
        return self.made[key]


def write_run(path, config: RunConfig, templates: Templates, *, state: str | None = None, k: int = 0) -> RunDir:
    """Write one run directory at ``path`` as training would leave it; returns its :class:`RunDir`.

    Parameters
    ----------
    path : the run folder (created)
    config : its RunConfig (seed, optimizer, lr are recorded as asked; epochs set from the steps)
    templates : where its store comes from (:class:`Templates`: layers, steps)
    state : final state (default: from ``k`` by :func:`_state`)
    k : the run's index (picks the curves and the state)
    """
    state = state or _state(k)
    steps = templates.steps
    config = config.override({"train.epochs": max(1, steps // STEPS_PER_EPOCH)})
    run = RunDir.create(path, config, exist_ok=True)
    effective = _nested(expected_effective(config, n_groups=1, resumed=False))
    effective.update(steps_per_epoch=STEPS_PER_EPOCH, wall_time_s=round(0.05 * steps, 2), device="cpu")
    effective.setdefault("data", {})["fingerprint"] = {"amp_ssim": 0.1345, "phase_ssim": 1.0}
    run.write_json("effective_config.json", effective)
    store, loss, ends = templates.get(k, state, config.optim.lr)
    shutil.copyfile(store, run.store_path)
    done = len(loss)
    val = [float(loss[s]) * 0.9 for s in ends]
    run.write_history(
        {
            "train_loss": [float(loss[s]) for s in ends],
            "val_loss": val,
            "val_amp_ssim": [0.9 - v / 0.9 for v in val],
            "lr": [config.optim.lr] * len(ends),
            "clip_fraction": [0.0] * len(ends),
        }
    )
    if state == states.FINISHED:
        score = lambda v: {"amp_ssim": 0.9 - v, "phase_ssim": 0.95, "amp_mae": v, "phase_mae": v / 2}
        run.write_metrics(score(min(val)), score(val[-1]))
        collapsed = k % 5 == 4
        names = layer_names(templates.layers)
        run.write_json(
            "collapse.json",
            {
                "verdict": "collapsed" if collapsed else "healthy",
                "collapsed": collapsed,
                "learned_then_collapsed": collapsed,
                "onset_step": int(done * 0.6) if collapsed else None,
                "earliest_layer": names[len(names) // 2] if collapsed else None,
                "earliest_step": int(done * 0.55) if collapsed else None,
                "best_weights": {"at_fingerprint": False},
            },
        )
    message = {states.FAILED: "RuntimeError: made up", states.DIVERGED: "non-finite loss"}.get(state, "")
    run.write_status(state, step=done, epoch=done // STEPS_PER_EPOCH, message=message)
    return run


@contextlib.contextmanager
def no_fsync():
    """Skip fsync while writing (made-up runs need not survive a power cut; it halves the time on a busy disk)."""
    with mock.patch.object(os, "fsync", lambda fd: None):
        yield


def config_for(k: int, seed: int | None = None) -> RunConfig:
    """The ``k``-th made-up configuration: optimizers in turn, lr spread over two decades."""
    lr = float(10 ** (-4 + 2 * ((k * 0.618) % 1)))
    return RunConfig().override(
        {**BASE, "optim.name": OPTIMIZERS[k % len(OPTIMIZERS)], "optim.lr": lr, "train.seed": seed if seed else k}
    )


def make_sweep(folder, name: str, arms: int, seeds: int, templates: Templates) -> list[RunDir]:
    """A sweep folder ``folder`` (``sweep.json`` + ``<arm>-s<seed>/``) of ``arms`` x ``seeds`` runs."""
    folder = Path(folder)
    arm_settings = {f"arm{a:02d}": {"optim.name": OPTIMIZERS[a % len(OPTIMIZERS)]} for a in range(arms)}
    defn = SweepDefinition(name=name, seeds=tuple(range(1, seeds + 1)), arms=arm_settings, shared=dict(BASE))
    pairs = [(a, s) for a in arm_settings for s in defn.seeds]
    write_spec(folder, defn, pairs, {})
    out = []
    for k, (arm, seed) in enumerate(pairs):
        run = write_run(folder / run_name(arm, seed), defn.config(arm, seed), templates, k=k)
        record_result(folder, {"name": run_name(arm, seed), "state": run.read_status(raw=True)["state"]}, [])
        out.append(run)
    return out


def make_folder(
    root, runs: int = 0, sweeps: tuple[tuple[str, int, int], ...] = (), *, layers: int = 13, steps: int = 100
) -> list[RunDir]:
    """``runs`` single runs ``run-0000``... plus one sweep folder per ``(name, arms, seeds)`` under ``root``,
    each run with ``layers`` x ``steps`` per-layer statistics."""
    root = Path(root)
    with tempfile.TemporaryDirectory() as tmp, no_fsync():
        templates = Templates(Path(tmp), layers, steps)
        out = [write_run(root / f"run-{k:04d}", config_for(k), templates, k=k) for k in range(runs)]
        for name, arms, seeds in sweeps:
            out += make_sweep(root / name, name, arms, seeds, templates)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", help="runs folder to write (default: a temporary folder, removed)")
    parser.add_argument("--runs", type=int, default=None, help="single runs (default 200 without OUT, else 0)")
    parser.add_argument("--sweep", action="append", default=[], metavar="NAME:ARMSxSEEDS", help="e.g. big:10x5")
    parser.add_argument("--layers", type=int, default=13, help="layers with statistics per run")
    parser.add_argument("--steps", type=int, default=100, help="steps per run (every step captured)")
    args = parser.parse_args(argv)
    sweeps = []
    for spec in args.sweep:
        m = re.fullmatch(r"([A-Za-z0-9._-]+):(\d+)x(\d+)", spec)
        if not m:
            sys.exit(f"make_runs.py: --sweep {spec!r} is not NAME:ARMSxSEEDS, e.g. big:10x5")
        sweeps.append((m[1], int(m[2]), int(m[3])))
    n = args.runs if args.runs is not None else (0 if args.out else 200)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.out or Path(tmp) / "runs")
        t0 = time.perf_counter()
        made = make_folder(root, n, tuple(sweeps), layers=args.layers, steps=args.steps)
        took = time.perf_counter() - t0
        print(f"wrote {len(made)} runs ({args.layers} layers x {args.steps} steps each) to {root} in {took:.1f} s")


if __name__ == "__main__":
    main()
