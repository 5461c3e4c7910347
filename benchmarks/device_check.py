"""The GPU check of capture overhead (issue 27), ready for the day a CUDA device is lent: 8 minutes at most.

On a CUDA device it measures, in one process (sections run in order, each skipped once the budget
``--budget`` is spent, and each one's failure printed as one line without stopping the others):

1. ``fnodiag.watch`` on the ``quick`` generator (U-NO, N = 32, width 16) and on a small conv net,
   that conv net also ``torch.compile``d (inductor): the step-time ratio of ``every=10``, ``every=1``
   and ``no capture`` to the plain loop. Arms interleave block by block (10 steps a block, the order
   rotating); a block is timed between two ``torch.cuda.synchronize()``; an arm's ratio is the median
   over blocks of its block time over plain's.
2. Host synchronisations per step, counted with ``torch.cuda.set_sync_debug_mode("warn")`` (each
   synchronising CUDA call warns once): the plain loop, ``watch`` steps without a capture, ``watch``
   every 10 (averaged over the steps), and fnodiag's own Lightning loop (stage-a, capture off and
   every 10).
3. fnodiag's Lightning loop (stage-a ``stable_hybrid``, batch 16: recorder, checkpointing) against the
   plain PyTorch loop on the same data: capture off, every 10, every 1. Timed from a synchronised
   start to a synchronised end over all timed steps (no per-step synchronisation of the timer).
4. K = 1, 2, 4, 8 runs sharing the GPU: ``fnodiag sweep quick --arms control --seeds <K seeds>
   --jobs K --gpus-per-run 1/K --epochs 1``: the sweep's wall time, each run's seconds per step
   (``effective_config.json``'s training wall time over its steps), and the throughput K / step.

On a machine without CUDA it prints one line saying so and exits 0 (``--dry-run`` runs every section
on the CPU at tiny sizes instead, to check the script itself; its numbers mean nothing).

Usage: python benchmarks/device_check.py [--budget 480] [--out DIR] [--dry-run]
"""

from __future__ import annotations

import argparse
import sys

BUDGET_S = 480.0
NO_CUDA = "device_check: no CUDA device here (torch {torch}, {why}); nothing measured, run it on a GPU machine"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget", type=float, default=BUDGET_S, help="seconds for all sections (default: 480)")
    ap.add_argument("--out", default=None, help="folder for the sharing sweeps (default: a temporary one)")
    ap.add_argument("--dry-run", action="store_true", help="run every section on the CPU at tiny sizes")
    args = ap.parse_args(argv)
    import torch  # here and not above: --help answers without loading torch

    if not torch.cuda.is_available() and not args.dry_run:
        why = "CUDA not built in" if torch.version.cuda is None else "no CUDA device visible"
        print(NO_CUDA.format(torch=torch.__version__, why=why))
        return 0
    import device_measure  # here: a machine without CUDA answers without loading Lightning (same folder)

    device_measure.run_all(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
