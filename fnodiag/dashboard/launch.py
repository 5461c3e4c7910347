"""Start and stop training runs from the dashboard: each is a separate ``fnodiag`` process.

The app never imports Lightning: :class:`Launcher` runs ``[sys.executable, "-m", "fnodiag.cli",
"train", ...]`` with ``--out`` inside the runs folder, or, for one arm x seed of a sweep
definition (:meth:`Launcher.start_sweep`), ``fnodiag sweep DEFINITION --arms ARM --seeds SEED
--out <runs>/<definition name>`` (the sweep's folder layout: ``sweep.json``, ``<arm>-s<seed>/``,
``datasets/``). It follows the run's ``status.json`` and stops it with SIGINT (the trainer then
records status ``interrupted``; the sweep process passes the interrupt on). Processes are kept
per server process, so every browser session sees (and can stop) the runs any session started.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import panel as pn
import param
from panel.viewable import Viewer

from fnodiag.dashboard.catalog import inside
from fnodiag.dashboard.store import DashboardStore
from fnodiag.runs import RunDir

DEMO_ARGS = ["--preset", "quick", "--epochs", "4"]


SAFE_NAME = r"[A-Za-z0-9._-]+"


@dataclass
class Launched:
    """One started process and the run directory it writes."""

    name: str
    run: RunDir
    process: subprocess.Popen
    log: Path
    started: float = field(default_factory=time.time)
    command: tuple[str, ...] = ()

    def state(self) -> str:
        status = self.run.read_status() or {}
        if self.process.poll() is None:
            return status.get("state", "starting")
        return status.get("state") or f"exited ({self.process.returncode})"

    def log_tail(self, lines: int = 3) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


class Launcher:
    """Starts ``fnodiag train`` processes writing into ``root``."""

    _lock = threading.Lock()

    def __init__(self, root: str | Path):
        self.root = Path(root).resolve()
        self.runs: dict[str, Launched] = {}

    def command(self, name: str, args: list[str]) -> list[str]:
        return [
            sys.executable,
            "-m",
            "fnodiag.cli",
            "train",
            *args,
            "--out",
            str(self.root),
            "--name",
            name,
            "--no-progress",
        ]

    def start(self, args: list[str], name: str | None = None) -> Launched:
        """Start a run; ``args`` are ``fnodiag train`` flags (without ``--out`` / ``--name``)."""
        if any(a in ("--out", "--name", "--cache-dir") for a in args):
            raise ValueError("the dashboard sets --out, --name and --cache-dir itself")
        name = name or f"dash-{time.strftime('%Y%m%d-%H%M%S')}"
        if not re.fullmatch(SAFE_NAME, name):
            raise ValueError(f"run name {name!r} may only hold letters, digits, '.', '_' and '-'")
        run_path = inside(self.root, self.root / name)
        with self._lock:
            if run_path.exists() and any(run_path.iterdir()):
                raise ValueError(f"run {name!r} already exists in {self.root}; choose another name")
            return self._spawn(name, run_path, self.command(name, args))

    def _spawn(self, key: str, run_path: Path, command: list[str]) -> Launched:
        """Start ``command`` (lock held) and record it under ``key``."""
        if key in self.runs and self.runs[key].process.poll() is None:
            raise ValueError(f"run {key!r} is already running")
        self.root.mkdir(parents=True, exist_ok=True)
        log = Path(tempfile.mkstemp(prefix=f"fnodiag-{key.replace('/', '_')}-", suffix=".log")[1])
        with open(log, "w") as fh:
            proc = subprocess.Popen(
                command, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
            )
        launched = self.runs[key] = Launched(key, RunDir(run_path), proc, log, command=tuple(command))
        return launched

    def sweep_command(self, definition: str, out: Path, arm: str, seed: int, args: list[str]) -> list[str]:
        return [
            sys.executable,
            "-m",
            "fnodiag.cli",
            "sweep",
            definition,
            "--arms",
            arm,
            "--seeds",
            str(seed),
            "--out",
            str(out),
            *args,
        ]

    def start_sweep(self, definition: str | Path, arm: str, seed: int, args: list[str] | None = None) -> Launched:
        """Train one ``arm`` x ``seed`` of a sweep definition into ``<root>/<definition name>/<arm>-s<seed>``.

        Parameters
        ----------
        definition : a shipped definition name (``fnodiag.sweeps.definition.shipped_definitions()``) or a TOML path
        arm, seed : one arm of the definition and a seed (any integer; the definition's are offered)
        args : extra ``fnodiag sweep`` flags, e.g. ``["--epochs", "4"]`` (not ``--out`` / ``--arms`` / ``--seeds``)

        Returns
        -------
        Launched, keyed ``"<definition name>/<arm>-s<seed>"``. A finished run of the same arm and
        seed is skipped by the sweep (it resumes an interrupted one from its checkpoint).
        """
        from fnodiag.config import ConfigError
        from fnodiag.sweeps.definition import load_definition, run_name

        args = list(args or [])
        if any(a.split("=")[0] in ("--out", "--arms", "--seeds") for a in args):
            raise ValueError("the dashboard sets --out, --arms and --seeds itself")
        try:
            defn = load_definition(definition)
            if arm not in defn.arms:
                raise ValueError(f"sweep {defn.name!r} has no arm {arm!r}; arms: {', '.join(defn.arms)}")
        except ConfigError as exc:
            raise ValueError(str(exc).splitlines()[0]) from None
        if not re.fullmatch(SAFE_NAME, defn.name) or not re.fullmatch(SAFE_NAME, arm):
            raise ValueError(
                f"sweep {defn.name!r} / arm {arm!r}: names may only hold letters, digits, '.', '_' "
                "and '-' to become folders"
            )
        seed = int(seed)
        out = inside(self.root, self.root / defn.name)
        run_path = inside(self.root, out / run_name(arm, seed))
        # a shipped name stays a name (resolved by fnodiag); a file is passed by absolute path
        spec = str(Path(definition).resolve()) if Path(definition).is_file() else str(definition)
        with self._lock:
            return self._spawn(
                f"{defn.name}/{run_name(arm, seed)}", run_path, self.sweep_command(spec, out, arm, seed, args)
            )

    def stop(self, name: str) -> None:
        """SIGINT the run's process (a clean stop: status ``interrupted``, checkpoints kept)."""
        launched = self.runs.get(name)
        if launched is not None and launched.process.poll() is None:
            launched.process.send_signal(signal.SIGINT)

    def stop_all(self) -> None:
        for name in list(self.runs):
            self.stop(name)


_LAUNCHERS: dict[Path, Launcher] = {}


def launcher_for(root: str | Path) -> Launcher:
    """The server-wide :class:`Launcher` of a runs folder (shared by all sessions)."""
    key = Path(root).resolve()
    if key not in _LAUNCHERS:
        _LAUNCHERS[key] = Launcher(key)
    return _LAUNCHERS[key]


def exact(x: float) -> str:
    """A float as the shortest text that parses back to the same value (``repr``; ``:g`` keeps 6 digits)."""
    return repr(float(x))


def optimizer_args(
    optimizer: str,
    lr: float,
    momentum: float,
    weight_decay: float,
    grad_clip: float,
    scheduler: str,
    epochs: int,
    seed: int,
    preset: str,
    arch: str | None = None,
) -> list[str]:
    """``fnodiag train`` flags for chosen settings; every number passes exactly (``float(flag) == value``).

    The flags are resolved like any command line (:func:`fnodiag.config.resolve`): the form has
    no rules of its own (``--grad-clip 0`` is off, otherwise norm, by the configuration's rule).
    """
    args = [
        "--preset",
        preset,
        *(["--arch", arch] if arch else []),
        "--optimizer",
        optimizer,
        "--lr",
        exact(lr),
        "--weight-decay",
        exact(weight_decay),
        "--grad-clip",
        exact(grad_clip),
        "--scheduler",
        scheduler,
        "--epochs",
        str(epochs),
        "--seed",
        str(seed),
    ]
    if optimizer == "sgd":
        args += ["--momentum", exact(momentum)]
    return args


def _form_choices() -> dict[str, list[str]]:
    """The form's choices, read from the registries: a new architecture, optimizer, schedule or preset
    shows up in the form without touching it (torch is imported, never Lightning)."""
    from fnodiag.config import PRESETS
    from fnodiag.training.registries import choices

    return {
        "arch": choices("model.arch"),
        "optimizer": choices("optim.name"),
        "scheduler": choices("schedule.name"),
        "preset": list(PRESETS),
    }


class LaunchView(Viewer):
    """Start an arm with chosen optimizer settings (or the quick demo), follow and stop it."""

    store = param.ClassSelector(class_=DashboardStore)
    arch = param.Selector(default="hybrid", objects=["hybrid"], label="Architecture")
    optimizer = param.Selector(default="adam", objects=["adam", "adamw", "sgd"])
    lr = param.Number(default=2e-3, bounds=(0, None), label="Learning rate")
    momentum = param.Number(default=0.9, bounds=(0, 0.999), label="SGD momentum")
    weight_decay = param.Number(default=0.0, bounds=(0, None), label="Weight decay")
    grad_clip = param.Number(default=0.0, bounds=(0, None), label="Grad clip (0 = off)")
    scheduler = param.Selector(default="warmup_cosine", objects=["constant", "warmup_cosine", "exponential", "plateau"])
    epochs = param.Integer(default=24, bounds=(1, 10_000))
    seed = param.Integer(default=20260128)
    preset = param.Selector(default="quick", objects=["quick"])
    run_name = param.String(default="", label="Run name (optional)")
    definition = param.Selector(default=None, objects=[], label="Sweep definition")
    definition_path = param.String(default="", label="... or a definition TOML path")
    arm = param.Selector(default=None, objects=[], label="Arm")
    sweep_seed = param.Selector(default=None, objects=[], label="Seed")
    sweep_epochs = param.Integer(default=0, bounds=(0, 10_000), label="Epochs (0 = the definition's)")
    may_control = param.Callable(
        default=None,
        precedence=-1,
        doc="Called when Start / Stop is clicked: may this session start or stop runs? "
        "(None: yes). The server-side check, whatever the page shows.",
    )
    title = "Launch"

    def __init__(self, **params):
        super().__init__(**params)
        for name, objects in _form_choices().items():
            self.param[name].objects = objects
        self.launcher = launcher_for(self.store.root)
        self.start_button = pn.widgets.Button(label="Start run", color="primary")
        self.start_button.on_click(lambda _: self.start(self.form_args(), self.run_name or None))
        self.demo_button = pn.widgets.Button(label="Quick demo run", color="success")
        self.demo_button.on_click(lambda _: self.start(DEMO_ARGS))
        self.sweep_button = pn.widgets.Button(label="Start arm", color="primary")
        self.sweep_button.on_click(lambda _: self.start_arm())
        self.feedback = pn.pane.Markdown("", sizing_mode="stretch_width", styles={"overflow-wrap": "anywhere"})
        self.table = pn.Column()
        self._rows: dict[str, tuple] = {}  # run key -> (text pane, Stop button), kept across refreshes
        self._shown: list[str] = []  # the keys the table shows, in order
        from fnodiag.sweeps.definition import shipped_definitions  # no Lightning at import

        names = shipped_definitions()
        self.param.definition.objects = names
        self.definition = "quick" if "quick" in names else (names[0] if names else None)
        self._on_definition()

    def form_args(self) -> list[str]:
        """The ``fnodiag train`` flags of the form's settings."""
        return optimizer_args(
            self.optimizer,
            self.lr,
            self.momentum,
            self.weight_decay,
            self.grad_clip,
            self.scheduler,
            self.epochs,
            self.seed,
            self.preset,
            arch=self.arch,
        )

    def definition_spec(self) -> str | None:
        """The chosen definition: the TOML path when one is typed, else the shipped name."""
        return self.definition_path.strip() or self.definition

    @param.depends("definition", "definition_path", watch=True)
    def _on_definition(self) -> None:
        from fnodiag.config import ConfigError
        from fnodiag.sweeps.definition import load_definition

        spec = self.definition_spec()
        arms, seeds = [], []
        if spec:
            try:
                defn = load_definition(spec)
                arms, seeds = list(defn.arms), list(defn.seeds)
            except (ConfigError, OSError, ValueError) as exc:
                self.feedback.object = f"Definition not usable: {str(exc).splitlines()[0]}"
        self.param.arm.objects = arms
        self.param.sweep_seed.objects = seeds
        if self.arm not in arms:
            self.arm = arms[0] if arms else None
        if self.sweep_seed not in seeds:
            self.sweep_seed = seeds[0] if seeds else None

    def sweep_args(self) -> list[str]:
        """Extra ``fnodiag sweep`` flags from the form (overrides of the definition)."""
        return ["--epochs", str(self.sweep_epochs)] if self.sweep_epochs else []

    def refused(self) -> bool:
        """True (and says so) when this session may not start or stop runs (:attr:`may_control`)."""
        if self.may_control is None or self.may_control():
            return False
        self.feedback.object = (
            "Refused: only sessions on this machine or logged-in users may start or stop runs "
            "(serve with Panel's --basic-auth or --oauth-provider)."
        )
        return True

    def stop(self, name: str) -> bool:
        """Stop a launched run (SIGINT) if this session may; returns whether it was asked to stop."""
        if self.refused():
            return False
        self.launcher.stop(name)
        return True

    def start_arm(self, args: list[str] | None = None):
        """Start the chosen arm x seed of the chosen definition (``args`` replace the form's overrides)."""
        if self.refused():
            return None
        spec = self.definition_spec()
        if not spec or self.arm is None or self.sweep_seed is None:
            self.feedback.object = "Not started: choose a sweep definition, an arm and a seed."
            return None
        args = self.sweep_args() if args is None else list(args)
        try:
            launched = self.launcher.start_sweep(spec, self.arm, self.sweep_seed, args)
        except ValueError as exc:
            self.feedback.object = f"Not started: {exc}"
            return None
        self.feedback.object = (
            f"Started `{launched.name}`: `fnodiag sweep {spec} --arms {self.arm} --seeds "
            f"{self.sweep_seed} --out {launched.run.path.parent} {' '.join(args)}`"
        )
        self.store.refresh()
        self.refresh()
        return launched

    def start(self, args: list[str], name: str | None = None):
        if self.refused():
            return None
        try:
            launched = self.launcher.start(args, name)
        except ValueError as exc:
            self.feedback.object = f"Not started: {exc}"
            return None
        self.feedback.object = f"Started `{launched.name}`: `fnodiag train {' '.join(args)}`"
        self.store.refresh()
        self.refresh()
        return launched

    def refresh(self) -> None:
        """Update the launched-runs list (state, epoch, stop buttons) in place.

        Each run keeps one row, text pane and Stop button for the life of the session: the rows are
        updated, never rebuilt, so a click on Stop is never lost to a redraw replacing the button
        between the browser's click and the server receiving it.
        """
        for name, launched in self.launcher.runs.items():
            if name not in self._rows:
                stop = pn.widgets.Button(label="Stop", color="danger", width=70)
                stop.on_click(lambda _, n=name: self.stop(n))
                self._rows[name] = (pn.pane.Markdown("", width=500), stop)
            text, stop = self._rows[name]
            status = launched.run.read_status() or {}
            state = launched.state()
            line = f"`{name}`: **{state}**, epoch {status.get('epoch', 0)}, step {status.get('step', 0)}"
            if launched.process.poll() not in (None, 0) and state not in ("interrupted",):
                line += f"\n\n```\n{launched.log_tail()}\n```"
            if text.object != line:
                text.object = line
            stop.disabled = launched.process.poll() is not None
        if list(self.launcher.runs) != self._shown or not self.table.objects:
            self._shown = list(self.launcher.runs)
            self.table[:] = [pn.Row(*self._rows[name]) for name in self._shown] or [
                pn.pane.Markdown("No run started from this dashboard yet.")
            ]

    def __panel__(self):
        form = pn.Param(
            self.param,
            parameters=[
                "arch",
                "optimizer",
                "lr",
                "momentum",
                "weight_decay",
                "grad_clip",
                "scheduler",
                "epochs",
                "seed",
                "preset",
                "run_name",
            ],
            widgets={"epochs": pn.widgets.IntInput},
            show_name=False,
            width=320,
        )
        sweep_form = pn.Param(
            self.param,
            parameters=["definition", "definition_path", "arm", "sweep_seed", "sweep_epochs"],
            widgets={"sweep_epochs": pn.widgets.IntInput},
            show_name=False,
            width=320,
        )
        self.refresh()
        return pn.Column(
            pn.pane.Markdown(
                "Start an arm as a separate `fnodiag train` process writing into the runs "
                "folder; it appears under *(single runs)*. Or start one arm x seed of a "
                "sweep definition (`fnodiag sweep DEFINITION --arms ARM --seeds SEED --out "
                "<runs>/<definition name>`); it appears under that sweep. **Stop** sends "
                "SIGINT: the run records `interrupted` and keeps its checkpoints."
            ),
            pn.Row(
                pn.Column(
                    pn.pane.Markdown("**Optimizer settings**"),
                    form,
                    pn.Row(self.start_button, self.demo_button),
                    pn.pane.Markdown("**From a sweep definition**"),
                    sweep_form,
                    self.sweep_button,
                ),
                pn.Column(self.feedback, self.table, sizing_mode="stretch_width"),
                sizing_mode="stretch_width",
            ),
            sizing_mode="stretch_width",
        )
