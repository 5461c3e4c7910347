"""What one live capture's parameter statistics cost, before and after the stacked group reduction, in one process.

Per capture the capture core takes per-module gradient norms, a weight snapshot and then the
update-to-weight ratios with the weight norms (:mod:`fnodiag.diagnostics.stats`). Each per-module
value combines the per-tensor norms of one ``torch._foreach_norm`` into its module's group. Before,
that was a Python loop over the groups (one ``stack`` + ``vector_norm`` each: three loops a capture);
now it is one ``index_add_`` of the squared norms (:func:`fnodiag.diagnostics.stats._group_norms`).

This benchmark times a capture's parameter statistics (``grad_norms``, ``snapshot_weights``,
``update_ratios(..., with_norms=True)``) with the current grouping and with the previous one
(:func:`loop_group_norms`, kept here as it was), alternating the two repeat by repeat, on the
stage-a generator and the ``quick`` generator; it prints the median of each and their ratio.
Machines are shared: read the ratio, not the times.

Usage: python benchmarks/bench_capture_parts.py [--repeats 200] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from fnodiag.config import preset
from fnodiag.diagnostics import stats
from fnodiag.models import build_model


def loop_group_norms(names, index, norms, device) -> torch.Tensor:
    """The grouping as it was: one stack + vector_norm per group, in a Python loop."""
    members: list[list[torch.Tensor]] = [[] for _ in names]
    for i, n in zip(index, norms):
        if n is not None:
            members[i].append(n.to(device))
    nan = torch.full((), float("nan"), dtype=torch.float32, device=device)
    out = [torch.linalg.vector_norm(torch.stack(m)) if m else nan for m in members]
    return torch.stack(out) if out else torch.empty(0, dtype=torch.float32, device=device)


def capture_params(model, snapshot):
    """One capture's parameter statistics (as :meth:`CaptureCore.before_step` / ``after_step`` take them)."""
    _, grads = stats.grad_norms(model)
    snapshot = stats.snapshot_weights(model, out=snapshot)
    _, ratios, weights = stats.update_ratios(model, snapshot, inplace=True, with_norms=True)
    return snapshot, (grads, ratios, weights)


def compare(label: str, model, repeats: int) -> None:
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    current = stats._group_norms
    groups = len(stats.grad_norms(model)[0])
    snapshot, out = capture_params(model, None)
    stats._group_norms = loop_group_norms
    _, before = capture_params(model, snapshot)
    stats._group_norms = current
    for a, b in zip(out, before):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7, equal_nan=True)
    times = {"loop": [], "stacked": []}
    try:
        for r in range(repeats):
            for arm in ("loop", "stacked") if r % 2 else ("stacked", "loop"):
                stats._group_norms = loop_group_norms if arm == "loop" else current
                t = time.perf_counter()
                snapshot, _ = capture_params(model, snapshot)
                times[arm].append(time.perf_counter() - t)
    finally:
        stats._group_norms = current
    names, params, index = stats._named_params(model, "module")
    norms = stats.tensor_norms(params)
    alone = {"loop": [], "stacked": []}
    for _ in range(repeats * 5):
        for arm, fn in (("loop", loop_group_norms), ("stacked", current)):
            t = time.perf_counter()
            fn(names, index, norms, "cpu")
            alone[arm].append(time.perf_counter() - t)
    loop, stacked = statistics.median(times["loop"]), statistics.median(times["stacked"])
    a_loop, a_stacked = statistics.median(alone["loop"]), statistics.median(alone["stacked"])
    size = sum(p.numel() for p in model.parameters())
    print(
        f"{label} ({size:,} parameters, {groups} modules with parameters):\n"
        f"  one grouping (3 a capture): {a_loop * 1e6:7.1f} us per-group loop, {a_stacked * 1e6:7.1f} us stacked, "
        f"ratio {a_stacked / a_loop:.3f}\n"
        f"  a capture's parameter statistics: {loop * 1e3:7.2f} ms per-group loop, {stacked * 1e3:7.2f} ms stacked, "
        f"ratio {stacked / loop:.3f}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=200, help="timed repeats of each grouping")
    ap.add_argument("--threads", type=int, default=2, help="torch threads")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads, {args.repeats} repeats alternating")
    for name, arch in (("stage-a", "stable_hybrid"), ("quick", "hybrid")):
        cfg = preset(name).override({"model.arch": arch})
        torch.manual_seed(0)
        compare(f"{name} {arch}", build_model(cfg.model, cfg.data.N), args.repeats)


if __name__ == "__main__":
    main()
