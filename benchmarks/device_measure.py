"""The measurements of ``benchmarks/device_check.py`` (see there): imported only where CUDA is found."""

from __future__ import annotations

import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import lightning as L
import torch
from bench_train_step import lightning_steps  # same folder
from bench_watch import conv_net
from device_study import TINY_FLAGS, step_times

import fnodiag
from fnodiag.config import preset
from fnodiag.models import build_model
from fnodiag.ptycho.forward import ForwardModel, get_loss
from fnodiag.ptycho.simulate import ideal_disk_probe, simulate
from fnodiag.training.system import ReconstructionSystem

BLOCK = 10
ARMS = {"plain": None, "every=10": 10, "every=1": 1, "no capture": 10**9}
SHARING = (1, 2, 4, 8)


class Clock:
    """The budget: :meth:`left` seconds remain; :meth:`section` says whether one more section may start."""

    def __init__(self, budget: float):
        self.t0, self.budget = time.perf_counter(), budget

    def left(self) -> float:
        return self.budget - (time.perf_counter() - self.t0)

    def section(self, name: str, needs: float) -> bool:
        if self.left() < needs:
            print(f"{name}: skipped ({self.left():.0f} s of the budget left, it needs about {needs:.0f} s)")
            return False
        print(f"\n== {name} ({self.left():.0f} s of the budget left)", flush=True)
        return True


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def count_syncs(device: torch.device):
    """Counts synchronising CUDA calls: ``with count_syncs(d) as n: ...``, then ``n[0]`` (None on the CPU)."""

    class Counter:
        def __enter__(self):
            self.n = [0]
            if device.type != "cuda":
                return self.n
            self._w = warnings.catch_warnings(record=True)
            self.caught = self._w.__enter__()
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            return self.n

        def __exit__(self, *exc):
            if device.type == "cuda":
                torch.cuda.set_sync_debug_mode("default")
                self.n[0] = sum("synchroniz" in str(w.message) for w in self.caught)
                self._w.__exit__(*exc)
            else:
                self.n[0] = None
            return False

    return Counter()


class Loop:
    """One copy of a plain loop (fresh model, seed 0, Adam), under ``fnodiag.watch`` unless ``every`` is None."""

    def __init__(self, make_model, every, folder: Path, device: torch.device, compiled: bool = False):
        torch.manual_seed(0)
        self.model = make_model().to(device)
        self.called = torch.compile(self.model) if compiled else self.model
        self.opt = torch.optim.Adam(self.model.parameters(), lr=1e-3)
        self.w = fnodiag.watch(self.called, folder, optimizer=self.opt, every=every) if every is not None else None

    def step(self, x, loss_fn) -> None:
        self.opt.zero_grad(set_to_none=True)
        loss = loss_fn(self.called(x), x)
        loss.backward()
        self.opt.step()
        if self.w is not None:
            self.w.log(loss=loss)

    def close(self) -> None:
        if self.w is not None:
            self.w.close()


def quick_setup(device: torch.device, batch: int):
    cfg = preset("quick")
    n = cfg.data.N
    forward = ForwardModel(torch.as_tensor(ideal_disk_probe(n), dtype=torch.complex64)).to(device)
    physics = get_loss(cfg.train.loss)
    g = torch.Generator().manual_seed(1)
    batches = [torch.rand(batch, 1, n, n, generator=g).to(device) for _ in range(16)]
    return cfg, (lambda obj, x: physics(forward(obj), x)), batches


def watch_ratios(label: str, make_model, device, blocks: int, *, compiled: bool = False, batch: int = 8) -> None:
    """Section 1: the ratio of each ``watch`` arm to the plain loop, interleaved block by block."""
    cfg, loss_fn, batches = quick_setup(device, batch)
    times: dict[str, list[float]] = {a: [] for a in ARMS}
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        loops = {a: Loop(make_model, k, Path(tmp) / a.replace(" ", "-"), device, compiled) for a, k in ARMS.items()}
        for loop in loops.values():  # warm-up: step 0 (a capture), compilation, allocator
            for j in range(2):
                loop.step(batches[j], loss_fn)
        sync(device)
        warm = time.perf_counter() - t0
        order = list(loops)
        for b in range(blocks):
            for a in order[b % len(order) :] + order[: b % len(order)]:
                sync(device)
                t = time.perf_counter()
                for j in range(BLOCK):
                    loops[a].step(batches[(b * BLOCK + j) % len(batches)], loss_fn)
                sync(device)
                times[a].append(time.perf_counter() - t)
        for loop in loops.values():
            loop.close()
    params = sum(p.numel() for p in make_model().parameters())
    print(
        f"watch on {label} ({params:,} parameters), batch {batch}, {blocks} blocks of {BLOCK} steps"
        + (f", compiled (inductor; warm-up with compilation {warm:.1f} s)" if compiled else "")
    )
    print(f"  plain loop         : median {statistics.median(times['plain']) / BLOCK * 1e3:7.2f} ms/step")
    for a in ARMS:
        if a != "plain":
            r = [t / p for t, p in zip(times[a], times["plain"])]
            print(f"  watch {a:<13}: ratio {statistics.median(r):.3f} to plain (min {min(r):.3f}, max {max(r):.3f})")


def watch_syncs(device, steps: int, batch: int = 8) -> None:
    """Section 2a: synchronising calls per step of the plain loop and of ``watch`` on the quick generator."""
    cfg, loss_fn, batches = quick_setup(device, batch)
    make = lambda: build_model(cfg.model, cfg.data.N)  # noqa: E731
    with tempfile.TemporaryDirectory() as tmp:
        for arm, every in (("plain", None), ("no capture", 10**9), ("every=10", 10)):
            loop = Loop(make, every, Path(tmp) / arm.replace(" ", "-"), device)
            loop.step(batches[0], loss_fn)  # step 0: the probe is taken, the first capture
            loop.step(batches[1], loss_fn)
            sync(device)
            with count_syncs(device) as n:
                for j in range(steps):  # steps 2 .. steps+1: under the writer's 50-step flush for `steps` < 48
                    loop.step(batches[j % len(batches)], loss_fn)
            sync(device)
            loop.close()
            per = "n/a (no CUDA)" if n[0] is None else f"{n[0] / steps:.2f} per step"
            print(f"  watch syncs, {arm:<11}: {per} over {steps} steps")


class SyncCounter(L.Callback):
    """Synchronising CUDA calls of each Lightning step (batch start to batch end), device check section 2b."""

    def __init__(self, device):
        self.device, self.counts, self._c = device, [], None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._c = count_syncs(self.device)
        self._n = self._c.__enter__()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self._c.__exit__(None, None, None)
        self.counts.append(self._n[0])

    @property
    def times(self):  # lightning_steps reads timer.times
        return self.counts


class WallTimer(L.Callback):
    """Mean step time from a synchronised start (after ``warmup`` steps) to a synchronised end: one sync each."""

    def __init__(self, device, warmup: int):
        self.device, self.warmup, self.t0, self.steps, self.end = device, warmup, None, 0, None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.warmup and self.t0 is None:
            sync(self.device)
            self.t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self.t0 is not None:
            self.steps += 1

    def on_train_end(self, trainer, pl_module):
        sync(self.device)
        self.end = time.perf_counter()

    @property
    def times(self):
        return [(self.end - self.t0) / self.steps]


def plain_mean(cfg, data, warmup: int, steps: int, device) -> float:
    """Mean step time of the plain PyTorch loop on the same data, one sync at each end."""
    torch.manual_seed(cfg.train.seed)
    system = ReconstructionSystem(cfg.to_dict(), probe=data.probe).to(device)
    gen, fm, loss_fn = system.generator, system.forward_model, system.loss_fn
    opt = torch.optim.Adam(gen.parameters(), lr=cfg.optim.lr)
    b = cfg.train.batch_size
    x_all = torch.from_numpy(data.train.diffraction).unsqueeze(1)
    xs = [x_all[i * b : (i + 1) * b].to(device) for i in range(warmup + steps)]
    for i, x in enumerate(xs):
        if i == warmup:
            sync(device)
            t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(fm(gen(x)), x)
        loss.backward()
        opt.step()
    sync(device)
    return (time.perf_counter() - t0) / steps


def lightning_ratios(device, steps: int, rounds: int, batch: int, tiny: bool) -> None:
    """Sections 2b and 3: fnodiag's Lightning loop (stage-a) against the plain loop; its syncs per step."""
    cfg = preset("stage-a").override(
        {
            "model.arch": "stable_hybrid",
            "train.epochs": 1,
            "train.batch_size": batch,
            "train.capture_every": 0,
            "train.accelerator": "gpu" if device.type == "cuda" else "cpu",
            "train.devices": "1",
        }
        | (
            {"data.N": 32, "data.object_size": 64, "model.width": 4, "model.blocks": 2, "model.modes": 4}
            if tiny
            else {}
        )
    )
    t0 = time.perf_counter()
    data = simulate(cfg.data)
    warmup = 3
    n_train, took = len(data.train.diffraction), time.perf_counter() - t0
    print(f"stage-a stable_hybrid, batch {batch}, {n_train} train patches (simulated in {took:.1f} s)")
    means: dict[str, list[float]] = {"plain": [], "off": [], "every 10": [], "every 1": []}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(rounds):
            means["plain"].append(plain_mean(cfg, data, warmup, steps, device))
            for arm, k in (("off", 0), ("every 10", 10), ("every 1", 1)):
                times, _ = lightning_steps(
                    cfg, data, warmup + steps, Path(tmp), capture_every=k, timer=WallTimer(device, warmup)
                )
                means[arm].append(times[0])
        base = min(means["plain"])
        print(f"  plain PyTorch loop          : {base * 1e3:7.2f} ms/step (best of {rounds})")
        for arm in ("off", "every 10", "every 1"):
            t = min(means[arm])
            print(
                f"  fnodiag loop, capture {arm:<8}: {t * 1e3:7.2f} ms/step, ratio {t / base:.3f} to plain, "
                f"{t / min(means['off']):.3f} to capture off"
            )
        for k in (0, 10):
            counter = SyncCounter(device)
            counts, _ = lightning_steps(cfg, data, 2 + 20, Path(tmp), capture_every=k, timer=counter)
            counts = counts[2:]
            if counts and counts[0] is None:
                print(f"  fnodiag loop syncs, capture {k or 'off'}: n/a (no CUDA)")
            else:
                print(
                    f"  fnodiag loop syncs, capture {k or 'off'}: {statistics.fmean(counts):.2f} per step "
                    f"(per step: {counts})"
                )


def sharing(out: Path, clock: Clock, tiny: bool) -> None:
    """Section 4: K runs of the quick sweep sharing one GPU (``--jobs K --gpus-per-run 1/K``)."""
    fnodiag_bin = shutil.which("fnodiag", path=str(Path(sys.executable).parent)) or "fnodiag"
    ks = (1, 2) if tiny else SHARING
    base_rate = None
    for k in ks:
        if clock.left() < 40:
            print(f"  K={k}: skipped ({clock.left():.0f} s of the budget left)")
            continue
        folder = out / f"k{k}"
        seeds = ",".join(str(20260128 + i) for i in range(k))
        cmd = [fnodiag_bin, "sweep", "quick", "--arms", "control", "--seeds", seeds, "--out", str(folder)]
        cmd += ["--jobs", str(k), "--epochs", "1"]
        cmd += TINY_FLAGS if tiny else ["--gpus-per-run", f"{1 / k:.6g}", "--accelerator", "gpu", "--devices", "1"]
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=max(clock.left() - 10, 10))
        except subprocess.TimeoutExpired:
            print(f"  K={k}: stopped at the budget")
            continue
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            tail = " | ".join(proc.stderr.strip().splitlines()[-3:])[:300]
            print(f"  K={k}: the sweep exited with status {proc.returncode}: {tail}")
            continue
        rows = [r for r in step_times(folder) if r["s_per_step"]]
        per = statistics.median(r["s_per_step"] for r in rows) if rows else float("nan")
        rate = k / per if rows else float("nan")
        base_rate = base_rate or rate
        print(
            f"  K={k}: sweep wall {wall:5.1f} s, {len(rows)} runs, median {per * 1e3:6.2f} ms/step a run, "
            f"{rate:7.1f} steps/s in all ({rate / base_rate:.2f}x of K=1)"
        )


def run_all(args) -> None:
    """Every section of the check within ``args.budget`` seconds (``args.dry_run``: on the CPU, tiny)."""
    device = torch.device("cuda" if torch.cuda.is_available() and not args.dry_run else "cpu")
    tiny = device.type == "cpu"
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU (dry run: numbers mean nothing)"
    print(f"device_check on {name}, torch {torch.__version__}, budget {args.budget:.0f} s", flush=True)
    clock = Clock(args.budget)
    cfg = preset("quick")
    quick = lambda: build_model(cfg.model, cfg.data.N)  # noqa: E731
    blocks = 1 if tiny else 20
    sections = [
        ("1a watch, quick generator", 40, lambda: watch_ratios("the quick generator", quick, device, blocks)),
        ("1b watch, conv net", 30, lambda: watch_ratios("a conv net", conv_net, device, blocks)),
        ("2a host syncs of watch", 15, lambda: watch_syncs(device, 3 if tiny else 40)),
        (
            "3 fnodiag loop vs plain",
            90,
            lambda: lightning_ratios(device, 3 if tiny else 60, 1 if tiny else 2, 4 if tiny else 16, tiny),
        ),
    ]
    if not tiny:
        compiled = lambda: watch_ratios("a compiled conv net", conv_net, device, blocks, compiled=True)  # noqa: E731
        sections.append(("1c watch, compiled conv net", 90, compiled))
    for label, needs, run in sections:
        if clock.section(label, needs):
            try:
                run()
            except Exception as exc:  # one section's failure must not cost the others their device time
                print(f"  {label} failed: {type(exc).__name__}: {' '.join(str(exc).split())[:300]}")
    if clock.section("4 K runs sharing the device", 60):
        with tempfile.TemporaryDirectory() as tmp:
            try:
                sharing(Path(args.out) if args.out else Path(tmp), clock, tiny)
            except Exception as exc:
                print(f"  sharing failed: {type(exc).__name__}: {' '.join(str(exc).split())[:300]}")
    print(f"\ndevice_check done in {args.budget - clock.left():.0f} s", flush=True)
