"""The Ray executor: each arm × seed of a sweep is one Ray task; the driver owns every run store.

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

Records: SQLite's WAL cannot be shared between hosts, so no worker opens a run store. A
:class:`~fnodiag.runs.remote.RecordReceiver` actor pinned to the driver's node
(``NodeAffinitySchedulingStrategy``, no CPU) writes every run's records into the sweep folder on the
driver's disk; each task reaches it by name (:func:`actor_transport`, given in the spec's
``records``) and streams its records there (:mod:`fnodiag.runs.remote`), while its files go through
the storage location (:mod:`fnodiag.sweeps.remote`). As each task ends the actor gives the run up.
Every node needs fnodiag installed in the same environment; only the storage location (``--storage``,
by default the sweep folder) must be reachable from every node.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable

from fnodiag.config import ConfigError
from fnodiag.runs.remote import RecordReceiver
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


class _ActorTransport:
    """A :class:`~fnodiag.runs.remote.Transport` to the driver's receiver actor: calls are actor tasks (in order)."""

    def __init__(self, ray, actor):
        self.ray, self.actor = ray, actor

    def submit(self, method: str, *args):
        return getattr(self.actor, method).remote(*args)

    def wait(self, handle):
        return self.ray.get(handle)


def actor_transport(records: dict) -> _ActorTransport:
    """The transport a task's records take: the receiver actor named in the spec's ``records``."""
    ray = import_ray()
    return _ActorTransport(ray, ray.get_actor(records["actor"], namespace=records["namespace"]))


def start_receiver(ray, out: str):
    """The :class:`~fnodiag.runs.remote.RecordReceiver` actor of sweep folder ``out``, on this (the driver's) node.

    Returns ``(actor, records)``: the handle, and the spec field a task finds it by.
    """
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy  # Ray is optional: imported here

    context = ray.get_runtime_context()
    name = f"fnodiag-records-{secrets.token_hex(6)}"
    actor = (
        ray.remote(RecordReceiver)
        .options(
            name=name,
            num_cpus=0,
            max_concurrency=1,  # one batch at a time, in the order each worker sent them
            scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=context.get_node_id(), soft=False),
        )
        .remote(out)
    )
    return actor, {"transport": task_path(actor_transport), "actor": name, "namespace": context.namespace}


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
    receiver = None
    try:
        receiver, records = start_receiver(ray, specs[0]["out"])
        specs = [{**s, "records": records} for s in specs]
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
            ray.get(receiver.release.remote(spec["name"]))  # the driver owns the run again
            on_result(result)
    except KeyboardInterrupt:
        for ref in refs:  # a KeyboardInterrupt in each task: its run records `interrupted`
            ray.cancel(ref)
        raise
    finally:
        if receiver is not None:
            try:
                ray.get(receiver.close.remote(), timeout=30)
            except Exception:  # the actor died with the cluster: the kernel freed its locks
                pass
            ray.kill(receiver)
        if connected:
            ray.shutdown()
