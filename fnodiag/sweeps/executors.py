"""Where a sweep's runs train: this process, K local processes at a time, or Ray tasks on a cluster.

An executor is given the task it runs, as Lightning's launchers are given their function: ``(task,
specs, resources, *, echo, on_result)`` trains every spec (one arm × seed) with ``task(spec,
callbacks=[progress])`` and calls ``on_result(result)`` in the driver as each run ends. The sweep
runner hands it :func:`fnodiag.sweeps.task.run_one`; no executor imports the runner, the task or the
summary. A worker process receives the task as a dotted path (``"fnodiag.sweeps.task:run_one"``,
:func:`task_path`) beside its spec and imports it by name (:func:`load_task`). A worker that died
without a result is reported as ``state="died"`` (:func:`died`); the driver marks its run.

- ``local``, ``jobs=1``: one run after another in this process (the classic sweep).
- ``local``, ``jobs=K``: K worker processes (``python -m fnodiag.sweeps.executors``) at a time, each with
  ``cores // K`` torch / OpenMP threads and, with ``gpus_per_run``, its own ``CUDA_VISIBLE_DEVICES``
  slot (a fraction shares a device: 0.25 puts four runs on each GPU).
- ``ray``: one Ray task per run with ``num_cpus`` / ``num_gpus`` resources on an existing cluster
  (``address``) or a local one; see :mod:`fnodiag.sweeps.ray`.
"""

from __future__ import annotations

import ctypes
import importlib
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch

from fnodiag.config import ConfigError
from fnodiag.training.sweep_progress import SweepProgress  # imports Lightning, which sets its own log level first

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
    storage: str | None = None  # ray: where the files that travel live (None: the sweep folder itself)

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
        storage: str | None = None,
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
        if storage and executor != "ray":
            raise ConfigError(
                "--storage is where a Ray cluster's workers put checkpoints and datasets; add --executor ray"
            )
        cores = available_cores()
        if executor != "local":
            return cls(
                executor,
                int(jobs),
                int(cpus_per_run or 1),
                float(gpus_per_run),
                (),
                address,
                cores,
                MAX_RETRIES,
                str(storage) if storage else None,
            )
        slots: list = [None] * int(jobs)
        if gpus_per_run > 0:
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

    def record(self) -> dict:
        """The placement as a JSON-able dict (``sweep.json`` ``execution``)."""
        return asdict(self) | {"slots": list(self.slots)}


# -- tasks ----------------------------------------------------------------------------------------
Task = Callable[..., dict]  # task(spec, *, callbacks=()) -> result dict


def task_path(task: Task) -> str:
    """``"package.module:function"``: how a worker process finds ``task`` (a module-level function)."""
    path = f"{task.__module__}:{task.__qualname__}"
    if "<" in path or task.__module__ == "__main__" or load_task(path) is not task:
        raise ValueError(f"the task {path!r} must be a module-level function for worker processes to import it")
    return path


def load_task(path: str) -> Task:
    """The function a :func:`task_path` names, imported by name."""
    module, _, name = path.partition(":")
    if not (module and name):
        raise ValueError(f"task {path!r} must be written 'package.module:function'")
    target = importlib.import_module(module)
    for part in name.split("."):
        target = getattr(target, part)
    return target


def died(spec: dict, message: str) -> dict:
    """The result of a run whose worker ended without one (``state="died"``; the driver marks the run)."""
    return {k: spec[k] for k in ("name", "arm", "seed", "label")} | {"state": "died", "message": message}


def quiet_lightning() -> None:
    """One progress line per epoch in a worker, no Lightning banners."""
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)


# -- local ----------------------------------------------------------------------------------------
def epoch_lines(label: str, epochs: int, echo: Callable[[str], None] = print):
    """A Lightning callback printing one line per finished epoch of one run (a worker's progress)."""
    progress = SweepProgress(total_epochs=epochs, echo=lambda line: echo(line.replace("in the sweep", "in this run")))
    progress.start(label, epochs)
    return progress


def run_local(
    task: Task, specs: list[dict], res: Resources, *, echo: Callable[[str], None], on_result: Callable[[dict], None]
) -> None:
    """Train ``specs`` with ``task``: in this process when ``res.jobs == 1`` and no GPU slot, else in worker processes.

    Parameters
    ----------
    task : callable
        ``task(spec, *, callbacks=()) -> result dict``; a module-level function when workers run it.
    specs : list of dict
        One JSON-able spec per run (``name``, ``arm``, ``seed``, ``label``, ``config``, ...).
    res : Resources
    echo : callable
        Where progress lines go.
    on_result : callable
        Called in this process with each run's result as it ends.
    """
    if res.jobs == 1 and not res.gpus_per_run:
        progress = SweepProgress(total_epochs=sum(s["config"]["train"]["epochs"] for s in specs), echo=echo)
        for spec in specs:
            progress.start(spec["label"], spec["config"]["train"]["epochs"])
            on_result(task(spec, callbacks=[progress]))
        return
    _Pool(task_path(task), res, echo, on_result).run(deque(specs))


class _Pool:
    """Up to ``len(res.slots)`` worker processes at a time, one run each; their output is echoed."""

    def __init__(self, task: str, res: Resources, echo, on_result):
        self.task, self.res, self.echo, self.on_result = task, res, echo, on_result
        self.running: dict[int, tuple] = {}  # slot -> (process, spec, reader thread, result box)

    def _start(self, slot: int, spec: dict) -> None:
        env = {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            "OMP_NUM_THREADS": str(self.res.threads),
            "MKL_NUM_THREADS": str(self.res.threads),
            PARENT_ENV: str(os.getpid()),
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
        proc.stdin.write(json.dumps({"task": self.task, "spec": spec}))
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
        return died(spec, f"worker exited with code {returncode}; run the same command again to resume")

    def _stop(self) -> None:
        """Ctrl-C: each worker is interrupted (its run records ``interrupted``), killed if it lingers."""
        for proc, *_ in self.running.values():
            proc.send_signal(signal.SIGINT)
        deadline = time.monotonic() + 30
        for proc, *_ in self.running.values():
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


PARENT_ENV = "FNODIAG_SWEEP_PARENT"  # the sweep process's pid, set for its workers


def die_with_parent(parent: int | None) -> None:
    """Have the kernel SIGKILL this process when the thread that started it (the sweep's pool) ends.

    A worker orphaned by a ``kill -9`` of its sweep would train on and then record ``failed`` (its
    output pipe broken); killed with its parent instead, its ``running`` record of a dead pid reads as
    ``stopped`` and the next ``fnodiag sweep`` resumes it. Linux (``prctl(PR_SET_PDEATHSIG)``); a parent
    already gone before the call is caught by comparing ``getppid`` with ``parent``. Elsewhere a no-op.
    """
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if parent is not None and os.getppid() != parent:  # the parent died before prctl took effect
        os.kill(os.getpid(), signal.SIGKILL)


PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def _worker() -> int:
    """``python -m fnodiag.sweeps.executors``: run the task on the spec read from stdin; the result is the last line.

    Stdin holds ``{"task": "package.module:function", "spec": {...}}``. The worker dies with its sweep
    (:func:`die_with_parent`).
    """
    parent = os.environ.get(PARENT_ENV)
    die_with_parent(int(parent) if parent and parent.isdigit() else None)
    quiet_lightning()
    sent = json.loads(sys.stdin.read())
    task, spec = load_task(sent["task"]), sent["spec"]
    result = task(spec, callbacks=[epoch_lines(spec["label"], spec["config"]["train"]["epochs"])])
    print(RESULT_MARK + json.dumps(result, default=str), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(_worker())
