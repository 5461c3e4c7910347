"""Sweep summary: per run and per arm tables, the verdict, comparability warnings, plots.

Everything is read back from the run directories (effective configuration, history, metrics,
collapse verdict, captures), never from the definition, so the summary reports what really
trained; differences between the two become warnings: :func:`fnodiag.analysis.audit.audit_run` compares
every recorded field of each run's ``effective_config.json`` and its realised per-step LR with
what its ``config.json`` asked, and ``config.json`` with what the sweep definition and flags
(``sweep.json``) resolve to. Each run row carries its own ``config_warnings``. ``summary.json``, ``summary.md`` and
``plots/*.png`` are rewritten on every call (also mid-sweep).
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from fnodiag.analysis.audit import audit_run
from fnodiag.analysis.findings import first_finding, window
from fnodiag.analysis.outcome import COLLAPSED, OUTCOMES, SCORES, TARGET_AMP_SSIM, outcome_of, read_outcome
from fnodiag.config import ConfigError, RunConfig, reference_quirks, without_quirks
from fnodiag.diagnostics.selection import best_epochs
from fnodiag.files import atomic_write_text, write_json
from fnodiag.runs import RunDir, list_runs, states
from fnodiag.runs.damage import DamagedRecord
from fnodiag.sweeps.attribution import arm_outcome, collapses, outcome_cells, removal_attribution, removal_markdown
from fnodiag.sweeps.data import data_markdown, data_report, data_warnings, reference_arm
from fnodiag.sweeps.manifest import asked_config, is_sweep, read_manifest, run_dir
from fnodiag.sweeps.verdict import control_check, verdict
from fnodiag.training.optimizers import hyperparameter_text, hyperparameters

ARM_METRICS = ("best_val_loss", "final_val_loss", "best_amp_ssim", "last_amp_ssim", "last_phase_ssim", "last_amp_mae")


def _nan(x) -> float:
    return float("nan") if x is None else float(x)


def run_row(
    run: RunDir, arm: str, seed: int, asked: RunConfig | None = None, root=None, *, damage: str | None = None
) -> dict:
    """One run's row: what trained (effective configuration), how it ended, its scores, its first finding.

    ``asked`` (what the sweep definition and flags resolve to) is compared with the run's
    ``config.json``; ``config_warnings`` lists every difference :func:`fnodiag.analysis.audit.audit_run` finds.
    ``first_finding`` is the top :func:`~fnodiag.analysis.findings.findings_from_run` finding (a dict, None
    when there is none), its link naming the run relative to ``root`` (default: the run's parent).
    A run whose records cannot be read (:class:`~fnodiag.runs.damage.DamagedRecord`: a truncated store,
    a JSON file that does not parse) is a row of state ``damaged`` whose ``message`` names the file;
    ``damage`` (why the run is not opened at all, e.g. a manifest path outside the sweep) gives that row unread.
    """
    try:
        if damage is not None:
            raise DamagedRecord(damage)
        outcome = read_outcome(run)
        captures = {tag: run.read_capture(tag) for tag in ("best", "last")}
        origin = run.read_origin() if run.config_path.is_file() else None
        cfg = run.read_config().to_dict() if run.config_path.is_file() and not run.is_foreign() else {}
        audit, damage = audit_run(run, asked), None
        finding = first_finding(run, root=root) if run.path.is_dir() else None  # a run not started yet: none
    except DamagedRecord as exc:  # isolated: this row says so, the other runs are summarized as usual
        outcome, captures, origin, cfg, audit, damage = outcome_of(), {}, None, {}, [], str(exc)
        finding = None
        outcome["state"] = states.DAMAGED
    rec = outcome["records"]
    status, eff, hist, collapse = rec["status"], rec["effective"], rec["history"], rec["collapse"]
    group = ((eff.get("optimizer") or {}).get("param_groups") or [{}])[0]
    kind = origin["kind"] if origin else "fnodiag"
    return {
        "run": run.path.name,
        "arm": arm,
        "seed": seed,
        "origin": kind,
        "state": outcome["state"],
        "epochs": f"{len(hist.get('train_loss', []))}/{cfg.get('train', {}).get('epochs', '?')}",
        "optimizer": outcome["optimizer"],
        "lr": outcome["lr"],
        "momentum": group.get("momentum"),
        "nesterov": group.get("nesterov"),
        "betas": group.get("betas"),
        "hyperparameters": hyperparameters(outcome["optimizer"], group),  # every one its registry entry sets
        "weight_decay": group.get("weight_decay"),
        "scheduler": (eff.get("scheduler") or {}).get("class"),
        "grad_clip": eff.get("grad_clip"),
        "generator": (eff.get("generator") or {}).get("block_class"),
        "parameters": (eff.get("generator") or {}).get("parameters"),
        "data_key": (eff.get("data") or {}).get("key"),
        "best_val_loss": outcome["best_val_loss"],
        "final_val_loss": outcome["final_val_loss"],
        **{f"{tag}_{k}": outcome[f"{tag}_{k}"] for tag in ("best", "last") for k in SCORES},
        "outcome": outcome["outcome"],
        "collapse": outcome["collapse"],
        "onset_step": outcome["onset_step"],
        "earliest_layer": outcome["earliest_layer"],
        "learned_then_collapsed": outcome["learned_then_collapsed"],
        **{
            f"{tag}_output_spatial_std": (c.get("per_layer", {}).get("output", {}) or {}).get("spatial_std")
            for tag, c in captures.items()
        },
        "wall_time_s": eff.get("wall_time_s"),
        "message": damage or (status or {}).get("message", ""),
        "capture_error": _first_line(run.capture_error_path),
        "reference_quirks": eff.get("reference_quirks", []),
        "probe": _probe(eff, cfg),
        "best_selection": best_epochs(hist, eff, cfg),
        "best_weights_criterion": (collapse.get("best_weights") or {}).get("criterion"),
        "expected": cfg,
        "config_warnings": audit,
        "first_finding": finding,
    }


def _probe(eff: dict, cfg: dict) -> str | None:
    """The probe a run trained with, as recorded: ``"ideal disk"`` or ``"npz <path>"`` (None: nothing recorded)."""
    recorded = (eff.get("data") or {}).get("probe")
    if recorded is not None:
        return recorded
    if "data" not in cfg:
        return None
    path = cfg["data"].get("probe_npz")
    return "ideal disk" if path is None else f"npz {path}"


def _first_line(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8").splitlines()[0]
    except (OSError, IndexError):
        return None


def run_state_warnings(rows: list[dict]) -> list[str]:
    """Runs that stopped without a final state (how to resume), damaged runs (which file) and finished runs whose
    capture failed."""
    out = [f"{r['run']}: {r['message']}" for r in rows if r["state"] == states.STOPPED]
    out += [f"{r['run']}: damaged: {r['message']}" for r in rows if r["state"] == states.DAMAGED]
    out += [
        f"{r['run']}: checkpoint capture failed ({r['capture_error']}); the training outcome "
        f"({r['state']}) stands, see {r['run']}/capture/error.txt"
        for r in rows
        if r.get("capture_error")
    ]
    return out


def arm_table(rows: list[dict]) -> dict[str, dict]:
    """Per arm: counts and mean / std / min / max over seeds of the main numbers."""
    arms: dict[str, dict] = {}
    for arm in dict.fromkeys(r["arm"] for r in rows):
        rs = [r for r in rows if r["arm"] == arm]
        done = [r for r in rs if r["state"] in states.DONE]
        entry = {
            "seeds": [r["seed"] for r in rs],
            "n_done": len(done),
            "n_collapsed": sum(r["outcome"] == COLLAPSED for r in done),  # learned then collapsed only
            "n_diverged": sum(r["state"] == states.DIVERGED for r in done),
            "outcomes": {o: n for o in OUTCOMES if (n := sum(r["outcome"] == o for r in rs))},
        }
        for key in ARM_METRICS:
            v = np.array([_nan(r[key]) for r in done], dtype=float)
            v = v[np.isfinite(v)]
            entry[key] = (
                {
                    "mean": float(v.mean()),
                    "std": float(v.std()),
                    "min": float(v.min()),
                    "max": float(v.max()),
                    "n": int(v.size),
                }
                if v.size
                else None
            )
        arms[arm] = entry
    return arms


def warnings_for(rows: list[dict], data: dict | None = None) -> list[str]:
    """Reasons the arms may not be comparable, and effective settings that differ from the definition.

    ``data`` (:func:`fnodiag.sweeps.data.data_report`) tells which arms train on other data as their
    declared condition: those are not warned about (:func:`fnodiag.sweeps.data.data_warnings`); without
    it any two datasets are.
    """
    started = [r for r in rows if r["optimizer"]]
    out = data_warnings(started, data if data is not None else data_report(started, None))
    clips = {r["arm"]: json.dumps({k: (r["grad_clip"] or {}).get(k) for k in ("algorithm", "value")}) for r in started}
    if len(set(clips.values())) > 1:
        out.append("clipping differs between arms: " + "; ".join(f"{a} {c}" for a, c in clips.items()))
    seeds = {
        a: tuple(sorted(r["seed"] for r in started if r["arm"] == a)) for a in dict.fromkeys(r["arm"] for r in started)
    }
    if len(set(seeds.values())) > 1:
        out.append("arms ran different seeds: " + "; ".join(f"{a} {list(s)}" for a, s in seeds.items()))
    for r in rows:
        out += r.get("config_warnings", [])
    return out


def attribution(
    rows: list[dict], control: str | None = None, baseline: str | None = None, data_arms: list[str] | tuple = ()
) -> dict | None:
    """Which reference conditions the collapse needs (None when no arm carries any and no ``baseline``).

    With a ``baseline`` arm (a definition's ``baseline = "ARM"``) the question is subtractive:
    :func:`fnodiag.sweeps.attribution.removal_attribution` (remove one condition at a time). Otherwise it is
    additive: each arm with conditions (:func:`fnodiag.config.reference_quirks`) is paired with the
    arm whose configuration is the same once those conditions are removed; collapse counts
    (learned then collapsed only) and amp SSIM are compared with and without. An arm "collapses"
    when most of its finished seeds do. Inconclusive (the text says so first) when the ``control``
    arm did not learn on every seed.
    """
    check = control_check(rows, control)
    if baseline is not None:
        return removal_attribution(rows, baseline, check, data_arms)

    arms: dict[str, tuple] = {}
    for r in rows:
        if r["expected"] and r["arm"] not in arms:
            cfg = RunConfig.from_dict(r["expected"]).override({"train.seed": 0})
            arms[r["arm"]] = (cfg, reference_quirks(cfg))
    if not any(q for _, q in arms.values()):
        return None
    plain = {arm: cfg for arm, (cfg, q) in arms.items() if not q}
    table = []
    for arm, (cfg, quirks) in arms.items():
        if quirks:
            base = next((b for b, bcfg in plain.items() if bcfg == without_quirks(cfg)), None)
            table.append(
                {
                    "arm": arm,
                    "conditions": quirks,
                    "baseline": base,
                    "arch": cfg.model.arch,
                    "with": arm_outcome(rows, arm),
                    "without": arm_outcome(rows, base),
                }
            )
    stable_base = next((a for a, c in plain.items() if c.model.arch != "hybrid"), None)
    base_out = arm_outcome(rows, stable_base)
    stable_rows = [t for t in table if t["baseline"] == stable_base and t["with"]]
    if check is not None and not check["ok"]:
        text = f"Inconclusive: {check['reason']}, so no arm's collapse can be attributed to a condition."
    elif base_out is None:
        text = "The stable arm without reference conditions has not finished yet: no attribution."
    elif collapses(base_out):
        text = (
            f"The stable arm collapses without any reference condition ({stable_base}: {base_out['n_collapsed']}/"
            f"{base_out['n_done']} seeds), so its collapse does not need them."
        )
    else:
        alone = [t for t in stable_rows if len(t["conditions"]) == 1 and collapses(t["with"])]
        together = [t for t in stable_rows if len(t["conditions"]) > 1 and collapses(t["with"])]
        if alone:
            text = (
                "The stable arm collapses only with: "
                + ", ".join(
                    f"{t['conditions'][0]} ({t['with']['n_collapsed']}/{t['with']['n_done']} seeds)" for t in alone
                )
                + f"; without them it does not ({stable_base})."
            )
        elif together:
            text = (
                f"The stable arm collapses only with the conditions combined ({', '.join(together[0]['conditions'])}), "
                "not with any one of them alone."
            )
        else:
            text = (
                f"No reference condition, alone or combined, makes the stable arm collapse in this sweep "
                f"({len(stable_rows)} condition arms against {stable_base})."
            )
    if any(r["state"] not in states.DONE for r in rows):
        text += " (Some runs have not finished: provisional.)"
    return {
        "kind": "additive",
        "rows": table,
        "text": text,
        "conclusion": "inconclusive" if text.startswith("Inconclusive") else "answered",
    }


def _fmt(v, digits=4) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    return f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def _stat(a: dict | None, digits=3) -> str:
    return "–" if not a else f"{a['mean']:.{digits}f} ± {a['std']:.{digits}f}"


def _attribution_md(att: dict) -> list[str]:
    lines = [
        "## Attribution to the reference conditions",
        "",
        att["text"],
        "",
        "| arm | conditions | without them (arm) | collapsed with | collapsed without | amp SSIM with "
        "| amp SSIM without |",
        "|---|---|---|---|---|---|---|",
    ]
    for t in att["rows"]:
        (cw, sw), (cn, sn) = outcome_cells(t["with"]), outcome_cells(t["without"])
        lines.append(
            f"| {t['arm']} | {', '.join(t['conditions'])} | {t['baseline'] or '–'} | {cw} | {cn} | {sw} | {sn} |"
        )
    return lines + [""]


def _selection_md(rows: list[dict]) -> list[str]:
    """Which criterion chose each run's ``best.ckpt``, and under the batch gain the gain-free best epoch."""

    def ep(b, key):
        return "–" if not b else f"{b['epoch']} ({_fmt(b[key], 4 if key == 'val_loss' else 3)})"

    sel = [(r, r["best_selection"]) for r in rows if r.get("best_selection")]
    if not sel:
        return []
    lines = [
        "## Best checkpoint",
        "",
        "`best.ckpt` is the epoch chosen by the criterion below (epochs 0-based). Under the batch gain "
        "(`forward_gain = batch`) the validation loss depends on the batch size, so the best epoch by the "
        'gain-free validation amp SSIM decides the collapse verdict\'s "best weights" instead.',
        "",
        "| run | best.ckpt chosen by | epoch (val loss) | best epoch by val amp SSIM (SSIM) | verdict's best weights |",
        "|---|---|---|---|---|",
    ]
    for r, s in sel:
        gain = s["gain_dependent"]
        ssim = ep(s["by_ssim"], "val_amp_ssim") + (" ≠ best.ckpt" if s["differ"] else "")
        lines.append(
            f"| {r['run']} | {s['criterion']}{' ⚑ gain' if gain else ''} | {ep(s['by_loss'], 'val_loss')} | "
            f"{ssim} | {r.get('best_weights_criterion') or s['verdict_criterion']} |"
        )
    return lines + [""]


def probe_note(rows: list[dict]) -> str | None:
    """Which probe the runs trained with, as they recorded it (None when no run recorded one)."""
    probes = sorted({r["probe"] for r in rows if r.get("probe")})
    if not probes:
        return None
    if probes == ["ideal disk"]:
        return (
            "Probe: every run used the ideal disk probe. The reference's probe was an experimental reconstruction "
            "that is not available; pass `--probe-npz FILE` (an NPZ with a 'probeGuess' array) to train with yours."
        )
    return "Probe: " + "; ".join(f"{p} ({sum(r.get('probe') == p for r in rows)} runs)" for p in probes) + "."


def markdown(
    name: str,
    rows: list[dict],
    arms: dict,
    verdict_: dict,
    warns: list[str],
    att: dict | None = None,
    data: dict | None = None,
) -> str:
    """The human-readable summary (``data``: :func:`fnodiag.sweeps.data.data_report`, the ``## Data`` section)."""
    lines = [
        f"# Sweep `{name}`",
        "",
        f"_generated {datetime.now(UTC):%Y-%m-%d %H:%M} UTC_",
        "",
        "## Verdict",
        "",
        verdict_["text"],
        "",
    ]
    probe = probe_note(rows)
    if probe:
        lines += [probe, ""]
    if warns:
        lines += ["## Warnings", ""] + [f"- {w}" for w in warns] + [""]
    if data:
        lines += data_markdown(data)
    if att:
        lines += removal_markdown(att) if att.get("kind") == "removal" else _attribution_md(att)
    lines += [
        "## Arms (mean ± std over seeds)",
        "",
        "| arm | done | collapsed | best val loss | final val loss | amp SSIM best | amp SSIM last | phase SSIM last "
        "| amp MAE last |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for arm, a in arms.items():
        lines.append(
            f"| {arm} | {a['n_done']}/{len(a['seeds'])} | {a['n_collapsed']} | {_stat(a['best_val_loss'], 4)} | "
            f"{_stat(a['final_val_loss'], 4)} | {_stat(a['best_amp_ssim'])} | {_stat(a['last_amp_ssim'])} | "
            f"{_stat(a['last_phase_ssim'])} | {_stat(a['last_amp_mae'])} |"
        )
    lines += [
        "",
        "## Runs",
        "",
        "| run | state | outcome | epochs | optimizer (effective) | lr | hyperparameters | wd | clip | best val | "
        "final val | amp SSIM best / last | phase SSIM last | collapse (onset step, earliest layer) | wall s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        hyper = hyperparameter_text(r["optimizer"], r.get("hyperparameters") or {}, skip=("weight_decay",))
        clip = (r["grad_clip"] or {}).get("algorithm")
        col = (
            f"{r['collapse']} ({r['onset_step']}, {r['earliest_layer']})"
            if r["collapse"] == "collapsed"
            else r["collapse"]
        )
        state = r["state"] + (f" ⚑ {', '.join(r['reference_quirks'])}" if r["reference_quirks"] else "")
        state += {
            "reference": " (imported from the reference)",
            "lightning": " (LightningModule)",
            "torch": " (PyTorch loop)",
        }.get(r.get("origin"), "")
        if r.get("config_warnings"):
            state += f" ⚠ {len(r['config_warnings'])} setting(s) not as asked"
        lines.append(
            f"| {r['run']} | {state} | {r['outcome']} | {r['epochs']} | {r['optimizer']} | "
            f"{_fmt(r['lr'], 6)} | {hyper} | "
            f"{r['weight_decay']} | {clip} | {_fmt(r['best_val_loss'])} | {_fmt(r['final_val_loss'])} | "
            f"{_fmt(r['best_amp_ssim'], 3)} / {_fmt(r['last_amp_ssim'], 3)} | {_fmt(r['last_phase_ssim'], 3)} | "
            f"{col} | {_fmt(r['wall_time_s'], 0)} |"
        )
    lines += [
        "",
        "⚑ marks reference quirks: conditions of the reference's training reproduced on purpose. "
        "⚠ marks a run whose recorded settings differ from what was asked (listed under Warnings).",
        "Plots: `plots/val_loss.png`, `plots/amp_ssim.png`.",
        "",
    ]
    lines += _selection_md(rows)
    lines += _findings_md(rows)
    return "\n".join(lines)


def _findings_md(rows: list[dict]) -> list[str]:
    """``## First findings``: each run's top finding (``fnodiag diagnose RUN`` lists them all)."""
    lines = [
        "## First findings",
        "",
        "Each run's top finding (`fnodiag diagnose RUN` lists all of them, each with a link to its evidence).",
        "",
        "| run | severity | finding | layer | window | what happened |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        f = r.get("first_finding")
        if not f:
            lines.append(f"| {r['run']} | — | no findings | | | |")
            continue
        when = window(SimpleNamespace(first=f.get("first"), last=f.get("last")))
        text = str(f.get("sentence", "")).replace("|", "/")
        lines.append(f"| {r['run']} | {f['severity']} | {f['kind']} | {f.get('layer') or ''} | {when} | {text} |")
    return lines + [""]


def plot_summary(sweep_dir: Path, rows: list[dict], arms: dict) -> None:
    """``plots/val_loss.png`` (per epoch, every seed) and ``plots/amp_ssim.png`` (best and last per seed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    (sweep_dir / "plots").mkdir(exist_ok=True)
    colors = {arm: plt.cm.tab10(i % 10) for i, arm in enumerate(arms)}
    fig, ax = plt.subplots(figsize=(7, 4))
    labelled = set()  # one legend entry per arm, from its first run with a history
    for r in rows:
        if r["state"] == states.DAMAGED:
            continue
        hist = RunDir(sweep_dir / r["run"]).read_json("history.json", default={}) or {}
        if hist.get("val_loss"):
            label = None if r["arm"] in labelled else r["arm"]
            labelled.add(r["arm"])
            ax.plot(
                np.arange(1, len(hist["val_loss"]) + 1),
                hist["val_loss"],
                color=colors[r["arm"]],
                label=label,
                alpha=0.8,
            )
    ax.set(xlabel="epoch", ylabel="validation loss", yscale="log", title="validation loss per arm (one line per seed)")
    if labelled:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(sweep_dir / "plots" / "val_loss.png", dpi=90)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(7, 4))
    for i, arm in enumerate(arms):
        for j, tag in enumerate(("best", "last")):
            v = [_nan(r[f"{tag}_amp_ssim"]) for r in rows if r["arm"] == arm]
            ax.scatter(
                np.full(len(v), i + (j - 0.5) * 0.3),
                v,
                color=colors[arm],
                marker="o" if tag == "best" else "x",
                label=f"{tag} weights" if i == 0 else None,
            )
    ax.axhline(TARGET_AMP_SSIM, color="gray", ls="--", lw=1, label=f"target {TARGET_AMP_SSIM}")
    ax.set_xticks(range(len(arms)), list(arms), rotation=20, fontsize=8)
    ax.set(ylabel="amp SSIM", ylim=(0, 1), title="amplitude SSIM per arm and seed")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(sweep_dir / "plots" / "amp_ssim.png", dpi=90)
    plt.close(fig)


def runs_manifest(folder: Path) -> dict:
    """A sweep manifest for a plain runs folder: every run directory under it is its own arm.

    Lets ``fnodiag summarize`` put fnodiag's own runs, imported reference runs (``fnodiag import``)
    and runs of any LightningModule (``fnodiag.LiveCapture``) side by side. Runs inside a sweep
    folder below are left to that sweep's own summary.
    """
    if not folder.is_dir():
        raise ConfigError(f"{str(folder)!r} does not exist; pass a sweep folder or a runs folder")
    in_sweep = lambda run: any(is_sweep(p) for p in run.path.parents if folder in (p, *p.parents))
    runs = [run for run in list_runs(folder) if not in_sweep(run)]  # a sweep's runs: summarize that sweep
    if not runs:
        raise ConfigError(
            f"{str(folder)!r} is not a sweep folder (no sweep.json) and holds no single run directories; "
            "pass the --out folder of `fnodiag sweep` or of `fnodiag train` / `fnodiag import`"
        )
    entries = {}
    for run in runs:
        rel = str(run.path.relative_to(folder)) if run.path != folder else run.path.name
        try:
            seed = (
                (run.read_json("effective_config.json", {}) or {}).get("seed")
                if run.is_foreign()
                else run.read_config().train.seed
            )
        except DamagedRecord:  # its row says damaged (run_row)
            seed = None
        entries[rel] = {"arm": rel, "seed": seed, "path": rel}
    return {"name": folder.name, "arms": list(entries), "runs": entries}


def write_summary(sweep_dir: str | Path) -> dict:
    """Summarize a sweep folder, or a plain runs folder (:func:`runs_manifest`).

    Writes summary.json, summary.md and plots."""
    d = Path(sweep_dir)
    manifest = read_manifest(d)
    plain = manifest is None  # a plain runs folder: no definition, no data reference arm
    if plain:
        manifest = runs_manifest(d)
    rows = []
    for key, spec in sorted(
        manifest["runs"].items(), key=lambda kv: (list(manifest["arms"]).index(kv[1]["arm"]), kv[1]["seed"])
    ):
        try:
            run, damage = run_dir(d, spec), None
        except DamagedRecord as exc:  # a path out of the sweep folder: not opened, the row says why
            run, damage = RunDir(d / Path(key).name), str(exc)
        rows.append(
            run_row(run, spec["arm"], spec["seed"], asked_config(manifest, spec["arm"], spec["seed"]), d, damage=damage)
        )
    arms = arm_table(rows)
    spec = manifest.get("spec") or {}
    control, baseline = manifest.get("control", spec.get("control")), manifest.get("baseline", spec.get("baseline"))
    data_arms = list(spec.get("data_arms") or [])
    data = data_report(rows, None if plain else reference_arm(manifest["arms"], baseline, control), data_arms)
    for arm, e in data["arms"].items():  # per arm: its dataset, and whether that is other data than the reference's
        arms[arm].update(
            data_key=e["data_key"], other_data=e["other_data"], data_arm=e["declared"], data_condition=e["condition"]
        )
    v, warns = verdict(arms, rows, control), warnings_for(rows, data) + run_state_warnings(rows)
    att = attribution(rows, control, baseline, data_arms)
    summary = {
        "sweep": manifest["name"],
        "definition": manifest.get("definition"),
        "generated": datetime.now(UTC).isoformat(timespec="seconds"),
        "verdict": v,
        "control": control,
        "baseline": baseline,
        "probe": probe_note(rows),
        "warnings": warns,
        "data": data,
        "attribution": att,
        "arms": arms,
        "runs": [{k: r[k] for k in r if k != "expected"} for r in rows],
    }
    write_json(d / "summary.json", summary, sort_keys=False)
    atomic_write_text(d / "summary.md", markdown(manifest["name"], rows, arms, v, warns, att, data))
    plot_summary(d, rows, arms)
    return summary
