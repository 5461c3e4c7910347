"""Sweep throughput with concurrent runs: runs per hour at ``--jobs 1`` vs ``--jobs 2`` on this CPU and,
where a GPU is available, K = 1, 2, 4, 8 runs sharing one GPU (ratios to K = 1), in one process.

CPU part: a sweep of 2 arms x 2 seeds trained with ``--jobs 1`` (one run at a time, all cores) and
``--jobs 2`` (two worker processes, cores // 2 threads each) on the same pre-simulated dataset;
``--size tiny`` (N=32, width 4: runs of a few seconds, dominated by process start-up) or ``--size
quick`` (the ``quick`` preset's data and model: runs of tens of seconds, like real CPU sweeps).
GPU part: K stage-a ``stable_hybrid`` runs of about ``--gpu-steps``
optimizer steps each, trained at once as K local workers with ``--gpus-per-run 1/K`` on device 0.
Machines are shared and noisy: read ``uptime`` before and after (both printed).

Usage: python benchmarks/bench_sweep_parallel.py [--size quick] [--epochs 3] [--gpu-steps 300] [--skip-cpu]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from fnodiag.ptycho.simulate import load_or_simulate
from fnodiag.sweeps.definition import load_definition
from fnodiag.sweeps.runner import run_sweep

TINY = {
    "data.N": 32,
    "data.object_size": 64,
    "data.set_phi": True,
    "model.blocks": 2,
    "model.width": 4,
    "model.modes": 4,
    "train.batch_size": 8,
    "train.infer_batch_size": 16,
    "train.capture_every": 0,
    "train.accelerator": "cpu",
    "train.devices": "1",
}
# --size quick: the quick preset (N=32, 164-px object, width 16, 3 blocks) with live capture off
QUICK = {"train.capture_every": 0, "train.accelerator": "cpu", "train.devices": "1"}
ARMS = {
    "control": {"model.arch": "hybrid", "optim.name": "adam"},
    "stable_sgd": {"model.arch": "stable_hybrid", "optim.name": "sgd", "optim.momentum": 0.9},
}


def write_definition(
    path: Path, name: str, shared: dict, arms: dict, seeds: list[int], preset: str | None = None
) -> Path:
    entries = lambda fields: [f'"{k}" = {json.dumps(v)}' for k, v in fields.items()]
    lines = [
        f'name = "{name}"',
        f"seeds = {json.dumps(seeds)}",
        *([f'preset = "{preset}"'] if preset else []),
        "[shared]",
        *entries(shared),
    ]
    for arm, settings in arms.items():
        lines += [f"[arms.{arm}]", *entries(settings)]
    path.write_text("\n".join(lines) + "\n")
    return path


def timed_sweep(toml: Path, out: Path, datasets: Path, **kwargs) -> tuple[float, int]:
    """Seconds to train every run of ``toml`` into a fresh ``out`` (dataset copied in, not simulated)."""
    shutil.copytree(datasets, out / "datasets")
    t0 = time.perf_counter()
    run_sweep(load_definition(toml), out, echo=lambda line: None, **kwargs)
    wall = time.perf_counter() - t0
    states = [
        json.loads((out / r / "status.json").read_text())["state"]
        for r in json.loads((out / "sweep.json").read_text())["runs"]
    ]
    assert all(s == "finished" for s in states), states
    return wall, len(states)


def cpu_part(tmp: Path, epochs: int, size: str) -> None:
    shared, preset = (TINY, None) if size == "tiny" else (QUICK, "quick")
    toml = write_definition(tmp / "cpu.toml", "bench-cpu", {**shared, "train.epochs": epochs}, ARMS, [1, 2], preset)
    defn = load_definition(toml)
    datasets = tmp / "datasets"
    load_or_simulate(defn.config("control", 1).data, datasets)
    rates = {}
    for jobs in (1, 2):
        wall, n = timed_sweep(toml, tmp / f"jobs{jobs}", datasets, jobs=jobs)
        rates[jobs] = n / wall * 3600
        print(f"cpu --jobs {jobs}: {n} runs in {wall:.1f} s = {rates[jobs]:.0f} runs/hour", flush=True)
    print(f"cpu ({size}) --jobs 2 / --jobs 1 throughput: {rates[2] / rates[1]:.2f}x ({os.cpu_count()} cores)")


def gpu_part(tmp: Path, steps: int) -> None:
    import torch

    if not torch.cuda.is_available():
        print("gpu: skipped (torch.cuda.is_available() is False on this machine)")
        return
    shared = {"train.accelerator": "gpu", "train.devices": "1", "train.capture_every": 0}
    probe = write_definition(
        tmp / "probe.toml",
        "bench-gpu",
        shared,
        {"stable_hybrid": {"model.arch": "stable_hybrid"}},
        [1],
        preset="stage-a",
    )
    cfg = load_definition(probe).config("stable_hybrid", 1)
    datasets = tmp / "gpu-datasets"
    data = load_or_simulate(cfg.data, datasets)
    per_epoch = max(1, len(data.train.diffraction) // cfg.train.batch_size)
    epochs = max(1, math.ceil(steps / per_epoch))
    print(f"gpu: {torch.cuda.get_device_name(0)}; stage-a stable_hybrid, {epochs} epochs x {per_epoch} steps per run")
    rates = {}
    for k in (1, 2, 4, 8):
        toml = write_definition(
            tmp / f"gpu{k}.toml",
            "bench-gpu",
            {**shared, "train.epochs": epochs},
            {"stable_hybrid": {"model.arch": "stable_hybrid"}},
            list(range(1, k + 1)),
            preset="stage-a",
        )
        wall, n = timed_sweep(toml, tmp / f"gpu{k}", datasets, jobs=k, gpus_per_run=1 / k)
        rates[k] = n / wall * 3600
        print(
            f"gpu K={k}: {n} runs in {wall:.1f} s = {rates[k]:.0f} runs/hour, {rates[k] / rates[1]:.2f}x K=1",
            flush=True,
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=3, help="epochs of each CPU run (default: 3)")
    ap.add_argument(
        "--size",
        choices=("tiny", "quick"),
        default="quick",
        help="CPU runs: tiny (seconds, start-up bound) or quick (the quick preset; default)",
    )
    ap.add_argument("--gpu-steps", type=int, default=300, help="optimizer steps of each GPU run (default: 300)")
    ap.add_argument("--skip-cpu", action="store_true", help="only the GPU part")
    args = ap.parse_args()
    print("uptime before:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
    with tempfile.TemporaryDirectory() as tmp:
        if not args.skip_cpu:
            cpu_part(Path(tmp), args.epochs, args.size)
        gpu_part(Path(tmp), args.gpu_steps)
    print("uptime after:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())


if __name__ == "__main__":
    main()
