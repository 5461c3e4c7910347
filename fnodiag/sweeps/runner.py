"""The sweep runner: run (or resume) the selected arms × seeds of a definition, then summarize.

A sweep folder holds ``sweep.json`` (:mod:`fnodiag.sweeps.manifest`), one run directory
``<arm>-s<seed>`` per arm × seed, the dataset cache ``datasets/<key>`` (one dataset per distinct
data setting: the arms share one unless the definition declares data arms, :mod:`fnodiag.sweeps.data`),
each run's checkpoint captures ``<run>/capture/{best,last}.json`` (or ``capture/error.txt`` when the capture failed; the
run's training outcome in ``status.json`` is never changed by it) and the summary. The folder holds
the run stores, so it must be on a disk local to this process (never a network filesystem,
:mod:`fnodiag.runs.filesystems`); under ``--executor ray`` the workers stream their records to this
process and put their files in the storage location (:mod:`fnodiag.sweeps.remote`).

:func:`run_sweep` checks every setting before anything is written, records the definition and the
placement in ``sweep.json``, simulates each distinct dataset once, and hands the runs still to do to an
executor (:data:`EXECUTORS`) together with the task they run, :func:`fnodiag.sweeps.task.run_one`.
As each run ends the driver (this process, the only writer of ``sweep.json`` and the summary)
records its result, marks a run whose worker died ``interrupted`` and rewrites the summary.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from fnodiag.config import ConfigError
from fnodiag.ptycho.simulate import dataset_key, load_or_simulate
from fnodiag.runs import RunDir, ensure_writable_dir, states
from fnodiag.runs.filesystems import check_store_folder
from fnodiag.sweeps import manifest
from fnodiag.sweeps.definition import SweepDefinition, run_name, select
from fnodiag.sweeps.executors import Resources, Task, run_local
from fnodiag.sweeps.ray import run_ray
from fnodiag.sweeps.remote import collect, prepare
from fnodiag.sweeps.summary import write_summary
from fnodiag.sweeps.task import captured, mark_dead, read_attempts, run_one

EXECUTORS: dict[str, Callable] = {"local": run_local, "ray": run_ray}  # (task, specs, resources, *, echo, on_result)
DRIVER_OWNED = ("ray",)  # executors whose workers stream records to the driver (fnodiag.sweeps.remote)


def run_sweep(
    defn: SweepDefinition,
    out: str | Path,
    *,
    arms: list[str] | None = None,
    seeds: list[int] | None = None,
    overrides: dict[str, Any] | None = None,
    echo: Callable[[str], None] = print,
    executor: str = "local",
    jobs: int = 1,
    cpus_per_run: int | None = None,
    gpus_per_run: float = 0.0,
    address: str | None = None,
    storage: str | None = None,
    task: Task = run_one,
) -> Path:
    """Run (or resume) every selected arm × seed of ``defn`` into ``out``, then summarize.

    Finished and diverged runs are skipped; an interrupted or failed run with a checkpoint
    continues from it; a run that fails is recorded and the sweep goes on. Each distinct data
    setting is simulated once into ``<out>/datasets/<key>``; an arm may train on other data than the
    definition's data reference arm only if the definition declares it (``data_arms``). Each finished
    run's best and last checkpoints are captured. ``summary.md`` / ``summary.json`` are rewritten after every run.

    Parameters
    ----------
    executor : str
        A key of :data:`EXECUTORS`: ``"local"`` (this machine) or ``"ray"``.
    jobs : int
        Local executor: runs trained at a time, each in its own process (1: in this process).
    cpus_per_run, gpus_per_run : int or None, float
        Resources of one run (CPU threads; a GPU fraction such as 0.25, or whole GPUs).
    address : str, optional
        Ray executor: the cluster to submit to (default: start a local one).
    storage : str, optional
        Ray executor: the storage location of the files that travel between nodes (checkpoints,
        ``model.pt``, captures, datasets): a folder every node sees, or an fsspec URL (default: the
        sweep folder itself, which then must be shared). The run stores stay in ``out``, on the
        driver's disk, written by the driver (:mod:`fnodiag.sweeps.remote`).
    task : callable
        What each run executes, handed to the executor: ``task(spec, *, callbacks=()) -> result dict``
        (default :func:`fnodiag.sweeps.task.run_one`; a module-level function when runs train in
        worker processes, which import it by name).
    """
    overrides = dict(overrides or {})
    pairs = select(defn, arms, seeds)
    configs = {p: defn.config(*p, overrides) for p in pairs}  # every setting validated before anything is written
    data_arms = defn.data_arms_changes(overrides, seed=pairs[0][1])  # an arm on other data must be declared
    for (arm, seed), cfg in configs.items():
        existing = RunDir(Path(out) / run_name(arm, seed))
        if existing.config_path.is_file() and existing.read_config() != cfg:
            raise ConfigError(
                f"run {str(existing.path)!r} was started with other settings; resume it with the same "
                "definition and overrides, or choose another --out"
            )
    if executor not in EXECUTORS:
        raise ConfigError(f"unknown executor {executor!r}; choose one of {', '.join(EXECUTORS)}")
    resources = Resources.plan(
        executor,
        jobs=jobs,
        cpus_per_run=cpus_per_run,
        gpus_per_run=gpus_per_run,
        address=address,
        n_runs=len(pairs),
        storage=storage,
    )
    check_store_folder(out, "--out folder")  # the run stores live there: never on a network filesystem
    out = ensure_writable_dir(out, "--out folder")
    _note_cpu(defn, configs.values(), echo)
    manifest.write_spec(out, defn, pairs, overrides)
    manifest.record_execution(out, resources.record())
    _simulate_datasets(configs, out / "datasets", data_arms, echo)
    remote = executor in DRIVER_OWNED
    placed = prepare(out, resources.storage, [dataset_key(c.data) for c in configs.values()]) if remote else {}
    specs = []
    for i, (arm, seed) in enumerate(pairs, 1):
        cfg, name = configs[(arm, seed)], run_name(arm, seed)
        run = RunDir(out / name)
        status = run.read_status() if run.status_path.is_file() else None
        if status and status["state"] in states.DONE and captured(run):
            echo(f"[{i}/{len(pairs)}] {name}: {status['state']}, skipped")
            continue
        specs.append(
            {
                "out": str(out),
                "name": name,
                "arm": arm,
                "seed": seed,
                "label": f"[{i}/{len(pairs)}] {arm} seed {seed}",
                "config": cfg.to_dict(),
                **resources.task_fields(),
                **placed,
            }
        )

    def finished(result: dict) -> None:  # the driver is the only writer of sweep.json and the summary
        run = RunDir(out / result["name"])
        if result["state"] == "died":  # the worker ended without a word: its run cannot say so itself
            mark_dead(run.path, result["message"])
        if remote:  # the run's files from the storage location, its collapse report from the driver's store
            collect(out, result["name"], placed["storage"])
        manifest.record_result(out, result, read_attempts(run))
        if result["state"] not in states.DONE or result.get("message"):
            echo(f"{result['label']} {result['state']}: {result.get('message', '')}".rstrip(": "))
        write_summary(out)

    try:
        EXECUTORS[executor](task, specs, resources, echo=echo, on_result=finished)
    except (KeyboardInterrupt, SystemExit):
        echo("sweep stopped; run the same command again to resume")
        write_summary(out)
        raise
    write_summary(out)
    return out


def _simulate_datasets(configs: dict, cache: Path, data_arms: dict, echo) -> None:
    """Each distinct data setting of ``configs`` simulated (or found in ``cache``) once, before any run trains.

    Every run then finds its own dataset at ``<cache>/<dataset_key(its data)>``: training loads it
    from there and records the key in ``effective_config.json`` ``data.key``.
    """
    arms: dict[str, list[str]] = {}  # dataset key -> the arms training on it
    data = {}
    for (arm, _), cfg in configs.items():
        key = dataset_key(cfg.data)
        data.setdefault(key, cfg.data)
        on = arms.setdefault(key, [])
        if arm not in on:
            on.append(arm)
    for key, on in arms.items():
        if len(arms) > 1:
            fields = sorted({c["field"] for a in on for c in data_arms.get(a, [])})
            echo(f"dataset {key}: {', '.join(on)}" + (f" (data arm: {', '.join(fields)})" if fields else ""))
        load_or_simulate(data[key], cache)


def _note_cpu(defn: SweepDefinition, configs, echo) -> None:
    configs = list(configs)
    if not torch.cuda.is_available() and any(c.data.N >= 64 for c in configs):
        echo(
            f"note: no GPU found; sweep {defn.name!r} trains N={max(c.data.N for c in configs)} generators "
            "on the CPU, which takes hours. `fnodiag sweep quick` runs the same arms in about ten minutes."
        )
