"""Benchmark of the one norm kernel: complex gradients through their real view vs torch's complex kernel.

Builds the stage-a generator, gives every parameter a random gradient and times, in one process,
:func:`fnodiag.diagnostics.norms.tensor_norms` (complex tensors as ``torch.view_as_real`` views) against
``torch._foreach_norm`` over the complex tensors themselves (what the clipping and statistics code
did before the real view). Prints both medians and their ratio (complex / real view; the view was
~30x faster on a 2-core CPU); machines are shared, so read the ratio, not the times.

Run: ``.venv/bin/python benchmarks/bench_norms.py [--repeats 30]``
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from fnodiag.config import preset
from fnodiag.diagnostics.norms import tensor_norms
from fnodiag.models import build_model


def median_s(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30, help="timed calls per variant (default 30)")
    args = parser.parse_args()
    cfg = preset("stage-a")
    torch.manual_seed(0)
    grads = [torch.randn_like(p) for p in build_model(cfg.model, cfg.data.N).parameters()]
    n_complex = sum(g.is_complex() for g in grads)
    view = median_s(lambda: tensor_norms(grads), args.repeats)
    direct = median_s(lambda: torch._foreach_norm(grads, 2.0), args.repeats)
    print(
        f"{len(grads)} gradients ({n_complex} complex): real view {view * 1e3:.2f} ms, "
        f"complex kernel {direct * 1e3:.2f} ms, ratio {direct / view:.1f}x"
    )


if __name__ == "__main__":
    main()
