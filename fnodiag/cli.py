"""``fnodiag`` command line: ``simulate``, ``train``, ``capture``, ``sweep``, ``summarize``, ``export`` (TensorBoard),
``diagnose`` (a run's findings), ``serve`` (the dashboard).

Every configuration flag maps to one setting through one table,
:func:`fnodiag.training.registries.flag_table` (the ``RunConfig`` fields' rows kept in
:mod:`fnodiag.config` and one row per setting a registered optimizer declares), so a flag that
parses is a setting that reaches the run (and shows in its ``config.json``). Precedence:
one list for every source (:func:`fnodiag.config.resolve`): defaults < ``--preset`` < ``--config FILE``
< sweep ``[shared]`` < sweep arm < flags (< a sweep run's seed). Bad input prints one line
``fnodiag <cmd>: error: ...`` and exits with status 2; a failure inside training is not bad input:
one line naming the run's ``train.log`` (which holds the traceback) and exit status 1.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from pathlib import Path

from fnodiag.analysis.findings import finding_lines, findings_from_run, write_findings
from fnodiag.config import PRESETS, ConfigError, RunConfig, resolve
from fnodiag.dashboard.server import serve
from fnodiag.dashboard.serving import add_panel_options
from fnodiag.diagnostics.capture import capture_checkpoint, summary_lines, write_report
from fnodiag.diagnostics.run_findings import relative
from fnodiag.interop.checkpoint_export import export_checkpoint
from fnodiag.interop.reference_import import import_reference
from fnodiag.interop.tensorboard import export_tensorboard
from fnodiag.models.reference_layout import rename_report
from fnodiag.ptycho.simulate import dataset_key, load_or_simulate
from fnodiag.runs import RunDir, ensure_writable_dir, pid_alive, states
from fnodiag.runs.liveness import HOST
from fnodiag.runs.lock import RunBusy
from fnodiag.sweeps.definition import load_definition
from fnodiag.sweeps.runner import run_sweep
from fnodiag.sweeps.summary import write_summary
from fnodiag.training.errors import TrainingError
from fnodiag.training.registries import CHOICES, check_names, flag_default, flag_table  # torch, never Lightning
from fnodiag.training.run import is_rank_zero, train


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line and exit with status 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def _add_flags(parser, table) -> None:
    """One argparse option per row of ``table`` (rows of :func:`fnodiag.training.registries.flag_table`)."""
    for flag, path, kind, help_text in table:
        dest = path.replace(".", "__")
        if "(default" not in help_text:
            help_text = f"{help_text} (default: {flag_default(path)})"
        if path in CHOICES:
            names = list(CHOICES[path])
            parser.add_argument(
                flag,
                dest=dest,
                type=kind,
                default=None,
                choices=names,
                metavar=flag.lstrip("-").upper().replace("-", "_"),
                help=help_text.replace(" (default", f": {', '.join(names)} (default", 1),
            )
        elif kind == "bool":
            parser.add_argument(flag, dest=dest, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        else:
            parser.add_argument(
                flag,
                dest=dest,
                type=kind,
                default=None,
                metavar=flag.lstrip("-").upper().replace("-", "_"),
                help=help_text,
            )


def _section(table, *sections: str, leave_out: tuple[str, ...] = ()) -> list:
    """The rows of ``table`` that set a field of one of ``sections`` (e.g. ``"data"``), but for flags ``leave_out``."""
    return [r for r in table if r.path.partition(".")[0] in sections and r.flag not in leave_out]


def _flag_overrides(args) -> dict:
    return {k.replace("__", "."): v for k, v in vars(args).items() if "__" in k and v is not None}


def resolve_config(args) -> RunConfig:
    """The parsed command line as a RunConfig, through :func:`fnodiag.config.resolve` (no rules of its own)."""
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
    table = flag_table()  # read now: an entry added to a registry is a flag at once

    p = sub.add_parser("simulate", help="simulate (or reuse) a grid_lines dataset and print where it is")
    _add_flags(p, _section(table, "data"))
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
        "--model",
        default=None,
        metavar="IMPORT:CALLABLE",
        help="anyone's model: a module path (neuralop.models:FNO) or a file (path/models.py:build) and the "
        "class or function that builds it; the checkpoint's state dict (Lightning prefix detected) is loaded "
        "into it strictly and --input is required (default: fnodiag's generators)",
    )
    p.add_argument(
        "--model-kwargs",
        default=None,
        metavar="JSON",
        help='keywords of --model\'s callable as a JSON object, e.g. \'{"n_modes": [8, 8], "hidden_channels": 24}\'',
    )
    p.add_argument(
        "--architecture",
        dest="model__arch",
        default=None,
        help="generator architecture when the checkpoint has no saved run config (or to override it)",
    )
    _add_flags(p, _section(table, "model", leave_out=("--arch",)))
    _add_flags(p, _section(table, "data"))
    p.add_argument(
        "--input",
        help="NPZ with a 'diffraction' array (n, N, N) or (n, N, N, C); default: the run's "
        "dataset (simulated or cached from the data flags; for a reference-project "
        "checkpoint its arm folder's datasets/N<N>/gs<g>/<split>.npz when present). With --model: "
        "(n, C, ...) samples the model takes, channel first: .npy, .npz (array x, or its only one) or .pt",
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
    _add_flags(p, _section(table, "model", leave_out=("--arch",)))
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
    p.add_argument(
        "--storage",
        default=None,
        metavar="PATH_OR_URL",
        help="ray executor: where checkpoints, model.pt, captures and datasets travel between nodes: a folder every "
        "node mounts, or an fsspec URL such as s3://bucket/prefix (default: the --out folder, which must then be "
        "shared); run stores stay in --out on the driver's disk",
    )
    _add_flags(p, table)

    p = sub.add_parser("summarize", help="(re)write summary.md / summary.json / plots of a sweep folder")
    p.add_argument(
        "folder",
        help="a sweep folder (the --out of fnodiag sweep), or a runs folder of single runs "
        "(fnodiag train / fnodiag import / fnodiag.LiveCapture), each run its own row",
    )

    p = sub.add_parser(
        "diagnose",
        help="what went wrong in a run, where and when: its findings, ranked, each with a link to its evidence",
        description="Print each run's findings (ranked: critical, error, warning; then earliest first) and write "
        "them to the run's findings.json. Works for fnodiag's runs, LiveCapture / watch runs and imported runs.",
    )
    p.add_argument("runs", nargs="+", metavar="RUN", help="run folders (each holding config.json)")
    p.add_argument("--json", action="store_true", help="print JSON: [{run, findings: [...]}, ...] instead of text")
    p.add_argument(
        "--root",
        help="the folder the dashboard serves (`fnodiag serve ROOT`): links name runs relative to it "
        "(default: each run's parent folder)",
    )
    p.add_argument("--no-write", action="store_true", help="print only; leave each run's findings.json as it is")

    p = sub.add_parser("import", help="open a reference project's arm output folder as a read-only fnodiag run")
    p.add_argument("source", help="the reference arm's --output-dir (holding runs/pinn_<arch>/ and lightning_logs/)")
    p.add_argument("--out", required=True, help="the new run folder, e.g. runs/stage_a_control (must not exist)")
    p.add_argument("--arch", help="which runs/pinn_<arch>/ when the folder holds several")
    p.add_argument("--no-capture", action="store_true", help="skip the capture of model.pt on the first test patch")

    p = sub.add_parser("train", help="train one run into OUT/<name>/")
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
    given = [f for f, p, *_ in flag_table() if p in _flag_overrides(args)]
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
    if args.batch_size < 1 or args.max_samples < 1:
        raise ConfigError("--batch-size and --max-samples must be >= 1")
    overrides, kwargs = _flag_overrides(args), None
    if args.model_kwargs is not None and args.model is None:
        raise ConfigError("--model-kwargs needs --model IMPORT:CALLABLE (the model they build)")
    if args.model is not None:
        if overrides:
            flags = ", ".join(sorted(overrides))
            raise ConfigError(f"--model builds the model itself: drop the generator / data flags ({flags})")
        kwargs = _model_kwargs(args.model_kwargs)
    ensure_writable_dir(args.output, "--output folder")
    report = capture_checkpoint(
        args.checkpoint,
        model=args.model,
        model_kwargs=kwargs,
        inputs=args.input,
        overrides=overrides,
        split=args.split,
        max_samples=args.max_samples,
        batch_size=args.batch_size,
        device=args.device,
        cache_dir=args.cache_dir,
    )
    if args.layer_names == "reference":
        report = rename_report(report)
    for line in summary_lines(report["summary"]):
        print(line)
    print(write_report(report, args.output, args.output_json_name))
    return 0


def _model_kwargs(text: str | None) -> dict:
    """``--model-kwargs`` as a dict (a JSON object)."""
    if text is None:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"--model-kwargs is not JSON ({exc.msg} at column {exc.colno}); pass an object like '{{\"a\": 1}}'"
        ) from None
    if not isinstance(value, dict):
        raise ConfigError(f"--model-kwargs must be a JSON object of keywords, got {type(value).__name__}")
    return value


def _cmd_export_checkpoint(args) -> int:
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
    info = export_tensorboard(args.run, args.tensorboard)
    print(
        f"wrote {info['scalars']} scalar values and {info['layer_values']} per-layer values "
        f"({len(info['tags'])} tags) as TensorBoard events; view with: tensorboard --logdir {args.tensorboard}"
    )
    print(info["folder"])
    return 0


def _cmd_sweep(args) -> int:
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
        storage=args.storage,
    )
    print((out / "summary.md").read_text())
    print(f"sweep folder: {out}")
    return 0


def _cmd_summarize(args) -> int:
    write_summary(args.folder)
    print((Path(args.folder) / "summary.md").read_text())
    return 0


def _cmd_diagnose(args) -> int:
    runs = [RunDir(Path(r)) for r in args.runs]
    if args.root is not None and not Path(args.root).is_dir():
        raise ConfigError(f"--root {args.root!r} is not a folder; pass the folder the dashboard serves")
    for run in runs:  # every run checked before anything is written
        if not run.path.is_dir():
            raise FileNotFoundError(f"run folder {str(run.path)!r} does not exist; pass a run directory")
        if not run.config_path.is_file():
            raise ConfigError(f"{str(run.path)!r} is not a run folder (no config.json); pass a run directory")
        relative(run, args.root)  # a run outside --root: ValueError, one line
    found = {run: (findings_from_run if args.no_write else write_findings)(run, root=args.root) for run in runs}
    if args.json:
        print(json.dumps([{"run": str(r.path), "findings": [f.to_dict() for f in fs]} for r, fs in found.items()]))
        return 0
    for run, fs in found.items():
        print(f"{run.path}: {len(fs)} finding{'s' if len(fs) != 1 else ''}")
        for line in finding_lines(fs):
            print(line)
    return 0


def _cmd_serve(args) -> int:
    runs = Path(args.runs or os.environ.get("FNODIAG_RUNS", "runs")).expanduser()
    if runs.exists() and not runs.is_dir():
        raise ConfigError(f"{str(runs)!r} is not a folder; pass the runs folder (the --out of fnodiag train / sweep)")
    if not 0 <= args.port <= 65535:
        raise ConfigError(f"--port {args.port} must be between 0 and 65535")
    serve(runs, args)
    return 0


def _cmd_import(args) -> int:
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
    "diagnose": _cmd_diagnose,
}


def main(argv: list[str] | None = None) -> int:
    # A process started in the background by a non-interactive shell inherits SIGINT ignored;
    # restore Python's handler so Ctrl-C or a dashboard's stop (SIGINT) always interrupts a run
    # gracefully (status "interrupted", checkpoints kept).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except TrainingError as exc:  # internal: exit 1, the traceback is in the run's train.log and status
        print(f"fnodiag {args.command}: {exc}", file=sys.stderr)
        return 1
    except (ConfigError, ValueError, FileNotFoundError, FileExistsError, PermissionError, RunBusy) as exc:
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        print(f"fnodiag {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
