"""Where a sweep's runs train: this process, K local processes at a time, or Ray tasks on a cluster.

``EXECUTORS`` maps an ``--executor`` name to a function ``(specs, resources, *, echo, on_result)``
that trains every spec (one arm × seed, see :func:`fnodiag.sweeps.runner.run_one`, the one task all
executors run) and calls ``on_result(result)`` in the driver as each run ends; the driver alone
writes ``sweep.json`` and the summary.

- ``local``, ``jobs=1``: one run after another in this process (the classic sweep).
- ``local``, ``jobs=K``: K worker processes (``python -m fnodiag.sweeps.executors``) at a time, each with
  ``cores // K`` torch / OpenMP threads and, with ``gpus_per_run``, its own ``CUDA_VISIBLE_DEVICES``
  slot (a fraction shares a device: 0.25 puts four runs on each GPU).
- ``ray``: one Ray task per run with ``num_cpus`` / ``num_gpus`` resources on an existing cluster
  (``address``) or a local one; a task whose worker or node died is retried (``max_retries``) and
  resumes from the run's ``last.ckpt``; see :mod:`fnodiag.sweeps.ray`.

Where each attempt ran (host, pid, Ray node, threads, devices) is appended to the run's
``execution.json``, copied into ``effective_config.json`` (``execution``) and ``sweep.json``.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from fnodiag.config import ConfigError
from fnodiag.runs import states

RESULT_MARK = "@@fnodiag-result "
MAX_RETRIES = 3  # Ray retries of a run whose worker or node died


def available_cores() -> int:
    """CPU cores this process may use (its affinity mask, as under SLURM or taskset)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def threads_per_run(cores: int, jobs: int) -> int:
    """Torch / OpenMP threads of each of ``jobs`` concurrent runs on ``cores`` cores: never oversubscribed."""
    return max(1, int(cores) // max(1, int(jobs)))


def gpu_slots(n_devices: int, gpus_per_run: float, jobs: int) -> list[str]:
    """``CUDA_VISIBLE_DEVICES`` of each concurrent local run, at most ``jobs`` of them.

    A fraction ``f <= 1`` fits ``floor(1 / f)`` runs on each device, spread over the devices first
    (``[0, 1, 0, 1]`` for two devices at 0.5); a whole number ``k > 1`` gives each run ``k`` devices.

    Raises
    ------
    ConfigError
        No device, or ``k`` more devices than there are.
    """
    if n_devices < 1:
        raise ConfigError("--gpus-per-run needs a CUDA device and none is visible; drop it to train on the CPU")
    if gpus_per_run <= 1:
        per_device = int(1 / gpus_per_run + 1e-9)
        slots = [str(d) for _ in range(per_device) for d in range(n_devices)]
    else:
        k = int(gpus_per_run)
        if k != gpus_per_run or k > n_devices:
            raise ConfigError(
                f"--gpus-per-run {gpus_per_run} must be a fraction <= 1 or a whole number of at most "
                f"the {n_devices} visible GPUs"
            )
        slots = [",".join(str(d) for d in range(g * k, (g + 1) * k)) for g in range(n_devices // k)]
    return slots[: max(1, jobs)]


@dataclass(frozen=True)
class Resources:
    """How a sweep's runs are placed; recorded in ``sweep.json`` (``execution``)."""

    executor: str
    jobs: int
    threads: int
    gpus_per_run: float
    slots: tuple
    address: str | None
    cores: int
    max_retries: int

    @classmethod
    def plan(
        cls,
        executor: str,
        *,
        jobs: int = 1,
        cpus_per_run: int | None = None,
        gpus_per_run: float = 0.0,
        address: str | None = None,
        n_runs: int = 1,
    ) -> Resources:
        """Check the flags and divide the machine; raises :class:`ConfigError` (one line) on bad values."""
        if int(jobs) != jobs or jobs < 1:
            raise ConfigError(f"--jobs {jobs!r} must be a whole number >= 1")
        if gpus_per_run < 0:
            raise ConfigError(f"--gpus-per-run {gpus_per_run!r} must be >= 0 (0: CPU only)")
        if cpus_per_run is not None and (int(cpus_per_run) != cpus_per_run or cpus_per_run < 1):
            raise ConfigError(f"--cpus-per-run {cpus_per_run!r} must be a whole number >= 1")
        if address and executor != "ray":
            raise ConfigError("--address is the Ray cluster to submit to; add --executor ray")
        cores = available_cores()
        if executor != "local":
            return cls(
                executor, int(jobs), int(cpus_per_run or 1), float(gpus_per_run), (), address, cores, MAX_RETRIES
            )
        slots: list = [None] * int(jobs)
        if gpus_per_run > 0:
            import torch

            slots = gpu_slots(torch.cuda.device_count(), gpus_per_run, int(jobs))
        threads = int(cpus_per_run or threads_per_run(cores, len(slots)))
        if threads * len(slots) > cores:
            raise ConfigError(
                f"{len(slots)} runs at a time x --cpus-per-run {threads} = {threads * len(slots)} threads "
                f"exceed the {cores} cores here; lower --jobs or --cpus-per-run"
            )
        return cls(executor, len(slots), threads, float(gpus_per_run), tuple(slots), None, cores, 0)

    def task_fields(self) -> dict:
        """What each run's task needs to know about its placement (a JSON-able dict)."""
        return {
            "executor": self.executor,
            "jobs": self.jobs,
            "threads": self.threads,
            "gpus_per_run": self.gpus_per_run,
        }


# -- records --------------------------------------------------------------------------------------
def attempt_info(spec: dict) -> dict:
    """Where and how this process trains ``spec``: host, pid, Ray node id, threads, visible devices."""
    node = None
    if "ray" in sys.modules:
        import ray

        if ray.is_initialized():
            node = ray.get_runtime_context().get_node_id()
    return {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "node": node,
        "executor": spec.get("executor", "local"),
        "jobs": spec.get("jobs", 1),
        "threads": spec.get("threads"),
        "gpus_per_run": spec.get("gpus_per_run", 0.0),
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "started": datetime.now(UTC).isoformat(timespec="milliseconds"),
    }


def record_attempt(run, attempt: dict, *, effective: bool = False) -> None:
    """Append ``attempt`` to ``<run>/execution.json``; with ``effective``, also set ``effective_config.execution``
    (after training, which rewrote that file) with the attempt number."""
    record = run.read_json("execution.json", default={}) or {}
    attempts = record.setdefault("attempts", [])
    if not effective:
        attempts.append({**attempt, "resumed": run.last_ckpt_path.is_file()})
        run.write_json("execution.json", record)
        return
    eff = run.read_json("effective_config.json", default={}) or {}
    eff["execution"] = {**attempt, "attempt": len(attempts)}
    run.write_json("effective_config.json", eff)


def _update_manifest(out: Path, change: Callable[[dict], None]) -> None:
    from fnodiag.files import write_json

    path = Path(out) / "sweep.json"
    manifest = json.loads(path.read_text())
    change(manifest)
    write_json(path, manifest, sort_keys=False)


def record_execution(out: Path, resources: Resources) -> None:
    """``sweep.json`` ``execution``: the executor and the placement of the latest sweep command."""
    _update_manifest(out, lambda m: m.__setitem__("execution", asdict(resources) | {"slots": list(resources.slots)}))


def record_result(out: Path, result: dict) -> None:
    """``sweep.json`` ``runs[name]``: the run's state, host, node and every attempt (from its ``execution.json``)."""
    from fnodiag.runs import RunDir

    attempts = (RunDir(Path(out) / result["name"]).read_json("execution.json", default={}) or {}).get("attempts", [])
    last = attempts[-1] if attempts else {}

    def change(m: dict) -> None:
        m["runs"].setdefault(result["name"], {}).update(
            state=result["state"], host=last.get("host"), node=last.get("node"), attempts=attempts
        )

    _update_manifest(out, change)


def mark_dead(run_path: Path, message: str) -> None:
    """A run whose worker died without a word: ``running`` becomes ``interrupted`` (if no one owns it now)."""
    from fnodiag.runs import RunDir
    from fnodiag.runs.lock import RunBusy, RunLock

    run, lock = RunDir(run_path), RunLock(run_path)
    try:
        lock.acquire({"host": socket.gethostname(), "pid": os.getpid(), "role": "sweep driver"})
    except RunBusy:
        return
    with lock:
        status = run.read_status() if run.status_path.is_file() else None
        if status and status["state"] in states.UNFINISHED:
            run.write_status(states.INTERRUPTED, step=status["step"], epoch=status["epoch"], message=message[:500])


# -- local ----------------------------------------------------------------------------------------
def epoch_lines(label: str, epochs: int, echo: Callable[[str], None] = print):
    """A Lightning callback printing one line per finished epoch of one run (a worker's progress)."""
    from fnodiag.training.sweep_progress import SweepProgress

    progress = SweepProgress(total_epochs=epochs, echo=lambda line: echo(line.replace("in the sweep", "in this run")))
    progress.start(label, epochs)
    return progress


def run_local(
    specs: list[dict], res: Resources, *, echo: Callable[[str], None], on_result: Callable[[dict], None]
) -> None:
    """Train ``specs`` here: in this process when ``res.jobs == 1`` and no GPU slot, else in worker processes."""
    from fnodiag.sweeps.runner import run_one

    if res.jobs == 1 and not res.gpus_per_run:
        from fnodiag.training.sweep_progress import SweepProgress

        progress = SweepProgress(total_epochs=sum(s["config"]["train"]["epochs"] for s in specs), echo=echo)
        for spec in specs:
            progress.start(spec["label"], spec["config"]["train"]["epochs"])
            on_result(run_one(spec, callbacks=[progress]))
        return
    _Pool(res, echo, on_result).run(deque(specs))


class _Pool:
    """Up to ``len(res.slots)`` worker processes at a time, one run each; their output is echoed."""

    def __init__(self, res: Resources, echo, on_result):
        self.res, self.echo, self.on_result = res, echo, on_result
        self.running: dict[int, tuple] = {}  # slot -> (process, spec, reader thread, result box)

    def _start(self, slot: int, spec: dict) -> None:
        env = {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            "OMP_NUM_THREADS": str(self.res.threads),
            "MKL_NUM_THREADS": str(self.res.threads),
        }
        if self.res.slots[slot] is not None:
            env["CUDA_VISIBLE_DEVICES"] = self.res.slots[slot]
        proc = subprocess.Popen(
            [sys.executable, "-m", "fnodiag.sweeps.executors"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        proc.stdin.write(json.dumps(spec))
        proc.stdin.close()
        box: dict = {}
        reader = threading.Thread(target=self._read, args=(proc, box), daemon=True)
        reader.start()
        self.running[slot] = (proc, spec, reader, box)
        gpu = f", GPU {self.res.slots[slot]}" if self.res.slots[slot] is not None else ""
        self.echo(
            f"{spec['label']}: started (pid {proc.pid}, {self.res.threads} threads{gpu}); running: "
            + ", ".join(s["name"] for _, s, _, _ in self.running.values())
        )

    def _read(self, proc, box: dict) -> None:
        for line in proc.stdout:
            if line.startswith(RESULT_MARK):
                box["result"] = json.loads(line[len(RESULT_MARK) :])
            elif line.strip():
                self.echo(line.rstrip())

    def run(self, queue: deque) -> None:
        try:
            while queue or self.running:
                for slot in range(len(self.res.slots)):
                    if queue and slot not in self.running:
                        self._start(slot, queue.popleft())
                for slot, (proc, spec, reader, box) in list(self.running.items()):
                    if proc.poll() is not None:
                        reader.join()
                        del self.running[slot]
                        self.on_result(box.get("result") or self._died(spec, proc.returncode))
                time.sleep(0.2)
        except BaseException:
            self._stop()
            raise

    def _died(self, spec: dict, returncode: int) -> dict:
        message = f"worker exited with code {returncode}; run the same command again to resume"
        mark_dead(Path(spec["out"]) / spec["name"], message)
        return {k: spec[k] for k in ("name", "arm", "seed", "label")} | {"state": "died", "message": message}

    def _stop(self) -> None:
        """Ctrl-C: each worker is interrupted (its run records ``interrupted``), killed if it lingers."""
        import signal

        for proc, *_ in self.running.values():
            proc.send_signal(signal.SIGINT)
        deadline = time.monotonic() + 30
        for proc, *_ in self.running.values():
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _run_ray(specs, res, *, echo, on_result):
    from fnodiag.sweeps.ray import run_ray

    run_ray(specs, res, echo=echo, on_result=on_result)


EXECUTORS: dict[str, Callable] = {"local": run_local, "ray": _run_ray}


def _worker() -> int:
    """``python -m fnodiag.sweeps.executors``: train the spec read from stdin; the result is the last line."""
    import logging

    import fnodiag.training.run  # noqa: F401  (imports Lightning, which sets its own log level first)
    from fnodiag.sweeps.runner import run_one

    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)  # one progress line per epoch, no banners
    spec = json.loads(sys.stdin.read())

    result = run_one(spec, callbacks=[epoch_lines(spec["label"], spec["config"]["train"]["epochs"])])
    print(RESULT_MARK + json.dumps(result, default=str), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(_worker())
