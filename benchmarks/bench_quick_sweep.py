"""Wall time of the shipped ``quick`` sweep (5 arms x 3 seeds) on this machine, and its verdict.

Runs the whole sweep into a fresh folder (``--out``, default a temporary one), then prints the
wall time, its ratio to the ten-minute target, and the per-arm table of the summary.

Usage: python benchmarks/bench_quick_sweep.py [--out DIR]
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from fnodiag.sweep import load_definition, run_sweep

TARGET_S = 600.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", help="sweep folder to keep (default: a temporary folder)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.out or Path(tmp) / "quick")
        t0 = time.perf_counter()
        run_sweep(load_definition("quick"), out, echo=lambda line: None)
        wall = time.perf_counter() - t0
        text = (out / "summary.md").read_text()
    print(text[text.index("## Verdict"):text.index("## Runs")])
    print(f"quick sweep (5 arms x 3 seeds): {wall:.0f} s wall, {wall / TARGET_S:.2f} of the {TARGET_S:.0f} s target")


if __name__ == "__main__":
    main()
