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
from functools import partial
from pathlib import Path

from fnodiag.analysis.audit import audit_run
from fnodiag.analysis.outcome import STOPPED, read_outcome
from fnodiag.dashboard.folder import FolderWalk, is_racy, stamp
from fnodiag.diagnostics.selection import best_epochs
from fnodiag.runs import RunDir, states
from fnodiag.runs.damage import DamagedRecord
from fnodiag.runs.progress import duration, read_progress, run_progress
from fnodiag.sweeps.manifest import manifest_path, read_manifest
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
    """One arm x seed of a sweep: ``run`` may not exist yet (a pending sweep run).

    ``present`` is whether the scan that listed it found the run's ``config.json`` (None: not known,
    :attr:`exists` then looks at the file).
    """

    sweep: str
    arm: str
    seed: int | None
    run: RunDir
    present: bool | None = field(default=None, compare=False)

    @property
    def label(self) -> str:
        """``arm`` or ``arm s<seed>``: the name plots and tables use."""
        return self.arm if self.seed is None or self.sweep == SINGLE else f"{self.arm} s{self.seed}"

    @property
    def exists(self) -> bool:
        return self.present if self.present is not None else self.run.config_path.is_file()


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

    def key(self) -> tuple:
        """Everything the scan found, ``(sweep, arm, seed, path, present)`` per entry: equal keys, same catalog."""
        return tuple((e.sweep, e.arm, e.seed, e.run.path, e.exists) for es in self.sweeps.values() for e in es)


def _sweep_entries(root: Path, folder: Path) -> tuple[str | None, list[RunEntry], list[str]]:
    """``(name, entries, problems)`` of the sweep folder ``folder``; name None when its manifest is unreadable."""
    problems: list[str] = []
    try:
        spec = read_manifest(folder, {}) or {}
    except ValueError as exc:
        return None, [], [str(exc)]
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
    return name, entries, problems


def _memo(memo: dict, key, sig, compute):
    """``compute()``, or its value kept in ``memo`` under ``key`` while the signature ``sig`` (led by an
    mtime in ns) is unchanged and not too recent to trust (:func:`fnodiag.dashboard.folder.is_racy`)."""
    hit = memo.get(key)
    if sig is not None and hit is not None and hit[0] == sig and not is_racy(sig[0]):
        memo["_used"].add(key)
        return hit[1]
    value = compute()
    memo[key] = (sig, value)
    memo["_used"].add(key)
    return value


def _seed_or_problem(run: RunDir) -> tuple[int | None, str | None]:
    try:
        return _seed(run), None
    except (ValueError, TypeError, KeyError, FileNotFoundError) as exc:
        return None, f"{run.path}: {exc}"


def scan(root: str | Path, walk: FolderWalk | None = None, memo: dict | None = None) -> Catalog:
    """Build the :class:`Catalog` of ``root`` (an empty one when the folder does not exist).

    Parameters
    ----------
    root : the runs folder
    walk : a :class:`~fnodiag.dashboard.folder.FolderWalk` of ``root`` kept between scans (only
        changed folders are listed again); default a fresh one
    memo : a dict kept between scans: parsed ``sweep.json`` files (by their mtime and size) and
        single runs' seeds (by their folder's mtime) are read again only when they changed
    """
    root = Path(root).resolve()
    cat = Catalog(root)
    if not root.is_dir():
        return cat
    walk = walk or FolderWalk(root)
    memo = {} if memo is None else memo
    run_dirs, sweep_dirs = walk.walk()
    manifests = tuple(stamp(manifest_path(f)) for f in sweep_dirs)
    last = memo.get("_catalog")
    if last is not None and not walk.listed and last[0] == manifests and not any(is_racy(m[0]) for m in manifests if m):
        return last[1]  # no folder listed again, no manifest changed: the same catalog
    memo["_used"] = set()
    found = set(run_dirs)
    claimed: set[Path] = set()
    for folder in sweep_dirs:
        name, entries, problems = _memo(
            memo, ("sweep", folder), stamp(manifest_path(folder)), partial(_sweep_entries, root, folder)
        )
        cat.problems += problems
        if name is None:
            continue
        if name in cat.sweeps:
            name = str(folder.relative_to(root))
        cat.sweeps[name] = [RunEntry(name, e.arm, e.seed, e.run, e.run.path in found) for e in entries]
        claimed.add(folder)
    singles = []
    for path in run_dirs:
        if any(p in claimed for p in (path, *path.parents)):
            continue
        run = RunDir(path)
        mtime = walk.mtimes.get(path)
        seed, problem = _memo(memo, ("seed", path), None if mtime is None else (mtime,), partial(_seed_or_problem, run))
        if problem:
            cat.problems.append(problem)
        singles.append(RunEntry(SINGLE, str(path.relative_to(root)), seed, run, True))
    if singles:
        cat.sweeps[SINGLE] = singles
    for key in [k for k in memo if k not in ("_used", "_catalog") and k not in memo["_used"]]:
        del memo[key]  # runs and sweeps that are gone
    memo["_catalog"] = (manifests, cat)
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


_AUDITS: dict[tuple[Path, bool], tuple[tuple, list[str]]] = {}


def config_warnings(run: RunDir, *, lr: bool = True) -> list[str]:
    """:func:`fnodiag.analysis.audit.audit_run` of a run (asked vs recorded settings, and with ``lr`` the
    realised LR read from its store), cached per epoch."""

    def mtime(p: Path):
        try:
            return p.stat().st_mtime_ns
        except OSError:
            return None

    key = tuple(mtime(run.path / f) for f in ("config.json", "effective_config.json", "history.json", "metrics.json"))
    cached = _AUDITS.get((run.path, lr))
    if cached is None or cached[0] != key:
        try:
            warnings = audit_run(run, lr=lr)
        except (ValueError, TypeError, KeyError, OSError) as exc:  # a record being written, or unreadable
            warnings = [f"{run.path.name}: settings not checked ({type(exc).__name__}: {exc})"]
        _AUDITS[(run.path, lr)] = cached = (key, warnings)
    return cached[1]


def quick_row(entry: RunEntry) -> dict:
    """A row from ``status.json`` alone (state, step, epoch, message): what the list shows of a run whose full
    row (:func:`summarize`) is not read yet. ``outcome`` is empty and ``pending`` True."""
    row = {"arm": entry.arm, "seed": entry.seed, "label": entry.label, "state": states.NOT_STARTED}
    row.update(outcome="", progress=0.0, pending=True)
    if entry.exists:
        try:
            status = entry.run.read_status() if entry.run.status_path.is_file() else None
        except ValueError:
            status = None
        status = status or {}
        row.update(
            state=status.get("state") or states.NOT_STARTED,
            epoch=status.get("epoch"),
            step=status.get("step"),
            message=status.get("message", ""),
        )
    return row


def summarize(entry: RunEntry, *, chosen: bool = True) -> dict:
    """One overview row: state, outcome, progress, optimizer and lr, val losses, amp SSIM, collapse verdict.

    ``state`` is the run's state as read (:mod:`fnodiag.runs.states`; ``not started`` for a run listed in
    ``sweep.json`` that has no folder or status yet) and ``outcome`` its
    :func:`fnodiag.analysis.outcome.run_outcome`, both from :func:`fnodiag.analysis.outcome.read_outcome`:
    the reading the sweep summary uses, so the page and ``summary.md`` say the same. A run whose records cannot
    be read is ``damaged``, with a ``message`` naming the file.

    ``chosen=False`` (a row of the list that is not drawn) reads the run's JSON records only: its store is
    opened for the progress of a running run alone, and the settings check leaves out the realised LR
    (``lr_checked`` False).
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
    try:
        return _summarize(run, row, config, chosen)
    except DamagedRecord as exc:  # this row says so; the other runs' rows are read as usual
        return row | {"state": states.DAMAGED, "message": str(exc)}


def _summarize(run: RunDir, row: dict, config, chosen: bool) -> dict:
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
            "config_warnings": config_warnings(run, lr=chosen),
            "lr_checked": chosen,
        }
    )
    store = chosen or outcome["state"] in states.LIVE
    row.update(progress_columns(run, store=store, status=rec["status"], effective=effective))
    return row


def progress_columns(run, *, store: bool = True, status: dict | None = None, effective: dict | None = None) -> dict:
    """``progress`` (step / total steps), ``time_left``, ``progress_text`` and the numbers behind them
    (:func:`fnodiag.runs.progress.read_progress`); ``store=False`` reads no store, only ``status`` and
    ``effective`` (the run's records, read when not given): no step rate, so no time left."""
    if store:
        p = read_progress(run)
    else:
        if status is None:
            status = run.read_status() if run.status_path.is_file() else None
        p = run_progress(status, effective if effective is not None else run.read_json("effective_config.json", {}))
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
