"""What a runs folder holds, read through :mod:`fnodiag.runs` only: sweeps, arms, seeds, checkpoints, summaries.

A sweep folder holds ``sweep.json`` (``{"name", "definition", "seeds", "arms", "runs": {"<arm>-s<seed>":
{"arm", "seed", "path"}}}``) and one run directory per arm x seed. Run directories found under the
root but in no sweep form the pseudo-sweep :data:`SINGLE` with arm = the run folder's path relative
to the root. Every path handed out is resolved and checked to lie inside the root
(:func:`inside`), so a crafted ``sweep.json`` cannot point the dashboard at other files.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from fnodiag.analysis.audit import audit_run
from fnodiag.analysis.outcome import STOPPED, read_outcome
from fnodiag.diagnostics.selection import best_epochs
from fnodiag.runs import RunDir, list_runs, states
from fnodiag.runs.progress import duration, read_progress
from fnodiag.sweeps.manifest import read_manifest, sweep_folders
from fnodiag.training.optimizers import hyperparameter_text  # the optimizer registry (torch, never Lightning)

SINGLE = "(single runs)"
CHECKPOINTS = ("best", "last")


def inside(root: str | Path, path: str | Path) -> Path:
    """``path`` resolved (relative paths against ``root``); raises ValueError when it leaves ``root``.

    Parameters
    ----------
    root : the runs folder
    path : a path from a record or the user

    Returns
    -------
    Path, absolute and resolved (symbolic links followed).
    """
    root = Path(root).resolve()
    p = Path(path)
    resolved = (p if p.is_absolute() else root / p).resolve()
    if resolved != root and root not in resolved.parents:
        raise ValueError(
            f"{str(path)!r} is outside the runs folder {str(root)!r}; the dashboard only opens runs inside it"
        )
    return resolved


@dataclass(frozen=True)
class RunEntry:
    """One arm x seed of a sweep: ``run`` may not exist yet (a pending sweep run)."""

    sweep: str
    arm: str
    seed: int | None
    run: RunDir

    @property
    def label(self) -> str:
        """``arm`` or ``arm s<seed>``: the name plots and tables use."""
        return self.arm if self.seed is None or self.sweep == SINGLE else f"{self.arm} s{self.seed}"

    @property
    def exists(self) -> bool:
        return self.run.config_path.is_file()


@dataclass
class Catalog:
    """Sweeps of a runs folder: ``{sweep name: [RunEntry]}`` in a stable order, plus skipped entries."""

    root: Path
    sweeps: dict[str, list[RunEntry]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def entries(self, sweep: str, arms=None, seeds=None) -> list[RunEntry]:
        """Entries of ``sweep`` restricted to ``arms`` / ``seeds`` when given (None = all)."""
        return [
            e
            for e in self.sweeps.get(sweep, [])
            if (arms is None or e.arm in arms) and (seeds is None or e.seed in seeds or e.seed is None)
        ]

    def arms(self, sweep: str) -> list[str]:
        return list(dict.fromkeys(e.arm for e in self.sweeps.get(sweep, [])))

    def seeds(self, sweep: str) -> list[int]:
        return sorted({e.seed for e in self.sweeps.get(sweep, []) if e.seed is not None})


def _sweep_entries(root: Path, folder: Path, problems: list[str]) -> tuple[str, list[RunEntry]] | None:
    try:
        spec = read_manifest(folder, {}) or {}
    except ValueError as exc:
        problems.append(str(exc))
        return None
    name = str(spec.get("name") or folder.name)
    entries = []
    for key, r in sorted((spec.get("runs") or {}).items()):
        try:
            path = inside(root, folder / str(r.get("path", key)))
        except ValueError as exc:
            problems.append(f"sweep {name!r} run {key!r}: {exc}")
            continue
        seed = r.get("seed")
        entries.append(RunEntry(name, str(r.get("arm", key)), int(seed) if seed is not None else None, RunDir(path)))
    return name, entries


def scan(root: str | Path) -> Catalog:
    """Build the :class:`Catalog` of ``root`` (an empty one when the folder does not exist)."""
    root = Path(root).resolve()
    cat = Catalog(root)
    if not root.is_dir():
        return cat
    claimed: set[Path] = set()
    for folder in sweep_folders(root):
        found = _sweep_entries(root, folder, cat.problems)
        if found is None:
            continue
        name, entries = found
        if name in cat.sweeps:
            name = str(folder.relative_to(root))
        cat.sweeps[name] = [RunEntry(name, e.arm, e.seed, e.run) for e in entries]
        claimed.add(folder)
    singles = []
    for run in list_runs(root):
        path = run.path.resolve()
        if any(f == path or f in path.parents for f in claimed):
            continue
        try:
            seed = _seed(run)
        except (ValueError, TypeError, KeyError, FileNotFoundError) as exc:
            cat.problems.append(f"{path}: {exc}")
            seed = None
        singles.append(RunEntry(SINGLE, str(path.relative_to(root)), seed, RunDir(path)))
    if singles:
        cat.sweeps[SINGLE] = singles
    return cat


def _seed(run: RunDir) -> int | None:
    """The run's seed: from its RunConfig, or (someone else's model: no RunConfig) its effective seed."""
    if run.is_foreign():
        seed = (run.read_json("effective_config.json", {}) or {}).get("seed")
        return int(seed) if isinstance(seed, int) and seed >= 0 else None
    return run.read_config().train.seed


def checkpoints(entry: RunEntry) -> list[str]:
    """Checkpoint names of a run (``best``, ``last``, then other saved ``*.ckpt`` by name)."""
    folder = entry.run.checkpoints_dir
    found = sorted(p.stem for p in folder.glob("*.ckpt")) if folder.is_dir() else []
    return [c for c in CHECKPOINTS if c in found] + [c for c in found if c not in CHECKPOINTS]


def checkpoint_path(root: str | Path, entry: RunEntry, name: str) -> Path:
    """The file of checkpoint ``name`` of ``entry``, validated to lie inside ``root``."""
    if name not in checkpoints(entry):
        raise ValueError(
            f"run {entry.label!r} has no checkpoint {name!r}; choose one of "
            f"{', '.join(checkpoints(entry)) or '(none saved yet)'}"
        )
    return inside(root, entry.run.checkpoints_dir / f"{name}.ckpt")


def _finite(x) -> float | None:
    try:
        x = float(x)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def optimizer_label(effective: dict, config) -> tuple[str, float | None]:
    """The overview's optimizer label and base lr from effective_config.json (config as fallback),
    e.g. ``("AdamW betas=(0.9, 0.999) eps=1e-08 weight_decay=0.01 clip norm 1.0", lr)``; the
    hyperparameters are those the optimizer's registry entry sets
    (:func:`fnodiag.training.optimizers.hyperparameter_text`)."""
    opt = effective.get("optimizer") or {}
    groups = opt.get("param_groups") or [{}]
    g = groups[0]
    if opt.get("class"):
        parts = [str(opt["class"])]
        hyper = hyperparameter_text(opt["class"], g)
        parts += [hyper] if hyper else []
        lr = _finite(g.get("initial_lr", g.get("lr")))  # the base lr (a schedule scales it per epoch)
    elif config is not None:
        parts, lr = [config.optim.name], config.optim.lr
    else:
        return "", None
    sched = (effective.get("scheduler") or {}).get("class") or (effective.get("scheduler") or {}).get("name")
    if sched and sched != "constant":
        parts.append(str(sched))
    clip = effective.get("grad_clip") or {}
    if clip.get("algorithm") not in (None, "none"):
        parts.append(f"clip {clip['algorithm']} {clip.get('value')}")
    return " ".join(parts), lr


_AUDITS: dict[Path, tuple[tuple, list[str]]] = {}


def config_warnings(run: RunDir) -> list[str]:
    """:func:`fnodiag.analysis.audit.audit_run` of a run (asked vs recorded settings, realised LR), cached per epoch."""

    def mtime(p: Path):
        try:
            return p.stat().st_mtime_ns
        except OSError:
            return None

    key = tuple(mtime(run.path / f) for f in ("config.json", "effective_config.json", "history.json", "metrics.json"))
    cached = _AUDITS.get(run.path)
    if cached is None or cached[0] != key:
        try:
            warnings = audit_run(run)
        except (ValueError, TypeError, KeyError, OSError) as exc:  # a record being written, or unreadable
            warnings = [f"{run.path.name}: settings not checked ({type(exc).__name__}: {exc})"]
        _AUDITS[run.path] = cached = (key, warnings)
    return cached[1]


def summarize(entry: RunEntry) -> dict:
    """One overview row: state, outcome, progress, optimizer and lr, val losses, amp SSIM, collapse verdict.

    ``state`` is the run's state as read (:mod:`fnodiag.runs.states`; ``not started`` for a run listed in
    ``sweep.json`` that has no folder or status yet) and ``outcome`` its
    :func:`fnodiag.analysis.outcome.run_outcome`, both from :func:`fnodiag.analysis.outcome.read_outcome`:
    the reading the sweep summary uses, so the page and ``summary.md`` say the same.
    """
    row = {
        "arm": entry.arm,
        "seed": entry.seed,
        "label": entry.label,
        "state": states.NOT_STARTED,
        "outcome": STOPPED,
        "progress": 0.0,
    }
    run = entry.run
    if not entry.exists:
        return row
    try:
        config = run.read_config()
    except (ValueError, TypeError, KeyError):
        config = None
    outcome = read_outcome(run)
    rec = outcome["records"]
    effective, status, history = rec["effective"], rec["status"] or {}, rec["history"]
    epochs = effective.get("max_epochs") or (config.train.epochs if config else None)
    optimizer, lr = optimizer_label(effective, config)
    row.update(
        {
            "state": outcome["state"],
            "outcome": outcome["outcome"],
            "progress": round(min(1.0, (status.get("epoch") or 0) / epochs), 3) if epochs else 0.0,
            "epoch": status.get("epoch"),
            "step": status.get("step"),
            "message": status.get("message", ""),
            "optimizer": optimizer,
            "lr": lr,
            "best_val_loss": outcome["best_val_loss"],
            "final_val_loss": outcome["final_val_loss"],
            "amp_ssim_best": _finite(outcome["best_amp_ssim"]),
            "amp_ssim_last": _finite(outcome["last_amp_ssim"]),
            "fingerprint_amp_ssim": _finite(((effective.get("data") or {}).get("fingerprint") or {}).get("amp_ssim")),
            "collapse": outcome["collapse"] or "",
            "onset_step": outcome["onset_step"],
            "earliest_layer": outcome["earliest_layer"],
            "earliest_step": outcome["earliest_step"],
            **best_columns(history, effective, config.to_dict() if config else None),
            "config_warnings": config_warnings(run),
        }
    )
    row.update(progress_columns(run))
    return row


def progress_columns(run) -> dict:
    """``progress`` (step / total steps), ``time_left``, ``progress_text`` and the numbers behind them
    (:func:`fnodiag.runs.progress.read_progress`)."""
    p = read_progress(run)
    out = {f"progress_{k}": p[k] for k in ("step", "total_steps", "elapsed_s", "eta_s", "heartbeat_age_s")}
    out["progress_text"] = p["text"]
    if p["fraction"] is not None:
        out["progress"] = round(p["fraction"], 3)
    out["time_left"] = (
        (f"~{duration(p['eta_s'])}" if p["eta_s"] is not None else "measuring")
        if p["state"] == states.RUNNING
        else ("" if p["state"] != states.STOPPED else states.STOPPED)
    )
    return out


def best_columns(history: dict, effective: dict, config: dict | None = None) -> dict:
    """``best_ckpt_by``: the criterion that chose best.ckpt and its epoch (0-based), ⚑ when the loss
    carries the batch gain; ``best_ssim_epoch``: the gain-free best epoch by validation amp SSIM."""
    sel = best_epochs(history, effective, config)
    by_loss, by_ssim = sel["by_loss"], sel["by_ssim"]
    crit = sel["criterion"].replace("_", " ")
    return {
        "best_ckpt_by": f"{crit}, ep {by_loss['epoch']}" + (" ⚑ gain" if sel["gain_dependent"] else "")
        if by_loss
        else crit,
        "best_ssim_epoch": f"{by_ssim['epoch']} ({by_ssim['val_amp_ssim']:.3f})" if by_ssim else None,
    }
