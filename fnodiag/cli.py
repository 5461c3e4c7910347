"""``fnodiag`` command line: ``simulate``, ``train``, ``capture``, ``sweep``, ``summarize``, ``export`` (TensorBoard),
``serve`` (the dashboard).

Every configuration flag maps to one ``RunConfig`` field through the ``FLAGS`` table, so a flag
that parses is a setting that reaches the run (and shows in its ``config.json``). Precedence:
one list for every source (:func:`fnodiag.config.resolve`): defaults < ``--preset`` < ``--config FILE``
< sweep ``[shared]`` < sweep arm < flags (< a sweep run's seed). Bad input prints one line
``fnodiag <cmd>: error: ...`` and exits with status 2; a failure inside training is not bad input:
one line naming the run's ``train.log`` (which holds the traceback) and exit status 1.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

from fnodiag.config import PRESETS, ConfigError, RunConfig, resolve
from fnodiag.dashboard.serving import add_panel_options
from fnodiag.runs import states

# (flag, config path, type, help). Defaults shown in --help come from RunConfig().
DATA_FLAGS = [
    ("--N", "data.N", int, "diffraction pattern / patch size in pixels (32, 64 or 128)"),
    ("--object-size", "data.object_size", int, "side of each simulated object image in pixels"),
    ("--nimgs-train", "data.nimgs_train", int, "number of object images in the train split"),
    ("--nimgs-test", "data.nimgs_test", int, "number of object images in the test split"),
    ("--train-stride", "data.train_stride", int, "scan step of the train grid in pixels"),
    ("--test-stride", "data.test_stride", int, "scan step of the test grid in pixels (also the stitched window)"),
    ("--nphotons", "data.nphotons", float, "mean photons per diffraction pattern (Poisson noise level)"),
    ("--set-phi", "data.set_phi", "bool", "give the object a non-zero phase (π·tanh of the amplitude)"),
    ("--probe-npz", "data.probe_npz", str, "NPZ with a 'probeGuess' array to use instead of the ideal disk probe"),
]
MODEL_FLAGS = [
    ("--arch", "model.arch", str, "generator architecture"),
    (
        "--spectral-layout",
        "model.spectral_layout",
        str,
        "spectral mode layout (symmetric: ± rows; reference: one row block)",
    ),
    ("--blocks", "model.blocks", int, "encoder depth (number of spectral blocks before the bottleneck)"),
    ("--width", "model.width", int, "channels of the first encoder level"),
    ("--modes", "model.modes", int, "Fourier modes kept per axis (bottleneck uses modes // 2)"),
    ("--channel-cap", "model.channel_cap", int, "maximum channels of any encoder level (default: no cap)"),
    ("--layerscale-init", "model.layerscale_init", float, "initial LayerScale γ of stable/prenorm blocks"),
]
OPTIM_FLAGS = [
    ("--optimizer", "optim.name", str, "optimizer"),
    ("--lr", "optim.lr", float, "base learning rate"),
    ("--momentum", "optim.momentum", float, "SGD momentum in [0, 1)"),
    ("--nesterov", "optim.nesterov", "bool", "SGD Nesterov momentum (default: on when momentum > 0)"),
    ("--weight-decay", "optim.weight_decay", float, "weight decay (L2 for adam/sgd, decoupled for adamw)"),
    ("--beta1", "optim.beta1", float, "Adam/AdamW β1 in [0, 1)"),
    ("--beta2", "optim.beta2", float, "Adam/AdamW β2 in [0, 1)"),
    ("--scheduler", "schedule.name", str, "LR schedule"),
    ("--warmup-epochs", "schedule.warmup_epochs", int, "warmup_cosine: epochs of linear warmup from 0.1·lr"),
    ("--min-lr-ratio", "schedule.min_lr_ratio", float, "warmup_cosine: final LR as a fraction of lr"),
    ("--gamma", "schedule.gamma", float, "exponential: LR factor per epoch"),
    ("--step-size", "schedule.step_size", int, "step: epochs between LR steps"),
    ("--step-gamma", "schedule.step_gamma", float, "step: LR factor at each step (> 1 raises the LR)"),
    ("--plateau-factor", "schedule.plateau_factor", float, "plateau: LR factor on a plateau"),
    ("--plateau-patience", "schedule.plateau_patience", int, "plateau: epochs without improvement before reducing"),
    (
        "--frozen-schedule",
        "schedule.frozen",
        "bool",
        "reference quirk: build the schedule but never step it (the LR stays at its construction-time value)",
    ),
    ("--grad-clip", "clip.value", float, "clip threshold; 0 turns clipping off (algorithm defaults to norm)"),
    (
        "--grad-clip-algorithm",
        "clip.algorithm",
        str,
        "clipping: none, norm (global L2), value (elementwise), agc (unit-wise adaptive)",
    ),
]
RUN_FLAGS = [
    ("--epochs", "train.epochs", int, "training epochs"),
    (
        "--batch-size",
        "train.batch_size",
        int,
        "training batch size (partial last batches are dropped unless --keep-partial-batch)",
    ),
    (
        "--infer-batch-size",
        "train.infer_batch_size",
        int,
        "batch size for evaluation, and for validation under --val-batching infer",
    ),
    (
        "--val-batching",
        "train.val_batching",
        str,
        "validation batch size: train (the training batch size, partial last batch kept, as the reference), infer "
        "(--infer-batch-size) or auto (train under --forward-gain batch, else infer)",
    ),
    (
        "--keep-partial-batch",
        "train.keep_partial_batch",
        "bool",
        "reference quirk: keep the train loader's last partial batch "
        "(under --forward-gain batch it trains at its own gain)",
    ),
    ("--seed", "train.seed", int, "training seed (model init, shuffling); data do not depend on it"),
    ("--loss", "train.loss", str, "physics loss: mae (normalised amplitude MAE) or poisson (NLL)"),
    (
        "--forward-gain",
        "train.forward_gain",
        str,
        "reference quirk: 'batch' multiplies each prediction by the size of its batch; 'none' is correct physics",
    ),
    ("--capture-every", "train.capture_every", int, "live activation capture every k steps; 0 turns it off"),
    (
        "--frame-every",
        "train.frame_every",
        int,
        "live reconstruction frames (probe batch amplitude / phase) every M steps; 0 turns them off",
    ),
    ("--accelerator", "train.accelerator", str, "Lightning accelerator: auto, cpu, gpu, ..."),
    ("--devices", "train.devices", str, "Lightning devices: auto, a count, or ids"),
    ("--strategy", "train.strategy", str, "Lightning strategy: auto, ddp, ..."),
    ("--precision", "train.precision", str, "Lightning precision: 32-true, bf16-mixed, 16-mixed, ..."),
    ("--num-workers", "train.num_workers", int, "DataLoader worker processes"),
]


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line and exit with status 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def _add_flags(parser, table) -> None:
    from fnodiag.training.registries import CHOICES  # names come from the registries (torch, no Lightning)

    defaults = RunConfig().to_dict()
    for flag, path, kind, help_text in table:
        section, name = path.split(".")
        default = defaults[section][name]
        dest = path.replace(".", "__")
        if path in CHOICES:
            names = list(CHOICES[path])
            parser.add_argument(
                flag,
                dest=dest,
                type=kind,
                default=None,
                choices=names,
                metavar=flag.lstrip("-").upper().replace("-", "_"),
                help=f"{help_text}: {', '.join(names)} (default: {default})",
            )
        elif kind == "bool":
            parser.add_argument(
                flag,
                dest=dest,
                action=argparse.BooleanOptionalAction,
                default=None,
                help=f"{help_text} (default: {default})",
            )
        else:
            parser.add_argument(
                flag,
                dest=dest,
                type=kind,
                default=None,
                metavar=flag.lstrip("-").upper().replace("-", "_"),
                help=f"{help_text} (default: {default})",
            )


def _flag_overrides(args) -> dict:
    return {k.replace("__", "."): v for k, v in vars(args).items() if "__" in k and v is not None}


def resolve_config(args) -> RunConfig:
    """The parsed command line as a RunConfig, through :func:`fnodiag.config.resolve` (no rules of its own)."""
    from fnodiag.training.registries import check_names

    return check_names(
        resolve(
            preset=getattr(args, "preset", None),
            file=getattr(args, "config", None) or None,
            overrides=_flag_overrides(args),
        )
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="fnodiag", description="Train FNO/U-NO ptychography generators and diagnose their collapse.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("simulate", help="simulate (or reuse) a grid_lines dataset and print where it is")
    _add_flags(p, DATA_FLAGS)
    p.add_argument("--preset", choices=sorted(PRESETS), help="start from a preset's data settings")
    p.add_argument(
        "--out", default="datasets", help="dataset folder; the dataset lands in OUT/<key>/ (default: datasets)"
    )

    p = sub.add_parser("capture", help="per-layer activation statistics of a saved checkpoint, as JSON")
    p.add_argument(
        "--checkpoint",
        required=True,
        help="a run's checkpoints/best.ckpt or last.ckpt, its model.pt, or a generator state_dict file",
    )
    p.add_argument(
        "--architecture",
        dest="model__arch",
        default=None,
        help="generator architecture when the checkpoint has no saved run config (or to override it)",
    )
    _add_flags(p, [f for f in MODEL_FLAGS if f[0] != "--arch"])
    _add_flags(p, DATA_FLAGS)
    p.add_argument(
        "--input",
        help="NPZ with a 'diffraction' array (n, N, N) or (n, N, N, C); default: the run's "
        "dataset (simulated or cached from the data flags; for a reference-project "
        "checkpoint its arm folder's datasets/N<N>/gs<g>/<split>.npz when present)",
    )
    p.add_argument(
        "--split", choices=("test", "train"), default="test", help="dataset split when no --input (default: test)"
    )
    p.add_argument("--batch-size", type=int, default=1, help="samples per forward call (default: 1)")
    p.add_argument("--max-samples", type=int, default=1, help="use the first M samples (default: 1)")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda (default: cpu)")
    p.add_argument(
        "--cache-dir",
        help="dataset cache (default: the one the run trained on, recorded in its effective_config.json, "
        "else its runs folder's datasets/, else ./datasets)",
    )
    p.add_argument("--output", required=True, help="folder for the JSON report")
    p.add_argument(
        "--output-json-name",
        default="activation_report.json",
        help="report file name, so several captures share a folder (default: activation_report.json)",
    )
    p.add_argument(
        "--layer-names",
        choices=("fnodiag", "reference"),
        default="fnodiag",
        help="vocabulary of the report's layer names: fnodiag's (encoder.0, local, head) or the reference "
        "project's (encoder_blocks.0, local_conv, output_proj) for its analysis scripts (default: fnodiag)",
    )

    p = sub.add_parser("export-checkpoint", help="write a generator's weights in another project's state-dict layout")
    p.add_argument(
        "source",
        help="a run folder (uses checkpoints/<--weights>.ckpt), a .ckpt, a model.pt or a generator state_dict file",
    )
    p.add_argument(
        "--layout",
        choices=("reference",),
        default="reference",
        help="target layout: reference = a bare HybridUNOGenerator / StableHybridUNOGenerator "
        "state_dict() of the reference project (default: reference)",
    )
    p.add_argument("--output", required=True, help="file to write (refused if it exists, unless --force)")
    p.add_argument(
        "--weights",
        choices=("best", "last"),
        default="best",
        help="which checkpoint of a run folder to export (default: best)",
    )
    p.add_argument("--force", action="store_true", help="replace an existing --output file")
    p.add_argument(
        "--architecture",
        dest="model__arch",
        default=None,
        metavar="ARCH",
        help="generator architecture of a bare state dict without a saved run config",
    )
    _add_flags(p, [f for f in MODEL_FLAGS if f[0] != "--arch"])
    p.add_argument(
        "--N",
        dest="data__N",
        type=int,
        default=None,
        metavar="N",
        help="input patch size of a bare state dict without a saved run config (default: 64)",
    )

    p = sub.add_parser(
        "export", help="write a run's per-step scalars and per-layer statistics as TensorBoard event files"
    )
    p.add_argument(
        "run",
        help="a run folder (holding run.sqlite): the --out/<name> of fnodiag train, a sweep's "
        "<arm>-s<seed>, or an imported run",
    )
    p.add_argument(
        "--tensorboard",
        required=True,
        metavar="DIR",
        help="TensorBoard log folder; the events go to DIR/<run folder name>/ (tags scalars/<name> and "
        "<source>/<stat>/<layer>); existing files are kept",
    )

    p = sub.add_parser("sweep", help="run (or resume) a sweep of arms x seeds, capture and summarize it")
    p.add_argument("definition", help="a shipped definition (stage-a, quick, ...) or a sweep TOML file")
    p.add_argument("--arms", help="comma-separated arms to run (default: all)")
    p.add_argument("--seeds", help="comma-separated seeds to run (default: the definition's)")
    p.add_argument("--out", help="sweep folder (default: runs/<definition name>); running again resumes it")
    p.add_argument(
        "--executor",
        default="local",
        choices=("local", "ray"),
        help="where runs train: local (this machine) or ray (a Ray cluster; pip install 'fnodiag[ray]')",
    )
    p.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="local executor: runs trained at a time, each in its own process with cores/JOBS threads (default: 1)",
    )
    p.add_argument(
        "--cpus-per-run",
        type=int,
        default=None,
        help="CPU threads of each run (default: cores/JOBS locally, 1 per Ray task)",
    )
    p.add_argument(
        "--gpus-per-run",
        type=float,
        default=0.0,
        help="GPUs of each run: a fraction shares a device (0.25: four runs per GPU), 2: two GPUs (default: 0)",
    )
    p.add_argument(
        "--address",
        default=None,
        help="ray executor: the cluster address `ray start --head` printed (default: RAY_ADDRESS, else a local Ray)",
    )
    for table in (DATA_FLAGS, MODEL_FLAGS, OPTIM_FLAGS, RUN_FLAGS):
        _add_flags(p, table)

    p = sub.add_parser("summarize", help="(re)write summary.md / summary.json / plots of a sweep folder")
    p.add_argument(
        "folder",
        help="a sweep folder (the --out of fnodiag sweep), or a runs folder of single runs "
        "(fnodiag train / fnodiag import / fnodiag.LiveCapture), each run its own row",
    )

    p = sub.add_parser("import", help="open a reference project's arm output folder as a read-only fnodiag run")
    p.add_argument("source", help="the reference arm's --output-dir (holding runs/pinn_<arch>/ and lightning_logs/)")
    p.add_argument("--out", required=True, help="the new run folder, e.g. runs/stage_a_control (must not exist)")
    p.add_argument("--arch", help="which runs/pinn_<arch>/ when the folder holds several")
    p.add_argument("--no-capture", action="store_true", help="skip the capture of model.pt on the first test patch")

    p = sub.add_parser("train", help="train one run into OUT/<name>/")
    for table in (DATA_FLAGS, MODEL_FLAGS, OPTIM_FLAGS, RUN_FLAGS):
        _add_flags(p, table)
    p.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        help="stage-a: the seed's Stage A settings; quick: a ~2-minute CPU reduction",
    )
    p.add_argument("--config", help="JSON file of settings by section (e.g. a run's config.json); flags override it")
    p.add_argument("--out", default="runs", help="runs folder (default: runs)")
    p.add_argument("--name", help="run directory name (default: <arch>-<optimizer>-s<seed>-<time>)")
    p.add_argument(
        "--resume",
        metavar="RUN_DIR",
        help="continue an interrupted, failed or killed run from its checkpoints/last.ckpt with its own "
        "config.json (only --cache-dir and --no-progress may be added); a finished run is left as is",
    )
    p.add_argument("--cache-dir", help="dataset cache folder (default: OUT/datasets)")
    p.add_argument("--no-progress", action="store_true", help="hide Lightning's progress bar and model summary")

    p = sub.add_parser(
        "serve",
        help="serve the dashboard over a runs folder (Panel's server; open http://ADDRESS:PORT/app)",
        description="Serve the dashboard over a runs folder, as `panel serve app` does in a checkout. Serving "
        "other machines (an --address other than loopback) needs --basic-auth or --oauth-provider "
        "(or FNODIAG_ALLOW_REMOTE=1 when authentication is done elsewhere).",
    )
    p.add_argument(
        "runs",
        nargs="?",
        default=None,
        metavar="RUNS",
        help="the runs folder (default: $FNODIAG_RUNS, else ./runs); nothing outside it is opened",
    )
    p.add_argument("--port", type=int, default=5006, help="port to listen on (default: 5006; 0 picks a free one)")
    p.add_argument(
        "--address",
        default="127.0.0.1",
        help="address to listen on (default: 127.0.0.1, this machine only; 0.0.0.0 serves other machines)",
    )
    p.add_argument("--read-only", action="store_true", help="no Launch tab: nothing can be started or stopped")
    add_panel_options(p)
    return parser


def _cmd_simulate(args) -> int:
    from fnodiag.ptycho.simulate import dataset_key, load_or_simulate
    from fnodiag.runs import ensure_writable_dir

    cfg = resolve_config(args).data
    data = load_or_simulate(cfg, ensure_writable_dir(args.out, "--out folder"))
    where = Path(args.out) / dataset_key(cfg)
    print(
        f"dataset {data.key}: {len(data.train.diffraction)} train / {len(data.test.diffraction)} test patches "
        f"of {cfg.N}x{cfg.N}; intensity scale {data.intensity_scale:.3f}"
    )
    if data.fingerprint:
        print("constant-output fingerprint: " + ", ".join(f"{k} {v:.4f}" for k, v in data.fingerprint.items()))
    print(where)
    return 0


def _resume_target(args):
    """``(RunConfig, out, name)`` of the run ``--resume RUN_DIR`` continues, or None when it is done.

    Refuses (ConfigError) setting flags, a folder without ``config.json`` and a run still running.
    """
    from fnodiag.runs import RunDir, pid_alive
    from fnodiag.runs.liveness import HOST
    from fnodiag.training.run import is_rank_zero

    given = [f for f, p, *_ in DATA_FLAGS + MODEL_FLAGS + OPTIM_FLAGS + RUN_FLAGS if p in _flag_overrides(args)]
    given += [f for f in ("--preset", "--config", "--name") if getattr(args, f[2:])]
    given += ["--out"] if args.out != "runs" else []
    if given:
        raise ConfigError(
            f"--resume continues a run with its own config.json; drop {', '.join(given)} "
            "(to train other settings, start a new run with --config RUN_DIR/config.json and a new --name)"
        )
    run = RunDir(args.resume)
    if not run.config_path.is_file():
        raise ConfigError(
            f"--resume {args.resume!r} is not a run directory (no config.json); pass the folder a run "
            "was trained into, e.g. runs/<name>"
        )
    if not is_rank_zero():  # a DDP worker Lightning started by re-running this command: rank 0 checked
        path = run.path.resolve()
        return run.read_config(), path.parent, path.name
    raw = run.read_status(raw=True) or {}
    status = run.read_status() or {}
    if status.get("state") == states.RUNNING or (
        raw.get("state") == states.RUNNING
        and raw.get("host") == HOST
        and raw.get("pid") is not None
        and pid_alive(raw["pid"])
    ):
        raise ConfigError(
            f"run {args.resume!r} is still running (pid {raw.get('pid')} on {raw.get('host')}); stop it before resuming"
        )
    if status.get("state") in states.DONE:
        print(f"run {args.resume!r} already {status['state']} ({status.get('message', '')}); nothing to resume")
        return None
    path = run.path.resolve()
    return run.read_config(), path.parent, path.name


def _cmd_train(args) -> int:
    from fnodiag.training.run import train

    if args.resume:
        target = _resume_target(args)
        if target is None:
            return 0
        cfg, out, name = target
        run = train(cfg, out, name=name, cache_dir=args.cache_dir, progress=not args.no_progress, resume=True)
    else:
        cfg = resolve_config(args)
        run = train(cfg, args.out, name=args.name, cache_dir=args.cache_dir, progress=not args.no_progress)
    status = run.read_status()
    metrics = run.read_json("metrics.json", default={}) or {}
    for tag in ("best", "last"):
        m = metrics.get(tag)
        if m:
            print(
                f"{tag:>4}: amp_ssim {m['amp_ssim']:.4f}  phase_ssim {m['phase_ssim']:.4f}  amp_mae {m['amp_mae']:.4f}"
            )
    print(f"run {status['state']}: {run.path}")
    return 0


def _cmd_capture(args) -> int:
    import numpy as np

    from fnodiag.diagnostics.capture import (
        CaptureError,
        capture,
        load_generator,
        read_inputs,
        summary,
        summary_lines,
        write_report,
    )
    from fnodiag.diagnostics.checkpoint import reference_dataset
    from fnodiag.ptycho.simulate import load_or_simulate
    from fnodiag.runs import RunDir, ensure_writable_dir

    if args.batch_size < 1 or args.max_samples < 1:
        raise ConfigError("--batch-size and --max-samples must be >= 1")
    ensure_writable_dir(args.output, "--output folder")
    overrides = _flag_overrides(args)
    x = read_inputs(args.input) if args.input else None
    generator, cfg, info = load_generator(args.checkpoint, overrides, N=None if x is None else x.shape[-1])
    own = info["layout"] == "fnodiag"  # else a reference-project checkpoint: never write into its folders
    if x is None and not own:
        found = reference_dataset(args.checkpoint, cfg.data.N, cfg.model.in_channels, args.split)
        if found is not None:
            x = read_inputs(found)
            info["input"] = f"{found} (the reference run's own {args.split} split)"
    if x is None:
        ckpt = Path(args.checkpoint).resolve()
        run_root = ckpt.parent.parent if ckpt.parent.name == "checkpoints" else ckpt.parent
        beside = own and (run_root / "config.json").is_file()
        cache = args.cache_dir or (RunDir(run_root).dataset_cache() if beside else "datasets")
        data = load_or_simulate(cfg.data, ensure_writable_dir(cache, "dataset cache folder"))
        x = getattr(data, args.split).diffraction[:, None]
        info["input"] = f"dataset {data.key} ({args.split} split)"
    elif args.input:
        info["input"] = str(args.input)
    if x.shape[-1] != cfg.data.N:
        raise CaptureError(
            f"input patches are {x.shape[-1]}x{x.shape[-1]} but the generator was built for N={cfg.data.N}; "
            "pass --N or matching --input"
        )
    if x.shape[1] != cfg.model.in_channels:
        raise CaptureError(
            f"input has {x.shape[1]} channel(s) but the generator takes {cfg.model.in_channels} "
            "(gridsize**2); pass an --input of matching gridsize"
        )
    x = np.ascontiguousarray(x[: args.max_samples], dtype=np.float32)
    report = capture(generator, x, batch_size=args.batch_size, device=args.device)
    report = {"summary": summary(generator, cfg, info, x, args.batch_size, args.device), **report}
    if args.layer_names == "reference":
        from fnodiag.models.reference_layout import rename_report

        report = rename_report(report)
    for line in summary_lines(report["summary"]):
        print(line)
    print(write_report(report, args.output, args.output_json_name))
    return 0


def _cmd_export_checkpoint(args) -> int:
    from fnodiag.interop.checkpoint_export import export_checkpoint

    info = export_checkpoint(
        args.source,
        args.output,
        layout=args.layout,
        weights=args.weights,
        overrides=_flag_overrides(args),
        force=args.force,
    )
    print(
        f"exported {info['architecture']} (blocks {info['blocks']}, width {info['width']}, modes {info['modes']}, "
        f"{info['parameters']:,} parameters, {info['tensors']} tensors) from {info['source']} "
        f"in the {info['layout']} layout"
    )
    print(info["output"])
    return 0


def _cmd_export(args) -> int:
    from fnodiag.interop.tensorboard import export_tensorboard

    info = export_tensorboard(args.run, args.tensorboard)
    print(
        f"wrote {info['scalars']} scalar values and {info['layer_values']} per-layer values "
        f"({len(info['tags'])} tags) as TensorBoard events; view with: tensorboard --logdir {args.tensorboard}"
    )
    print(info["folder"])
    return 0


def _cmd_sweep(args) -> int:
    from fnodiag.sweeps.runner import load_definition, run_sweep

    defn = load_definition(args.definition)
    arms = [a.strip() for a in args.arms.split(",")] if args.arms else None
    try:
        seeds = [int(x) for x in args.seeds.split(",")] if args.seeds else None
    except ValueError:
        raise ConfigError(f"--seeds {args.seeds!r} must be comma-separated integers") from None
    overrides = _flag_overrides(args)
    if "train.seed" in overrides:  # --seed S of a sweep: the one seed to run (as --seeds S)
        if seeds is not None and seeds != [overrides["train.seed"]]:
            raise ConfigError("give a sweep's seeds with --seeds only (--seed S means --seeds S)")
        seeds = [overrides["train.seed"]]
    out = run_sweep(
        defn,
        args.out or Path("runs") / defn.name,
        arms=arms,
        seeds=seeds,
        overrides=overrides,
        executor=args.executor,
        jobs=args.jobs,
        cpus_per_run=args.cpus_per_run,
        gpus_per_run=args.gpus_per_run,
        address=args.address,
    )
    print((out / "summary.md").read_text())
    print(f"sweep folder: {out}")
    return 0


def _cmd_summarize(args) -> int:
    from fnodiag.sweeps.summary import write_summary

    write_summary(args.folder)
    print((Path(args.folder) / "summary.md").read_text())
    return 0


def _cmd_serve(args) -> int:
    runs = Path(args.runs or os.environ.get("FNODIAG_RUNS", "runs")).expanduser()
    if runs.exists() and not runs.is_dir():
        raise ConfigError(f"{str(runs)!r} is not a folder; pass the runs folder (the --out of fnodiag train / sweep)")
    if not 0 <= args.port <= 65535:
        raise ConfigError(f"--port {args.port} must be between 0 and 65535")
    from fnodiag.dashboard.server import serve  # Panel: loaded only to serve, after the checks above

    serve(runs, args)
    return 0


def _cmd_import(args) -> int:
    from fnodiag.interop.reference_import import import_reference

    run = import_reference(args.source, args.out, arch=args.arch, capture=not args.no_capture)
    info = run.read_json("imported.json")
    print(
        f"imported {info['reference_run']} from {info['arm']}: {info['steps']} logged steps, "
        f"{len(run.read_history().get('train_loss', []))} epochs"
    )
    for item in info["missing"]:
        print(f"  missing: {item}")
    print(run.path)
    return 0


COMMANDS = {
    "import": _cmd_import,
    "simulate": _cmd_simulate,
    "train": _cmd_train,
    "capture": _cmd_capture,
    "sweep": _cmd_sweep,
    "summarize": _cmd_summarize,
    "export-checkpoint": _cmd_export_checkpoint,
    "export": _cmd_export,
    "serve": _cmd_serve,
}


def main(argv: list[str] | None = None) -> int:
    # A process started in the background by a non-interactive shell inherits SIGINT ignored;
    # restore Python's handler so Ctrl-C or a dashboard's stop (SIGINT) always interrupts a run
    # gracefully (status "interrupted", checkpoints kept).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    from fnodiag.training.errors import TrainingError

    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except TrainingError as exc:  # internal: exit 1, the traceback is in the run's train.log and status
        print(f"fnodiag {args.command}: {exc}", file=sys.stderr)
        return 1
    except (ConfigError, ValueError, FileNotFoundError, FileExistsError, PermissionError) as exc:
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        print(f"fnodiag {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
