"""``fnodiag import``: open a reference project's arm output folder (brief §7.3) as a read-only fnodiag run.

The reference writes, for one arm (``<arm>`` = its ``--output-dir``)::

    <arm>/runs/pinn_<arch>/{model.pt, history.json, metrics.json, config.json}
    <arm>/lightning_logs/version_<k>/metrics.csv      # mae_train_loss_*, mae_val_loss, learning_rate,
                                                      # grad_norm_preclip_*, grad_norm_postclip_*
    <arm>/checkpoints/{epoch=XX-mae_val=....ckpt, last.ckpt}
    <arm>/datasets/N<N>/gs1/{train,test}.npz

:func:`import_reference` builds the fnodiag run in a temporary folder beside ``out`` and renames
it into place only when everything succeeded, so a malformed folder or CSV (a one-line
:class:`ReferenceImportError` naming the file, line and fix) leaves nothing behind. The run holds:

* ``config.json``: a RunConfig mapped from the reference's ``config.json`` (``TorchRunnerConfig``);
  the original files are kept as ``reference/runner_{config,history,metrics}.json`` and
  ``reference/metrics.csv``;
* ``history.json`` (``train_loss``, ``val_loss``, plus ``lr`` per epoch from the CSV when logged);
* ``metrics.json``: ``{"best": None, "last": {...}}`` (the reference scores its final-epoch weights);
* ``run.sqlite``: the CSV's per-step scalars under fnodiag's names (``train/loss``, ``lr``,
  ``grad/norm_preclip``, ``grad/norm_postclip``, ``grad/clipped``) and per-epoch ones
  (``epoch/val_loss``, ``epoch/train_loss``, ``epoch/clip_fraction``, ...); other columns as
  ``reference/<column>``;
* ``checkpoints/best.ckpt`` (the ``epoch=…`` checkpoint), ``checkpoints/last.ckpt``, ``model.pt``;
* ``capture/last.json``: a capture of ``model.pt`` on the first test patch, through
  :func:`fnodiag.diagnostics.capture.capture_checkpoint` (when the folder has its dataset);
* ``imported.json``: source path, files used, what was missing, mapping notes; ``status.json`` =
  finished with an "imported" message. There are no live per-layer captures: the reference
  recorded none, and the views say so.
"""

from __future__ import annotations

import json
import math
import os
import re
import secrets
import shutil
from datetime import UTC, datetime
from pathlib import Path

from fnodiag.config import ConfigError, RunConfig, reference_quirks
from fnodiag.diagnostics.capture import capture_checkpoint, write_report
from fnodiag.interop.reference_log import ReferenceImportError, read_metrics_csv, write_scalars
from fnodiag.runs import RunDir, ensure_writable_dir, jsonable
from fnodiag.training.optimizers import OPTIMIZERS

METRIC_KEYS = {"ssim": "ssim", "mae": "mae", "psnr": "psnr", "frc50": "frc50"}
SCHEDULES = {
    "Default": "constant",
    "Exponential": "exponential",
    "WarmupCosine": "warmup_cosine",
    "ReduceLROnPlateau": "plateau",
}
# reference config key -> fnodiag setting
CONFIG_MAP = {
    "architecture": "model.arch",
    "N": "data.N",
    "fno_modes": "model.modes",
    "fno_width": "model.width",
    "fno_blocks": "model.blocks",
    "max_hidden_channels": "model.channel_cap",
    "seed": "train.seed",
    "epochs": "train.epochs",
    "batch_size": "train.batch_size",
    "infer_batch_size": "train.infer_batch_size",
    "learning_rate": "optim.lr",
    "optimizer": "optim.name",
    "momentum": "optim.momentum",
    "weight_decay": "optim.weight_decay",
    "adam_beta1": "optim.beta1",
    "adam_beta2": "optim.beta2",
    "scheduler": "schedule.name",
    "lr_warmup_epochs": "schedule.warmup_epochs",
    "lr_min_ratio": "schedule.min_lr_ratio",
    "plateau_factor": "schedule.plateau_factor",
    "plateau_patience": "schedule.plateau_patience",
    "plateau_min_lr": "schedule.plateau_min_lr",
    "gradient_clip_val": "clip.value",
    "gradient_clip_algorithm": "clip.algorithm",
    "torch_loss_mode": "train.loss",
    "nphotons": "data.nphotons",
    "set_phi": "data.set_phi",
}


def _read_json(path: Path, what: str):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ReferenceImportError(
            f"{what} {str(path)!r} is not valid JSON ({exc.msg} at line {exc.lineno}); "
            "fix or remove it and import again"
        ) from None
    except UnicodeDecodeError:
        raise ReferenceImportError(
            f"{what} {str(path)!r} is not a UTF-8 text file; fix or remove it and import again"
        ) from None


def find_arm(src: str | Path, arch: str | None = None) -> tuple[Path, Path]:
    """``(arm folder, runs/pinn_<arch> folder)`` of a reference output folder (or of its pinn_<arch> folder)."""
    src = Path(src)
    if not src.is_dir():
        raise ReferenceImportError(
            f"reference folder {str(src)!r} does not exist; pass the --output-dir of one reference arm"
        )
    if src.name.startswith("pinn_") and src.parent.name == "runs":
        return src.parent.parent, src
    found = sorted(p for p in (src / "runs").glob("pinn_*") if p.is_dir()) if (src / "runs").is_dir() else []
    if arch is not None:
        found = [p for p in found if p.name == f"pinn_{arch}"]
    if not found:
        want = f"runs/pinn_{arch}/" if arch else "runs/pinn_<arch>/"
        raise ReferenceImportError(
            f"{str(src)!r} has no {want} folder; pass the --output-dir of one reference arm "
            "(the folder holding runs/ and lightning_logs/)"
        )
    if len(found) > 1:
        raise ReferenceImportError(
            f"{str(src)!r} holds several arms ({', '.join(p.name[5:] for p in found)}); choose one with --arch"
        )
    return src, found[0]


def map_config(ref: dict, arch_dir: Path) -> tuple[RunConfig, dict, list[str]]:
    """A RunConfig from a reference ``config.json``: ``(config, {ref key: why unmapped}, notes)``."""
    flat: dict = {}
    unmapped: dict[str, str] = {}
    notes: list[str] = []
    ref = dict(ref)
    ref.setdefault("architecture", arch_dir.name[len("pinn_") :])
    for key, setting in CONFIG_MAP.items():
        if key not in ref or ref[key] is None:
            continue
        value = ref[key]
        if key == "scheduler":
            value = SCHEDULES.get(value, value)
        if key == "optimizer" and isinstance(value, str):
            value = value.lower()
        flat[setting] = value
    clip = ref.get("gradient_clip_val")
    if not clip or clip <= 0:
        flat["clip.algorithm"], flat["clip.value"] = "none", 0.0
    if flat.get("schedule.name") in ("warmup_cosine", "exponential"):
        flat["schedule.frozen"] = True
        notes.append(
            "schedule.frozen: the reference never stepped this schedule under manual optimization "
            "(brief §5.4); the CSV's learning_rate column is the LR that really trained"
        )
    flat["model.spectral_layout"] = "reference"
    flat["train.capture_every"] = 0  # the reference recorded no live per-layer captures
    flat["train.frame_every"] = 0  # nor reconstruction frames
    cfg = RunConfig()
    for setting, value in flat.items():
        try:
            trial = cfg.override({setting: value})
            getattr(trial, setting.split(".")[0]).validate()
            cfg = trial
        except (ConfigError, TypeError, ValueError) as exc:
            unmapped[setting] = f"{value!r}: {str(exc).splitlines()[0]}"
    return cfg, unmapped, notes


def map_metrics(ref: dict, path: Path) -> dict:
    """fnodiag's metric names from the reference's ``{ssim: [amp, phase], mae: [...], ...}``."""
    if not isinstance(ref, dict):
        raise ReferenceImportError(f"{str(path)!r} holds a {type(ref).__name__}, not the reference's metrics dict")
    out = {}
    for src, name in METRIC_KEYS.items():
        pair = ref.get(src)
        if pair is None:
            continue
        if not (isinstance(pair, list) and len(pair) == 2):
            raise ReferenceImportError(f"{str(path)!r}: {src!r} must be [amplitude, phase], got {str(pair)[:40]}")
        for part, value in zip(("amp", "phase"), pair):
            out[f"{part}_{name}"] = float("nan") if value is None else float(value)
    return out


def _history(ref, path: Path) -> dict:
    if not isinstance(ref, dict) or not isinstance(ref.get("train_loss"), list):
        raise ReferenceImportError(
            f"{str(path)!r} has no 'train_loss' list; expected the reference's "
            '{"train_loss": [...], "val_loss": [...]}'
        )
    out = {}
    for key in ("train_loss", "val_loss"):
        series = ref.get(key) or []
        try:
            out[key] = [float("nan") if v is None else float(v) for v in series]
        except (TypeError, ValueError):
            raise ReferenceImportError(f"{str(path)!r}: {key!r} must be a list of numbers") from None
    return out


def _place(src: Path, dst: Path) -> None:
    """Hard link when possible (checkpoints are large), else copy."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _best_checkpoint(paths: list[Path]) -> Path | None:
    scored = []
    for p in paths:
        m = re.search(r"val[a-z_]*=([0-9.eE+-]+?)(?:\.ckpt)?$", p.name)
        scored.append((float(m.group(1)) if m else math.inf, p.name, p))
    return min(scored)[2] if scored else None


def _capture(run: RunDir, arm: Path, cfg: RunConfig, final: Path) -> str | None:
    """``capture/last.json`` of the imported ``model.pt`` on the first test patch; None, or why not."""
    tests = sorted(arm.glob(f"datasets/N{cfg.data.N}/*/test.npz")) or sorted(arm.glob("datasets/*/*/test.npz"))
    if not tests:
        return (
            f"capture of model.pt: no datasets/N{cfg.data.N}/gs1/test.npz in the reference folder; run "
            f"`fnodiag capture --checkpoint {run.path.name}/model.pt --output ...` with --input"
        )
    try:
        report = capture_checkpoint(
            run.model_path, inputs=tests[0], overrides={"data.N": cfg.data.N}, max_samples=1, batch_size=1
        )
    except (ConfigError, RuntimeError, ValueError, KeyError) as exc:
        return f"capture of model.pt: {str(exc).splitlines()[0][:300]}"
    report["summary"] = {  # not the temp folder
        k: v.replace(str(run.path), str(final)) if isinstance(v, str) else v for k, v in report["summary"].items()
    }
    write_report(report, run.capture_dir, "last.json")
    return None


def import_reference(src: str | Path, out: str | Path, *, arch: str | None = None, capture: bool = True) -> RunDir:
    """Import one reference arm folder as a read-only fnodiag run at ``out``.

    Parameters
    ----------
    src : path
        The reference arm's output folder (holding ``runs/pinn_<arch>/``), or that pinn folder.
    out : path
        The new run directory; it must not exist (or be empty).
    arch : str, optional
        Which ``pinn_<arch>`` when the folder holds several.
    capture : bool
        Capture ``model.pt`` on the first test patch.

    Returns
    -------
    RunDir

    Raises
    ------
    ReferenceImportError
        Malformed folder, JSON or CSV (nothing is written).
    FileExistsError
        ``out`` holds files.
    """
    arm, arch_dir = find_arm(src, arch)
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"--out {str(out)!r} already exists and is not empty; choose a new run folder")
    ensure_writable_dir(out.parent, "--out's parent folder")  # one line naming it, before anything is written
    missing: list[str] = []
    files: dict[str, str] = {}

    def source(rel: str, path: Path) -> Path | None:
        if path.is_file():
            files[rel] = str(path.resolve())
            return path
        missing.append(f"{rel} ({path.relative_to(arm) if arm in path.parents else path})")
        return None

    cfg_path = source("config.json", arch_dir / "config.json")
    ref_cfg = _read_json(cfg_path, "reference config") if cfg_path else {}
    if not isinstance(ref_cfg, dict):
        raise ReferenceImportError(
            f"reference config {str(cfg_path)!r} holds a {type(ref_cfg).__name__}, not a settings dict"
        )
    hist_path = source("history.json", arch_dir / "history.json")
    history = _history(_read_json(hist_path, "history"), hist_path) if hist_path else {}
    met_path = source("metrics.json", arch_dir / "metrics.json")
    last_metrics = map_metrics(_read_json(met_path, "metrics"), met_path) if met_path else None
    versions = sorted(
        (p for p in (arm / "lightning_logs").glob("version_*") if (p / "metrics.csv").is_file()),
        key=lambda p: int(p.name.split("_")[-1]) if p.name.split("_")[-1].isdigit() else -1,
    )
    csv_path = versions[-1] / "metrics.csv" if versions else None
    if csv_path:
        files["lightning_logs/metrics.csv"] = str(csv_path.resolve())
    else:
        missing.append("lightning_logs/version_<k>/metrics.csv (per-step scalars)")
    csv_rows = read_metrics_csv(csv_path) if csv_path else []
    model = source("model.pt", arch_dir / "model.pt")
    ckpts = sorted((arm / "checkpoints").glob("*.ckpt")) if (arm / "checkpoints").is_dir() else []
    last_ckpt = next((p for p in ckpts if p.name == "last.ckpt"), None)
    best_ckpt = _best_checkpoint([p for p in ckpts if p.name != "last.ckpt"])
    if last_ckpt is None:
        missing.append("checkpoints/last.ckpt")
    if best_ckpt is None:
        missing.append("checkpoints/epoch=…-….ckpt (best)")
    cfg, unmapped, notes = map_config(ref_cfg, arch_dir)

    tmp = out.parent / f".{out.name}.import-{secrets.token_hex(4)}"
    tmp.parent.mkdir(parents=True, exist_ok=True)
    try:
        run = RunDir.create(tmp, cfg)
        for name in ("config.json", "history.json", "metrics.json"):  # originals, as reference/runner_<name>
            if name in files:  # (not reference/config.json: a folder holding a config.json reads as a run)
                _place(Path(files[name]), run.path / "reference" / f"runner_{name}")
        if csv_path:
            _place(csv_path, run.path / "reference" / "metrics.csv")
        found = write_scalars(run, csv_rows)
        if history:
            epochs = len(history["train_loss"])
            if found["lr_by_epoch"]:
                history["lr"] = [found["lr_by_epoch"].get(e, float("nan")) for e in range(epochs)]
            run.write_history(history)
        if last_metrics is not None:
            run.write_metrics(None, last_metrics)
            notes.append(
                "metrics.json: the reference scores its final-epoch weights, so they are 'last'; 'best' is None"
            )
        if model:
            _place(model, run.model_path)
            notes.append("model.pt is the reference LightningModule's state dict (keys model.generator.*)")
        for tag, ckpt in (("best", best_ckpt), ("last", last_ckpt)):
            if ckpt is not None:
                _place(ckpt, run.checkpoints_dir / f"{tag}.ckpt")
                files[f"checkpoints/{tag}.ckpt"] = str(ckpt.resolve())
        if model and capture:
            why = _capture(run, arm, cfg, out)
            if why:
                missing.append(why)
        epochs = len(history.get("train_loss", []))
        run.write_json("effective_config.json", _effective(cfg, ref_cfg, epochs))
        run.write_json(
            "imported.json",
            {
                "source": str(Path(src).resolve()),
                "arm": str(arm.resolve()),
                "reference_run": arch_dir.name,
                "imported": datetime.now(UTC).isoformat(timespec="seconds"),
                "files": files,
                "missing": missing,
                "unmapped": unmapped,
                "notes": notes,
                "read_only": True,
                "live_captures": False,
                "steps": found["last_step"] + 1,
            },
        )
        run.write_status(
            "finished",
            step=max(found["last_step"] + 1, 0),
            epoch=epochs,
            message=f"imported from {arm} (read-only; no live per-layer captures)",
        )
        if out.is_dir():
            out.rmdir()
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return RunDir(out)


def _effective(cfg: RunConfig, ref: dict, epochs: int) -> dict:
    """What the reference asked for, in fnodiag's effective_config layout (it recorded nothing effective)."""
    o = cfg.optim
    spec = OPTIMIZERS.get(o.name)  # the registry names the class and its hyperparameters
    group = {"lr": o.lr, **(jsonable(spec.torch_kwargs(o)) if spec else {"weight_decay": o.weight_decay})}
    return {
        "kind": "reference-import",
        "source": "the reference's config.json (requested values: the reference "
        "recorded no effective configuration; the CSV holds the realised LR)",
        "optimizer": {"class": spec.cls.__name__ if spec else o.name, "param_groups": [group]},
        "scheduler": {"name": cfg.schedule.name, "frozen": cfg.schedule.frozen, "requested": ref.get("scheduler")},
        "grad_clip": {
            "algorithm": cfg.clip.algorithm,
            "value": cfg.clip.value if cfg.clip.algorithm != "none" else None,
        },
        "generator": {"class": cfg.model.arch, "block_class": None, "spectral_layout": "reference"},
        "seed": cfg.train.seed,
        "max_epochs": cfg.train.epochs,
        "epochs_recorded": epochs,
        "batch_size": cfg.train.batch_size,
        "data": {"N": cfg.data.N},
        "capture": {"every": 0},
        "reference_quirks": reference_quirks(cfg),
    }
