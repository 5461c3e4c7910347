"""The Ray executor: each arm × seed of a sweep is one Ray task on a cluster whose nodes share the runs folder.

Ray is an optional extra (``pip install 'fnodiag[ray]'``) imported only here, only when a sweep
asks for ``--executor ray``. The driver (the ``fnodiag sweep`` process) connects to the cluster at
``address`` (``ray start --head`` printed it; default: ``RAY_ADDRESS``, else a local Ray started
for this sweep), submits one task per run with ``num_cpus`` (the run's torch threads) and
``num_gpus`` (a fraction shares a device), and records each result as it arrives. Like the local
executor it is given the task it runs (the runner's :func:`fnodiag.sweeps.task.run_one`); each Ray
task imports it by name (:func:`fnodiag.sweeps.executors.load_task`). A task whose worker process or
node died is retried by Ray up to ``max_retries`` times; the retry runs the same task, which resumes
the run from its ``last.ckpt`` (and never trains a finished run again). Python exceptions are not
retried: ``run_one`` records them as a failed run. A run whose retries are used up is reported as
``state="died"``; the driver marks it.

Every node must see the sweep folder at the same path (a shared filesystem: NFS, Lustre, GPFS,
BeeGFS, as on lab clusters) and have fnodiag installed in the same environment.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from fnodiag.config import ConfigError
from fnodiag.sweeps.executors import Resources, Task, died, epoch_lines, load_task, quiet_lightning, task_path

INSTALL_HINT = "pip install 'fnodiag[ray]'"


def import_ray():
    """The ``ray`` module, or a one-line :class:`ConfigError` telling how to install it."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no usage report from a sweep
    try:
        import ray  # an optional extra: imported only when a sweep asks for --executor ray
    except ImportError:
        raise ConfigError(f"--executor ray needs Ray, which is not installed here: {INSTALL_HINT}") from None
    return ray


def ray_task(task: str, spec: dict) -> dict:
    """The Ray task: the task named ``task`` (:func:`~fnodiag.sweeps.executors.task_path`) run on ``spec``, with a
    progress line per epoch (forwarded to the driver)."""
    quiet_lightning()
    printer = lambda line: print(line, flush=True)
    return load_task(task)(spec, callbacks=[epoch_lines(spec["label"], spec["config"]["train"]["epochs"], printer)])


def connect(ray, address: str | None, cores: int) -> bool:
    """Connect to the cluster at ``address`` (or start a local Ray); True when this call connected."""
    if ray.is_initialized():
        return False
    kwargs = {"address": address} if address else {"include_dashboard": False, "num_cpus": cores}
    try:
        ray.init(**kwargs, logging_level="WARNING", log_to_driver=True)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(
            f"cannot reach the Ray cluster at {address!r} ({first[:200]}); start one with "
            "`ray start --head` and pass the address it prints, or drop --address"
        ) from None
    return True


def run_ray(
    task: Task, specs: list[dict], res: Resources, *, echo: Callable[[str], None], on_result: Callable[[dict], None]
) -> None:
    """Submit ``task`` on each of ``specs`` as Ray tasks with ``res``'s resources; ``on_result`` as each one ends.

    Parameters
    ----------
    task : callable
        ``task(spec, *, callbacks=()) -> result dict``, a module-level function (imported by name on the nodes).
    specs : list of dict
        One per run (see :func:`fnodiag.sweeps.task.run_one`).
    res : fnodiag.sweeps.executors.Resources
        ``threads`` becomes ``num_cpus``, ``gpus_per_run`` ``num_gpus``, ``max_retries`` Ray's.
    """
    path = task_path(task)
    ray = import_ray()
    if not specs:
        return
    connected = connect(ray, res.address, res.cores)
    refs: dict = {}
    try:
        remote = ray.remote(ray_task)
        refs = {
            remote.options(
                name=f"fnodiag {s['name']}",
                num_cpus=res.threads,
                num_gpus=res.gpus_per_run,
                max_retries=res.max_retries,
                retry_exceptions=False,
            ).remote(path, s): s
            for s in specs
        }
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        cpus = sum(n.get("Resources", {}).get("CPU", 0) for n in nodes)
        echo(
            f"submitted {len(refs)} runs to Ray ({res.address or 'local'}: {len(nodes)} nodes, {cpus:g} CPUs; "
            f"{res.threads} CPU, {res.gpus_per_run:g} GPU per run; up to {res.max_retries} retries)"
        )
        while refs:
            done, _ = ray.wait(list(refs), num_returns=1)
            spec = refs.pop(done[0])
            try:
                result = ray.get(done[0])
            except ray.exceptions.RayError as exc:  # retries used up, or the task could not run
                result = died(spec, f"Ray task failed: {type(exc).__name__}: {str(exc).splitlines()[0][:300]}")
            on_result(result)
    except KeyboardInterrupt:
        for ref in refs:  # a KeyboardInterrupt in each task: its run records `interrupted`
            ray.cancel(ref)
        raise
    finally:
        if connected:
            ray.shutdown()
