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
checkpoint captures ``<run>/capture/{best,last}.json`` and the summary. This module imports no
Lightning until a sweep is run, so the dashboard can list and read definitions.
"""
from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from fnodiag.config import ConfigError, RunConfig, resolve

SHIPPED_DIR = Path(__file__).parent / "sweeps"
DONE_STATES = ("finished", "diverged")
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

    def config(self, arm: str, seed: int, overrides: dict[str, Any] | None = None) -> RunConfig:
        """preset < shared < arm < overrides < ``train.seed = seed``, through :func:`fnodiag.config.resolve`."""
        if arm not in self.arms:
            raise ConfigError(f"sweep {self.name!r} has no arm {arm!r}; arms: {', '.join(self.arms)}")
        return resolve(preset=self.preset, shared=self.shared, arm=self.arms[arm], overrides=overrides, seed=seed)

    @classmethod
    def from_dict(cls, d: dict) -> "SweepDefinition":
        """Inverse of :meth:`to_dict` (e.g. a manifest's ``spec``)."""
        return cls(name=d["name"], seeds=tuple(d["seeds"]), arms=dict(d["arms"]), shared=dict(d.get("shared") or {}),
                   preset=d.get("preset"), description=d.get("description", ""), source=d.get("source", ""))

    def to_dict(self) -> dict:
        return {"name": self.name, "description": self.description, "preset": self.preset, "seeds": list(self.seeds),
                "shared": self.shared, "arms": self.arms, "source": self.source}


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
            raise ConfigError(f"sweep definition {str(name_or_path)!r} is neither a file nor a shipped definition "
                              f"({', '.join(shipped_definitions())})")
        p = SHIPPED_DIR / f"{name_or_path}.toml"
    try:
        raw = tomllib.loads(p.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"sweep definition {str(p)!r} is not valid TOML ({exc})") from None
    unknown = set(raw) - {"name", "description", "preset", "seeds", "shared", "arms"}
    if unknown:
        raise ConfigError(f"sweep definition {str(p)!r} has unknown keys {sorted(unknown)}; "
                          "valid: name, description, preset, seeds, shared, arms")
    if not raw.get("arms") or not raw.get("seeds"):
        raise ConfigError(f"sweep definition {str(p)!r} needs a non-empty 'seeds' list and at least one [arms.NAME] table")
    defn = SweepDefinition(name=str(raw.get("name", p.stem)), seeds=tuple(int(s) for s in raw["seeds"]),
                           arms={str(k): dict(v) for k, v in raw["arms"].items()}, shared=dict(raw.get("shared", {})),
                           preset=raw.get("preset"), description=str(raw.get("description", "")), source=str(p))
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
    from fnodiag.runs import atomic_write_text

    path = out / "sweep.json"
    manifest = json.loads(path.read_text()) if path.is_file() else {}
    if manifest and manifest.get("name") != defn.name:
        raise ConfigError(f"{str(out)!r} holds sweep {manifest.get('name')!r}, not {defn.name!r}; choose another --out")
    runs = manifest.get("runs", {})
    runs.update({run_name(a, s): {"arm": a, "seed": s, "path": run_name(a, s)} for a, s in pairs})
    before = manifest.get("arms", {})
    chosen = {a for a, _ in pairs}  # arms run now record this invocation's flags; the others keep theirs
    arm_entries = {a: ({"overrides": {**defn.shared, **defn.arms[a], **overrides}, "flags": dict(overrides)}
                       if a in chosen or a not in before else before[a])
                   for a in dict.fromkeys(r["arm"] for r in runs.values())}
    manifest.update({"name": defn.name, "definition": defn.source, "seeds": sorted({r["seed"] for r in runs.values()}),
                     "arms": arm_entries,
                     "runs": runs, "spec": defn.to_dict()})
    atomic_write_text(path, json.dumps(manifest, indent=2) + "\n")  # keeps the arms in definition order


def run_sweep(defn: SweepDefinition, out: str | Path, *, arms: list[str] | None = None, seeds: list[int] | None = None,
              overrides: dict[str, Any] | None = None, echo: Callable[[str], None] = print) -> Path:
    """Run (or resume) every selected arm × seed of ``defn`` into ``out``, then summarize.

    Finished and diverged runs are skipped; an interrupted or failed run with a checkpoint
    continues from it; a run that fails is recorded and the sweep goes on. All runs share one
    dataset (an error if the arms' data settings differ). Each finished run's best and last
    checkpoints are captured. ``summary.md`` / ``summary.json`` are rewritten after every run.
    """
    import torch

    from fnodiag.runs import RunDir, ensure_writable_dir
    from fnodiag.simulate import dataset_key, load_or_simulate
    from fnodiag.summary import write_summary
    from fnodiag.training.callbacks import SweepProgress
    from fnodiag.training.run import train

    overrides = dict(overrides or {})
    pairs = select(defn, arms, seeds)
    configs = {p: defn.config(*p, overrides) for p in pairs}  # every setting validated before anything is written
    keys = {dataset_key(c.data) for c in configs.values()}
    if len(keys) > 1:
        raise ConfigError(f"the arms of sweep {defn.name!r} use different data settings ({len(keys)} datasets); "
                          "arms must share one dataset: move data.* settings to [shared]")
    for (arm, seed), cfg in configs.items():
        existing = RunDir(Path(out) / run_name(arm, seed))
        if existing.config_path.is_file() and existing.read_config() != cfg:
            raise ConfigError(f"run {str(existing.path)!r} was started with other settings; resume it with the same "
                              "definition and overrides, or choose another --out")
    out = ensure_writable_dir(out, "--out folder")
    if not torch.cuda.is_available() and any(c.data.N >= 64 for c in configs.values()):
        echo(f"note: no GPU found; sweep {defn.name!r} trains N={max(c.data.N for c in configs.values())} generators "
             "on the CPU, which takes hours. `fnodiag sweep quick` runs the same arms in about ten minutes.")
    _write_manifest(out, defn, pairs, overrides)
    load_or_simulate(next(iter(configs.values())).data, out / "datasets")  # one shared dataset, simulated once
    progress = SweepProgress(total_epochs=sum(c.train.epochs for c in configs.values()), echo=echo)
    for i, (arm, seed) in enumerate(pairs, 1):
        cfg, name = configs[(arm, seed)], run_name(arm, seed)
        run = RunDir(out / name)
        status = run.read_status() if run.status_path.is_file() else None
        if status and status["state"] in DONE_STATES:
            echo(f"[{i}/{len(pairs)}] {name}: {status['state']}, skipped")
            progress.skip(cfg.train.epochs)
            continue
        progress.start(f"[{i}/{len(pairs)}] {arm} seed {seed}", cfg.train.epochs)
        try:
            train(cfg, out, name=name, cache_dir=out / "datasets", progress=False,
                  extra_callbacks=[progress], resume=run.config_path.is_file())
            capture_run(run)
        except (KeyboardInterrupt, SystemExit):
            echo(f"sweep stopped during {name}; run the same command again to resume")
            write_summary(out)
            raise
        except Exception as exc:  # recorded; the sweep goes on
            if run.path.is_dir():
                step = (run.read_status() or {}).get("step", 0) if run.status_path.is_file() else 0
                run.write_status("failed", step=step, epoch=0, message=f"{type(exc).__name__}: {exc}"[:500])
            echo(f"[{i}/{len(pairs)}] {name} failed: {type(exc).__name__}: {exc}")
        write_summary(out)
    return out


def capture_run(run, n_samples: int = CAPTURE_SAMPLES, batch_size: int = 8) -> None:
    """Capture the best and last checkpoints of a finished run into ``<run>/capture/{best,last}.json``."""
    from fnodiag.diagnostics.capture import capture, load_generator, summary, write_report
    from fnodiag.simulate import load_or_simulate

    cfg = run.read_config()
    data = load_or_simulate(cfg.data, run.path.parent / "datasets")
    x = data.test.diffraction[:n_samples, None]
    for tag, path in (("best", run.best_ckpt_path), ("last", run.last_ckpt_path)):
        if path.is_file():
            generator, cfg, info = load_generator(path)
            report = capture(generator, x, batch_size=batch_size)
            info["input"] = f"dataset {data.key} (test split)"
            write_report({"summary": summary(generator, cfg, info, x, batch_size, "cpu"), **report},
                         run.path / "capture", f"{tag}.json")
