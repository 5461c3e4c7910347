"""Wall and CPU time of a shipped CPU sweep (``quick``: 5 arms x 3 seeds; ``quick-reference``: 7 x 3), and its verdict.

Runs the whole sweep into a fresh folder (``--out``, default a temporary one) at ``--jobs`` runs at a
time (default 2, one torch thread each: the setting the definitions are tuned for on a 2-core CPU),
then prints the verdict and arm table of the summary, the wall time and its ratio to the target (20
minutes for ``quick``, 35 for ``quick-reference``, issue 12), and the CPU time of this process and
its workers (on a shared machine, CPU time / cores is what the sweep would take on a quiet one).

Usage: python benchmarks/bench_quick_sweep.py [--definition quick] [--jobs 2] [--out DIR]
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from pathlib import Path

from fnodiag.sweeps.definition import load_definition
from fnodiag.sweeps.runner import run_sweep

TARGET_S = {"quick": 1200.0, "quick-reference": 2100.0}


def cpu_seconds() -> float:
    """User + system CPU time of this process and its finished children."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--definition", default="quick", choices=sorted(TARGET_S), help="sweep definition")
    ap.add_argument("--jobs", type=int, default=2, help="runs at a time (each with cores // jobs threads)")
    ap.add_argument("--out", help="sweep folder to keep (default: a temporary folder)")
    args = ap.parse_args()
    target = TARGET_S[args.definition]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.out or Path(tmp) / args.definition)
        t0, c0 = time.perf_counter(), cpu_seconds()
        run_sweep(load_definition(args.definition), out, jobs=args.jobs, echo=lambda line: None)
        wall, cpu = time.perf_counter() - t0, cpu_seconds() - c0
        text = (out / "summary.md").read_text()
    print(text[text.index("## Verdict") : text.index("## Runs")])
    cores = os.cpu_count() or 1
    print(
        f"{args.definition} sweep, --jobs {args.jobs}: {wall:.0f} s wall ({wall / target:.2f} of the {target:.0f} s "
        f"target); CPU {cpu:.0f} s = {cpu / cores:.0f} s on {cores} quiet cores "
        f"({cpu / cores / target:.2f} of the target)"
    )


if __name__ == "__main__":
    main()
