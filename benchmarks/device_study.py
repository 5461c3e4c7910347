"""The full-size answer of ``phase5`` as one command: which reference condition, removed, stops the collapse?

Runs ``fnodiag sweep phase5`` for the ``stable`` (the reference's Phase-5 conditions) and ``control``
arms and the ``no_gain``, ``drop_partial_batch`` and ``clip_1`` removals, one seed, all five at once
on one GPU (``--jobs 5 --gpus-per-run 0.2``: five worker processes sharing device 0), then prints the
summary's verdict and its remove-one-condition table, and the step time each run measured. These
five arms share the baseline's data (``phase_on`` and ``nimgs_1`` change it and are left out).

Sizing (full size, one H100-class GPU, 10 minutes in all). The data are phase5's: N=64, two 392-px
objects per split, 13 778 train patches, 862 steps per epoch at batch 16 (861 without the partial
batch); the reference collapsed after its best epoch, ~4 x 862 = 3 500 steps in (brief §8.4).
``--epochs 5`` gives 4 310 steps, 1.2x that. Step time: the reference's only timed GPU run took
~35 s per epoch (862 steps and validation) on an RTX 3090, ~40 ms a step (brief §9), for one run
that synchronised with the host for every parameter tensor each step (fnodiag does not). With
five runs sharing one H100 (16 cores: three threads each) the estimate is at most 60 ms a step per
run: 4 310 x 0.06 = 260 s of training, plus validation (137 batches an epoch, ~5 x 5 s), the
simulation of the shared dataset (~8 s, once), worker start-up, checkpoint capture and summaries
(~60 s): about 6 minutes, inside 10 with room for a slower step (up to ~110 ms). The script prints
the step time it measured and the epochs that would fill 10 minutes at that rate, so the estimate is
checked on the first run; ``--epochs`` changes it.

On a machine without a GPU (``--tiny``, or no CUDA device) it runs the same command (the same sweep,
local executor, worker processes) at a tiny size: N=32, 64-px objects, a 2-level width-4 U-NO, one
epoch, two jobs on the CPU, which is what ``tests/test_device_study.py`` checks.

Usage: python benchmarks/device_study.py [--out DIR] [--epochs E] [--jobs K] [--seed S] [--tiny]
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ARMS = ("stable", "control", "no_gain", "drop_partial_batch", "clip_1")
SEED = 20260128
FULL_EPOCHS = 5  # 4 310 steps a run: past the ~3 500 steps at which the reference collapsed
BUDGET_S = 600.0
OVERHEAD_S = 90.0  # simulation, start-up, validation, capture, summaries (estimated; see above)
# The tiny size of tests/conftest.py (TINY) as `fnodiag sweep` flags; phase5's other settings stay.
TINY_FLAGS = [
    "--N", "32", "--object-size", "64", "--blocks", "2", "--width", "4", "--modes", "4",
    "--batch-size", "8", "--infer-batch-size", "16", "--accelerator", "cpu", "--devices", "1",
]  # fmt: skip
SECTIONS = ("## Verdict", "## Attribution")


def sweep_command(out: Path, *, tiny: bool, epochs: int, jobs: int, seed: int) -> list[str]:
    """The ``fnodiag sweep phase5`` command line of the study (full size on GPU 0, or tiny on the CPU)."""
    fnodiag = shutil.which("fnodiag", path=str(Path(sys.executable).parent)) or "fnodiag"
    argv = [fnodiag, "sweep", "phase5", "--arms", ",".join(ARMS), "--seeds", str(seed), "--out", str(out)]
    argv += ["--jobs", str(jobs), "--epochs", str(epochs)]
    if tiny:
        return argv + TINY_FLAGS
    return argv + ["--gpus-per-run", f"{1 / jobs:.6g}", "--accelerator", "gpu", "--devices", "1"]


def summary_sections(markdown: str, headings=SECTIONS) -> str:
    """The sections of ``summary.md`` whose heading starts with one of ``headings``, in order."""
    parts = re.split(r"(?m)^(?=## )", markdown)
    return "\n".join(p.rstrip() + "\n" for p in parts if p.startswith(tuple(headings)))


def step_times(out: Path) -> list[dict]:
    """Per run: optimizer steps, training wall time (``effective_config.json``) and seconds per step."""
    rows = []
    for status_path in sorted(out.glob("*/status.json")):
        run = status_path.parent
        status = json.loads(status_path.read_text())
        effective = run / "effective_config.json"
        wall = json.loads(effective.read_text()).get("wall_time_s") if effective.is_file() else None
        steps = int(status.get("step") or 0)
        per_step = wall / steps if wall and steps else None
        rows.append(
            {"run": run.name, "state": status.get("state"), "steps": steps, "wall_s": wall, "s_per_step": per_step}
        )
    return rows


def epochs_that_fit(s_per_step: float, steps_per_epoch: int = 862, budget_s: float = BUDGET_S) -> int:
    """Epochs whose steps fill ``budget_s`` minus :data:`OVERHEAD_S` at ``s_per_step`` (at least 1)."""
    return max(1, int((budget_s - OVERHEAD_S) / (s_per_step * steps_per_epoch)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/device-study", help="sweep folder (running again resumes it)")
    parser.add_argument("--epochs", type=int, help=f"epochs per run (default: {FULL_EPOCHS} at full size, 1 tiny)")
    parser.add_argument("--jobs", type=int, help="runs at a time (default: 5 on a GPU, 2 on the CPU)")
    parser.add_argument("--seed", type=int, default=SEED, help=f"the one seed (default: {SEED})")
    parser.add_argument("--tiny", action="store_true", help="the tiny CPU size (the default without a GPU)")
    args = parser.parse_args(argv)

    import torch  # here, so that --help answers without loading torch

    tiny = args.tiny or not torch.cuda.is_available()
    epochs = args.epochs or (1 if tiny else FULL_EPOCHS)
    jobs = args.jobs or (2 if tiny else len(ARMS))
    out = Path(args.out)
    cmd = sweep_command(out, tiny=tiny, epochs=epochs, jobs=jobs, seed=args.seed)
    print(("tiny CPU size" if tiny else f"full size on {torch.cuda.get_device_name(0)}") + ": " + " ".join(cmd))
    t0 = time.perf_counter()
    rc = subprocess.run(cmd).returncode
    wall = time.perf_counter() - t0
    summary = out / "summary.md"
    if rc != 0 or not summary.is_file():
        print(f"device study: the sweep exited with status {rc}; its folder is {out}", file=sys.stderr)
        return rc or 1

    print("\n==== device study: phase5 " + ", ".join(ARMS) + f", seed {args.seed}, {epochs} epoch(s) ====\n")
    print(summary_sections(summary.read_text()))
    times = step_times(out)
    for r in times:
        rate = f"{r['s_per_step'] * 1e3:.1f} ms/step" if r["s_per_step"] else "no step time"
        print(f"{r['run']}: {r['state']}, {r['steps']} steps, {rate}")
    print(f"wall time of the whole study: {wall:.0f} s (budget {BUDGET_S:.0f} s at full size)")
    rates = [r["s_per_step"] for r in times if r["s_per_step"]]
    if rates and not tiny:
        slowest = max(rates)
        print(f"at the slowest run's {slowest * 1e3:.1f} ms/step, {epochs_that_fit(slowest)} epoch(s) fill 10 minutes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
