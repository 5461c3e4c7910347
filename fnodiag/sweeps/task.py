"""The per-run task of a sweep: train and capture one arm × seed (:func:`run_one`).

Every executor runs this one function (in the driver's process, in a ``python -m
fnodiag.sweeps.executors`` worker, in a Ray task), given to it by the runner as
``"fnodiag.sweeps.task:run_one"``. A spec is JSON-able: ``out``, ``name``, ``arm``, ``seed``, ``label``,
``config`` (a RunConfig dict) and the placement fields of
:meth:`fnodiag.sweeps.executors.Resources.task_fields`.

A run trains in its folder of the sweep folder (:class:`LocalPlace`), or, on a cluster worker (a
spec with ``records``, ``storage`` and ``storage_token``), in a scratch folder whose records stream
to the sweep driver and whose files go through the storage location
(:class:`fnodiag.sweeps.remote.RemotePlace`); everything below reads and writes the run through
the place's run folder either way.

Where each attempt ran (host, pid, Ray node, threads, devices) is appended to the run's
``execution.json`` (:func:`record_attempt`) and copied into ``effective_config.json`` (``execution``).
A run whose worker died without a word is marked ``interrupted`` by the driver
(:func:`mark_dead`). Each finished run's best and last checkpoints are captured into
``<run>/capture/{best,last}.json`` (:func:`capture_run`); a capture that fails writes
``capture/error.txt`` and leaves the training outcome in ``status.json`` as it was.
"""

from __future__ import annotations

import os
import socket
import sys
import traceback
from datetime import UTC, datetime
from pathlib import Path

import torch

from fnodiag.config import ConfigError, RunConfig
from fnodiag.diagnostics.capture import capture_checkpoint, write_report
from fnodiag.files import atomic_write_text
from fnodiag.runs import RunDir, states
from fnodiag.runs.lock import RunBusy, RunLock
from fnodiag.sweeps.remote import RemotePlace
from fnodiag.training.errors import TrainingError
from fnodiag.training.run import train

CAPTURE_SAMPLES = 16
EXECUTION = "execution.json"


def run_one(spec: dict, *, callbacks=()) -> dict:
    """Train and capture one arm × seed: the one task every executor runs (in process, subprocess, Ray task).

    Idempotent: the run folder is owned first (:class:`~fnodiag.runs.lock.RunLock`; a run another
    live process trains is left alone, ``state="busy"``); a finished or diverged run is never trained
    again (only captured if a capture is missing); an interrupted or failed one resumes from its
    ``last.ckpt``. Torch threads are set to ``spec["threads"]`` for the run and restored after it.

    Parameters
    ----------
    spec : dict
        JSON-able: ``out``, ``name``, ``arm``, ``seed``, ``label``, ``config`` (RunConfig dict),
        ``threads`` and the executor fields of :meth:`fnodiag.sweeps.executors.Resources.task_fields`;
        on a cluster worker also ``records`` (the transport to the driver), ``storage`` and
        ``storage_token`` (:class:`fnodiag.sweeps.remote.RemotePlace`).
    callbacks : sequence of lightning Callbacks
        Extra callbacks for the Trainer (progress lines).

    Returns
    -------
    dict
        ``spec``'s name, arm, seed and label, ``state`` (the run's status, or ``busy``), ``trained``
        (bool), ``message`` and ``attempt`` (where it ran: host, pid, node, threads, devices).
    """
    name, attempt = spec["name"], attempt_info(spec)
    place = RemotePlace(spec) if spec.get("records") else LocalPlace(spec)
    run = place.run
    result = {k: spec[k] for k in ("name", "arm", "seed", "label")} | {
        "attempt": attempt,
        "trained": False,
        "message": "",
    }
    try:
        lock = place.own(attempt)
    except RunBusy as exc:
        return result | {"state": "busy", "message": str(exc)}
    except ConfigError as exc:  # this node cannot reach the sweep's storage location; the driver has it as failed
        return result | {"state": "failed", "message": str(exc)}
    previous = torch.get_num_threads()
    with lock:
        status = run.read_status() if run.status_path.is_file() else None
        if not (status and status["state"] in states.DONE):
            torch.set_num_threads(int(spec.get("threads") or previous))
            attempt["torch_threads"] = torch.get_num_threads()
            record_attempt(run, attempt)
            try:
                # resume=True also starts a new run: without a last.ckpt training starts from scratch
                train(
                    RunConfig.from_dict(spec["config"]),
                    place.out,
                    name=name,
                    cache_dir=place.cache,
                    progress=False,
                    extra_callbacks=[*callbacks, *place.callbacks],
                    resume=True,
                    folder=place.folder,
                )
                result["trained"] = True
            except Exception as exc:  # recorded; the sweep goes on
                _record_run_failure(run, exc)
                return result | {"state": "failed", "message": f"{type(exc).__name__}: {exc}"}
            finally:
                torch.set_num_threads(previous)
            record_attempt(run, attempt, effective=True)
        try:  # a capture that fails leaves a finished run finished; capture/error.txt keeps it from being retried
            capture_run(run)
        except Exception as exc:  # the training outcome stands; the capture failure is kept beside it
            _record_capture_failure(run, exc)
            result["message"] = f"checkpoint capture failed ({type(exc).__name__}: {exc}); see {run.capture_error_path}"
        return result | {"state": run.read_status()["state"]}


class LocalPlace:
    """Where a run trains in today's layout: its folder in the sweep folder, owned through :class:`RunLock`.

    The other place, :class:`fnodiag.sweeps.remote.RemotePlace`, is a scratch folder whose records
    stream to the sweep driver (a spec with ``records``: a cluster worker).
    """

    def __init__(self, spec: dict):
        self.out = Path(spec["out"])
        self.run = RunDir(self.out / spec["name"])
        self.cache = self.out / "datasets"
        self.folder = RunDir
        self.callbacks = ()

    def own(self, attempt: dict) -> RunLock:
        """The run's lock (raises :class:`RunBusy` when another live process holds it)."""
        return RunLock(self.run.path).acquire(attempt)


def capture_run(run: RunDir, n_samples: int = CAPTURE_SAMPLES, batch_size: int = 8) -> None:
    """Capture the best and last checkpoints of a finished run into ``<run>/capture/{best,last}.json``.

    Through :func:`fnodiag.diagnostics.capture.capture_checkpoint` on the first ``n_samples`` test
    patches of the dataset the run trained on (:meth:`~fnodiag.runs.RunDir.dataset_cache`).
    """
    for tag, path in (("best", run.best_ckpt_path), ("last", run.last_ckpt_path)):
        if path.is_file():
            report = capture_checkpoint(
                path, max_samples=n_samples, batch_size=batch_size, cache_dir=run.dataset_cache()
            )
            write_report(report, run.capture_dir, f"{tag}.json")


def captured(run: RunDir) -> bool:
    """Both checkpoint captures of a done run exist, or failed (``capture/error.txt``), or have no checkpoint."""
    return run.capture_error_path.is_file() or all(
        run.capture_path(tag).is_file() or not path.is_file()
        for tag, path in (("best", run.best_ckpt_path), ("last", run.last_ckpt_path))
    )


# -- records --------------------------------------------------------------------------------------
def attempt_info(spec: dict) -> dict:
    """Where and how this process trains ``spec``: host, pid, Ray node id, threads, visible devices."""
    node = None
    ray = sys.modules.get("ray")  # set only inside a Ray worker; never imported here
    if ray is not None and ray.is_initialized():
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


def record_attempt(run: RunDir, attempt: dict, *, effective: bool = False) -> None:
    """Append ``attempt`` to ``<run>/execution.json``; with ``effective``, also set ``effective_config.execution``
    (after training, which rewrote that file) with the attempt number."""
    record = run.read_json(EXECUTION, default={}) or {}
    attempts = record.setdefault("attempts", [])
    if not effective:
        attempts.append({**attempt, "resumed": run.last_ckpt_path.is_file()})
        run.write_json(EXECUTION, record)
        return
    eff = run.read_json("effective_config.json", default={}) or {}
    eff["execution"] = {**attempt, "attempt": len(attempts)}
    run.write_json("effective_config.json", eff)


def read_attempts(run: RunDir) -> list[dict]:
    """Every attempt recorded in ``<run>/execution.json``, oldest first (empty when none)."""
    return (run.read_json(EXECUTION, default={}) or {}).get("attempts", [])


def mark_dead(run_path: str | Path, message: str) -> None:
    """A run whose worker died without a word: ``running`` becomes ``interrupted`` (if no one owns it now)."""
    run, lock = RunDir(run_path), RunLock(run_path)
    try:
        lock.acquire({"host": socket.gethostname(), "pid": os.getpid(), "role": "sweep driver"})
    except RunBusy:
        return
    with lock:
        status = run.read_status() if run.status_path.is_file() else None
        if status and status["state"] in states.UNFINISHED:
            run.write_status(states.INTERRUPTED, step=status["step"], epoch=status["epoch"], message=message[:500])


def _record_run_failure(run: RunDir, exc: Exception) -> None:
    """Mark a run whose training raised ``failed``, unless training already recorded its own final state."""
    if not run.path.is_dir() or isinstance(exc, TrainingError):  # train() wrote failed + traceback itself
        return
    status = (run.read_status(raw=True) or {}) if run.status_path.is_file() else {}
    if status.get("state") in states.DONE:
        return
    run.write_status(
        "failed",
        step=int(status.get("step", 0)),
        epoch=int(status.get("epoch", 0)),
        message=f"{type(exc).__name__}: {exc}"[:500],
    )


def _record_capture_failure(run: RunDir, exc: Exception) -> None:
    """Write ``<run>/capture/error.txt`` (the traceback); status.json and its training outcome are untouched."""
    run.capture_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(
        run.capture_error_path,
        f"{type(exc).__name__}: {exc}\n\n" + "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)),
    )
