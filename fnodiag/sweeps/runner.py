"""Sweeps: definitions (TOML: shared settings plus arms, over seeds) and the resumable runner.

A definition is a TOML file::

    name = "stage-a"
    preset = "stage-a"                 # optional base preset
    seeds = [20260128, 20260129]
    [shared]                           # "section.field" overrides for every arm
    "clip.algorithm" = "none"
    [arms.stable_sgd]                  # one table of overrides per arm
    "model.arch" = "stable_hybrid"
    "optim.name" = "sgd"

A sweep folder holds ``sweep.json`` (the definition as ``spec``, per arm the merged settings as
``overrides`` and the command-line flags it last ran with as ``flags``, and the runs), one run
directory ``<arm>-s<seed>`` per arm × seed, the shared dataset cache ``datasets/``, each run's
checkpoint captures ``<run>/capture/{best,last}.json`` (or ``capture/error.txt`` when the capture failed;
the run's training outcome in ``status.json`` is never changed by it) and the summary. This module imports no
Lightning until a sweep is run, so the dashboard can list and read definitions.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fnodiag.config import ConfigError, RunConfig, resolve
from fnodiag.files import write_json
from fnodiag.runs import states

SHIPPED_DIR = Path(__file__).parent / "definitions"
CAPTURE_SAMPLES = 16


@dataclass(frozen=True)
class SweepDefinition:
    """A parsed sweep definition; :meth:`config` gives the RunConfig of one arm and seed."""

    name: str
    seeds: tuple[int, ...]
    arms: dict[str, dict[str, Any]]
    shared: dict[str, Any] = field(default_factory=dict)
    preset: str | None = None
    description: str = ""
    source: str = ""
    control: str | None = None  # the arm that must learn for the sweep's verdict to answer anything
    baseline: str | None = None  # the arm the others are compared to, one changed condition at a time

    def config(self, arm: str, seed: int, overrides: dict[str, Any] | None = None) -> RunConfig:
        """preset < shared < arm < overrides < ``train.seed = seed``, through :func:`fnodiag.config.resolve`."""
        if arm not in self.arms:
            raise ConfigError(f"sweep {self.name!r} has no arm {arm!r}; arms: {', '.join(self.arms)}")
        from fnodiag.training.registries import check_names  # torch, never Lightning

        return check_names(
            resolve(preset=self.preset, shared=self.shared, arm=self.arms[arm], overrides=overrides, seed=seed)
        )

    @classmethod
    def from_dict(cls, d: dict) -> SweepDefinition:
        """Inverse of :meth:`to_dict` (e.g. a manifest's ``spec``)."""
        return cls(
            name=d["name"],
            seeds=tuple(d["seeds"]),
            arms=dict(d["arms"]),
            shared=dict(d.get("shared") or {}),
            preset=d.get("preset"),
            description=d.get("description", ""),
            source=d.get("source", ""),
            control=d.get("control"),
            baseline=d.get("baseline"),
        )

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "description": self.description,
            "preset": self.preset,
            "seeds": list(self.seeds),
            "shared": self.shared,
            "arms": self.arms,
            "source": self.source,
            "control": self.control,
            "baseline": self.baseline,
        }


def shipped_definitions() -> list[str]:
    """Names of the definitions that ship with fnodiag."""
    return sorted(p.stem for p in SHIPPED_DIR.glob("*.toml"))


def load_definition(name_or_path: str | Path) -> SweepDefinition:
    """A shipped definition by name, or a TOML file by path; every arm is validated.

    Raises
    ------
    ConfigError
        Unknown name (lists the shipped ones), unreadable TOML, missing keys or a bad setting.
    """
    p = Path(name_or_path)
    if not p.is_file():
        if str(name_or_path) not in shipped_definitions():
            raise ConfigError(
                f"sweep definition {str(name_or_path)!r} is neither a file nor a shipped definition "
                f"({', '.join(shipped_definitions())})"
            )
        p = SHIPPED_DIR / f"{name_or_path}.toml"
    try:
        raw = tomllib.loads(p.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"sweep definition {str(p)!r} is not valid TOML ({exc})") from None
    keys = ("name", "description", "preset", "seeds", "shared", "arms", "control", "baseline")
    unknown = set(raw) - set(keys)
    if unknown:
        raise ConfigError(f"sweep definition {str(p)!r} has unknown keys {sorted(unknown)}; valid: {', '.join(keys)}")
    if not raw.get("arms") or not raw.get("seeds"):
        raise ConfigError(
            f"sweep definition {str(p)!r} needs a non-empty 'seeds' list and at least one [arms.NAME] table"
        )
    defn = SweepDefinition(
        name=str(raw.get("name", p.stem)),
        seeds=tuple(int(s) for s in raw["seeds"]),
        arms={str(k): dict(v) for k, v in raw["arms"].items()},
        shared=dict(raw.get("shared", {})),
        preset=raw.get("preset"),
        description=str(raw.get("description", "")),
        source=str(p),
        control=raw.get("control"),
        baseline=raw.get("baseline"),
    )
    for role in ("control", "baseline"):
        named = getattr(defn, role)
        if named is not None and named not in defn.arms:
            raise ConfigError(
                f"sweep definition {str(p)!r}: {role} = {named!r} is not one of its arms "
                f"({', '.join(defn.arms)}); name an [arms.NAME] table"
            )
    for arm in defn.arms:
        defn.config(arm, defn.seeds[0])
    return defn


def run_name(arm: str, seed: int) -> str:
    """Run directory name of one arm and seed."""
    return f"{arm}-s{seed}"


def select(defn: SweepDefinition, arms: list[str] | None, seeds: list[int] | None) -> list[tuple[str, int]]:
    """The (arm, seed) pairs to run, in definition order; unknown arms are an error."""
    arms = list(arms or defn.arms)
    bad = [a for a in arms if a not in defn.arms]
    if bad:
        raise ConfigError(f"unknown arm(s) {', '.join(bad)} for sweep {defn.name!r}; arms: {', '.join(defn.arms)}")
    return [(a, int(s)) for a in arms for s in (seeds or defn.seeds)]


def _write_manifest(out: Path, defn: SweepDefinition, pairs, overrides: dict) -> None:
    path = out / "sweep.json"
    manifest = json.loads(path.read_text()) if path.is_file() else {}
    if manifest and manifest.get("name") != defn.name:
        raise ConfigError(f"{str(out)!r} holds sweep {manifest.get('name')!r}, not {defn.name!r}; choose another --out")
    runs = manifest.get("runs", {})
    runs.update(
        {
            run_name(a, s): {**runs.get(run_name(a, s), {}), "arm": a, "seed": s, "path": run_name(a, s)}
            for a, s in pairs
        }
    )  # keeps where earlier sweep commands trained each run
    before = manifest.get("arms", {})
    chosen = {a for a, _ in pairs}  # arms run now record this invocation's flags; the others keep theirs
    arm_entries = {
        a: (
            {"overrides": {**defn.shared, **defn.arms[a], **overrides}, "flags": dict(overrides)}
            if a in chosen or a not in before
            else before[a]
        )
        for a in dict.fromkeys(r["arm"] for r in runs.values())
    }
    manifest.update(
        {
            "name": defn.name,
            "definition": defn.source,
            "control": defn.control,
            "baseline": defn.baseline,
            "seeds": sorted({r["seed"] for r in runs.values()}),
            "arms": arm_entries,
            "runs": runs,
            "spec": defn.to_dict(),
        }
    )
    write_json(path, manifest, sort_keys=False)  # keeps the arms in definition order


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
) -> Path:
    """Run (or resume) every selected arm × seed of ``defn`` into ``out``, then summarize.

    Finished and diverged runs are skipped; an interrupted or failed run with a checkpoint
    continues from it; a run that fails is recorded and the sweep goes on. All runs share one
    dataset (an error if the arms' data settings differ). Each finished run's best and last
    checkpoints are captured. ``summary.md`` / ``summary.json`` are rewritten after every run.

    Parameters
    ----------
    executor : str
        A key of :data:`fnodiag.sweeps.executors.EXECUTORS`: ``"local"`` (this machine) or ``"ray"``.
    jobs : int
        Local executor: runs trained at a time, each in its own process (1: in this process).
    cpus_per_run, gpus_per_run : int or None, float
        Resources of one run (CPU threads; a GPU fraction such as 0.25, or whole GPUs).
    address : str, optional
        Ray executor: the cluster to submit to (default: start a local one).
    """
    from fnodiag.ptycho.simulate import dataset_key, load_or_simulate
    from fnodiag.runs import RunDir, ensure_writable_dir
    from fnodiag.sweeps.executors import EXECUTORS, Resources, record_execution, record_result
    from fnodiag.sweeps.summary import write_summary

    overrides = dict(overrides or {})
    pairs = select(defn, arms, seeds)
    configs = {p: defn.config(*p, overrides) for p in pairs}  # every setting validated before anything is written
    keys = {dataset_key(c.data) for c in configs.values()}
    if len(keys) > 1:
        raise ConfigError(
            f"the arms of sweep {defn.name!r} use different data settings ({len(keys)} datasets); "
            "arms must share one dataset: move data.* settings to [shared]"
        )
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
        executor, jobs=jobs, cpus_per_run=cpus_per_run, gpus_per_run=gpus_per_run, address=address, n_runs=len(pairs)
    )
    out = ensure_writable_dir(out, "--out folder")
    _note_cpu(defn, configs.values(), echo)
    _write_manifest(out, defn, pairs, overrides)
    record_execution(out, resources)
    load_or_simulate(next(iter(configs.values())).data, out / "datasets")  # one shared dataset, simulated once
    specs = []
    for i, (arm, seed) in enumerate(pairs, 1):
        cfg, name = configs[(arm, seed)], run_name(arm, seed)
        run = RunDir(out / name)
        status = run.read_status() if run.status_path.is_file() else None
        if status and status["state"] in states.DONE and _captured(run):
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
            }
        )

    def finished(result: dict) -> None:  # the driver is the only writer of sweep.json and the summary
        record_result(out, result)
        if result["state"] not in states.DONE or result.get("message"):
            echo(f"{result['label']} {result['state']}: {result.get('message', '')}".rstrip(": "))
        write_summary(out)

    try:
        EXECUTORS[executor](specs, resources, echo=echo, on_result=finished)
    except (KeyboardInterrupt, SystemExit):
        echo("sweep stopped; run the same command again to resume")
        write_summary(out)
        raise
    write_summary(out)
    return out


def _note_cpu(defn: SweepDefinition, configs, echo) -> None:
    import torch

    configs = list(configs)
    if not torch.cuda.is_available() and any(c.data.N >= 64 for c in configs):
        echo(
            f"note: no GPU found; sweep {defn.name!r} trains N={max(c.data.N for c in configs)} generators "
            "on the CPU, which takes hours. `fnodiag sweep quick` runs the same arms in about ten minutes."
        )


def _captured(run) -> bool:
    """Both checkpoint captures of a done run exist, or failed (``capture/error.txt``), or have no checkpoint."""
    return run.capture_error_path.is_file() or all(
        run.capture_path(tag).is_file() or not path.is_file()
        for tag, path in (("best", run.best_ckpt_path), ("last", run.last_ckpt_path))
    )


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
        ``threads`` and the executor fields of :meth:`fnodiag.sweeps.executors.Resources.task_fields`.
    callbacks : sequence of lightning Callbacks
        Extra callbacks for the Trainer (progress lines).

    Returns
    -------
    dict
        ``spec``'s name, arm, seed and label, ``state`` (the run's status, or ``busy``), ``trained``
        (bool), ``message`` and ``attempt`` (where it ran: host, pid, node, threads, devices).
    """
    import torch

    from fnodiag.runs import RunDir
    from fnodiag.runs.lock import RunBusy, RunLock
    from fnodiag.sweeps.executors import attempt_info, record_attempt
    from fnodiag.training.run import train

    out, name = Path(spec["out"]), spec["name"]
    run, attempt = RunDir(out / name), attempt_info(spec)
    result = {k: spec[k] for k in ("name", "arm", "seed", "label")} | {
        "attempt": attempt,
        "trained": False,
        "message": "",
    }
    try:
        lock = RunLock(run.path).acquire(attempt)
    except RunBusy as exc:
        return result | {"state": "busy", "message": str(exc)}
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
                    out,
                    name=name,
                    cache_dir=out / "datasets",
                    progress=False,
                    extra_callbacks=list(callbacks),
                    resume=True,
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


def _record_run_failure(run, exc: Exception) -> None:
    """Mark a run whose training raised ``failed``, unless training already recorded its own final state."""
    from fnodiag.training.errors import TrainingError

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


def _record_capture_failure(run, exc: Exception) -> None:
    """Write ``<run>/capture/error.txt`` (the traceback); status.json and its training outcome are untouched."""
    import traceback

    from fnodiag.files import atomic_write_text

    run.capture_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(
        run.capture_error_path,
        f"{type(exc).__name__}: {exc}\n\n" + "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)),
    )


def capture_run(run, n_samples: int = CAPTURE_SAMPLES, batch_size: int = 8) -> None:
    """Capture the best and last checkpoints of a finished run into ``<run>/capture/{best,last}.json``."""
    from fnodiag.diagnostics.capture import capture, load_generator, summary, write_report
    from fnodiag.ptycho.simulate import load_or_simulate

    cfg = run.read_config()
    data = load_or_simulate(cfg.data, run.dataset_cache())
    x = data.test.diffraction[:n_samples, None]
    for tag, path in (("best", run.best_ckpt_path), ("last", run.last_ckpt_path)):
        if path.is_file():
            generator, cfg, info = load_generator(path)
            report = capture(generator, x, batch_size=batch_size)
            info["input"] = f"dataset {data.key} (test split)"
            write_report(
                {"summary": summary(generator, cfg, info, x, batch_size, "cpu"), **report},
                run.capture_dir,
                f"{tag}.json",
            )
