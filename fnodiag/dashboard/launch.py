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

import dataclasses
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

from fnodiag.config import PRESETS, ConfigError, Flag, RunConfig, resolve
from fnodiag.dashboard.catalog import inside
from fnodiag.dashboard.store import DashboardStore
from fnodiag.runs import RunDir
from fnodiag.sweeps.definition import load_definition, run_name, shipped_definitions
from fnodiag.training.optimizers import OPTIMIZERS
from fnodiag.training.registries import choices, flag_table, validated  # torch, never Lightning

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

    def definition(self, definition: str | Path) -> str:
        """A shipped definition's name as given; any other value a TOML path inside the runs folder (relative
        ones against it), resolved. Raises ValueError for a path outside it, before anything is opened
        (the dashboard never opens, nor says whether there exists, a file outside the runs folder)."""
        if str(definition) in shipped_definitions():
            return str(definition)
        return str(inside(self.root, definition))

    def start_sweep(self, definition: str | Path, arm: str, seed: int, args: list[str] | None = None) -> Launched:
        """Train one ``arm`` x ``seed`` of a sweep definition into ``<root>/<definition name>/<arm>-s<seed>``.

        Parameters
        ----------
        definition : a shipped definition name (``fnodiag.sweeps.definition.shipped_definitions()``) or a TOML path
            inside the runs folder (:meth:`definition`)
        arm, seed : one arm of the definition and a seed (any integer; the definition's are offered)
        args : extra ``fnodiag sweep`` flags, e.g. ``["--epochs", "4"]`` (not ``--out`` / ``--arms`` / ``--seeds``)

        Returns
        -------
        Launched, keyed ``"<definition name>/<arm>-s<seed>"``. A finished run of the same arm and
        seed is skipped by the sweep (it resumes an interrupted one from its checkpoint).
        """
        args = list(args or [])
        if any(a.split("=")[0] in ("--out", "--arms", "--seeds") for a in args):
            raise ValueError("the dashboard sets --out, --arms and --seeds itself")
        definition = self.definition(definition)
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
        spec = definition  # a shipped name stays a name (resolved by fnodiag); a file is an absolute path
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


# The form's own settings besides the optimizer's (the optimizer's come from the flag table).
FORM_PATHS = {
    "arch": "model.arch",
    "optimizer": "optim.name",
    "grad_clip": "clip.value",
    "scheduler": "schedule.name",
    "epochs": "train.epochs",
    "seed": "train.seed",
}


def optimizer_rows() -> list[Flag]:
    """The flag-table rows of the optimizer hyperparameters: lr, the common fields, every optimizer's own settings."""
    return [r for r in flag_table() if r.path.startswith("optim.") and r.path != "optim.name"]


def settings_class(rows: list[Flag]) -> type[param.Parameterized]:
    """A Parameterized class with one parameter per row, named by the setting (``"optim.eps"`` -> ``eps``).

    Numbers may be None (a field the optimizer decides, before one is chosen); a switch whose
    configuration default is None (``nesterov``) offers auto / on / off. Help texts are the CLI's.
    """
    defaults = RunConfig().to_dict()["optim"]
    params = {}
    for row in rows:
        name = row.path.partition(".")[2]
        label = row.flag.lstrip("-")
        if row.type == "bool" and name in defaults and defaults[name] is None:
            params[name] = param.Selector(
                default=None, objects={"auto": None, "on": True, "off": False}, label=label, doc=row.help
            )
        elif row.type == "bool":
            params[name] = param.Boolean(default=False, label=label, doc=row.help)
        elif row.type is int:
            params[name] = param.Integer(default=None, allow_None=True, label=label, doc=row.help)
        else:
            params[name] = param.Number(default=None, allow_None=True, label=label, doc=row.help)
    return type("OptimizerSettings", (param.Parameterized,), params)


def form_choices() -> dict[str, list[str]]:
    """The form's choices, read from the registries: a new architecture, optimizer, schedule or preset
    shows up in the form without touching it (torch is imported, never Lightning)."""
    return {
        "arch": choices("model.arch"),
        "optimizer": choices("optim.name"),
        "scheduler": choices("schedule.name"),
        "preset": list(PRESETS),
    }


class LaunchView(Viewer):
    """Start an arm with chosen optimizer settings (or the quick demo), follow and stop it.

    The optimizer choice and one widget per optimizer hyperparameter come from the flag table
    (:func:`fnodiag.training.registries.flag_table`); the widgets shown are those the chosen
    optimizer reads. Every value starts at the chosen preset's (:data:`fnodiag.config.PRESETS`,
    resolved like ``--preset``), the optimizer's own defaults filled in; choosing another preset
    starts over from it, choosing another optimizer sets its own settings to its defaults.
    """

    store = param.ClassSelector(class_=DashboardStore)
    preset = param.Selector(default=None, objects=[])
    arch = param.Selector(default=None, objects=[], label="Architecture")
    optimizer = param.Selector(default=None, objects=[])
    grad_clip = param.Number(default=None, allow_None=True, label="Grad clip (0 = off)")
    scheduler = param.Selector(default=None, objects=[])
    epochs = param.Integer(default=None, allow_None=True)
    seed = param.Integer(default=None, allow_None=True)
    run_name = param.String(default="", label="Run name (optional)")
    definition = param.Selector(default=None, objects=[], label="Sweep definition")
    definition_path = param.String(default="", label="... or a definition TOML path in the runs folder")
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
        for name, objects in form_choices().items():
            self.param[name].objects = objects
        self.optim_rows = {r.path: r for r in optimizer_rows()}
        self.settings = settings_class(list(self.optim_rows.values()))()  # the optimizer hyperparameters
        self.preset = "quick" if "quick" in PRESETS else next(iter(PRESETS))  # fills the form (_on_preset)
        self.launcher = launcher_for(self.store.root)
        self.start_button = pn.widgets.Button(label="Start run", color="primary")
        self.start_button.on_click(lambda _: self.start_form())
        self.demo_button = pn.widgets.Button(label="Quick demo run", color="success")
        self.demo_button.on_click(lambda _: self.start(DEMO_ARGS))
        self.sweep_button = pn.widgets.Button(label="Start arm", color="primary")
        self.sweep_button.on_click(lambda _: self.start_arm())
        self.feedback = pn.pane.Markdown("", sizing_mode="stretch_width", styles={"overflow-wrap": "anywhere"})
        self.table = pn.Column()
        self._rows: dict[str, tuple] = {}  # run key -> (text pane, Stop button), kept across refreshes
        self._shown: list[str] = []  # the keys the table shows, in order
        names = shipped_definitions()
        self.param.definition.objects = names
        self.definition = "quick" if "quick" in names else (names[0] if names else None)
        self._on_definition()

    @param.depends("preset", watch=True)
    def _on_preset(self) -> None:
        """Every value from the preset, resolved as ``--preset`` resolves it (no copied numbers)."""
        cfg = resolve(preset=self.preset)
        self._preset_optim = cfg.optim
        self.param.update(**{key: cfg.value(path) for key, path in FORM_PATHS.items()})
        self._fill_optimizer(only_own=False)

    @param.depends("optimizer", watch=True)
    def _on_optimizer(self) -> None:
        self._fill_optimizer(only_own=True)

    def _fill_optimizer(self, only_own: bool) -> None:
        """The chosen optimizer's settings from the preset, its defaults filled in; ``only_own``: only its own
        settings and the fields it decides (a value already typed for lr, betas or weight decay is kept)."""
        spec = OPTIMIZERS[self.optimizer]
        values = spec.values(dataclasses.replace(self._preset_optim, name=self.optimizer))
        decided = {f"optim.{s.name}" for s in spec.settings} | {f"optim.{f}" for f in spec.field_defaults}
        self.settings.param.update(
            **{
                p.partition(".")[2]: v
                for p, v in values.items()
                if p in self.optim_rows and (not only_own or p in decided)
            }
        )

    def shown_settings(self) -> list[str]:
        """The optimizer hyperparameters the chosen optimizer reads, as setting paths (``"optim.lr"``, ...)."""
        return [p for p in OPTIMIZERS[self.optimizer].paths() if p in self.optim_rows]

    def form_settings(self) -> dict:
        """``{"section.field": value}`` of the form: its own settings and what the chosen optimizer reads."""
        out = {path: getattr(self, key) for key, path in FORM_PATHS.items()}
        out.update({p: getattr(self.settings, p.partition(".")[2]) for p in self.shown_settings()})
        return {p: v for p, v in out.items() if v is not None}

    def form_args(self) -> list[str]:
        """The ``fnodiag train`` flags of the form's settings; every number passes exactly (``float(flag) == value``).

        The flags are resolved like any command line (:func:`fnodiag.config.resolve`): the form has
        no rules of its own (``--grad-clip 0`` is off, otherwise norm, by the configuration's rule).
        """
        flags = {r.path: r for r in flag_table()}
        args = ["--preset", self.preset]
        for path, value in self.form_settings().items():
            row = flags[path]
            if row.type == "bool":
                args.append(row.flag if value else "--no-" + row.flag[2:])
            else:
                args += [row.flag, exact(value) if isinstance(value, float) else str(value)]
        return args

    def start_form(self):
        """Start a run of the form's settings, once they resolve to a valid configuration."""
        try:
            validated(resolve(preset=self.preset, overrides=self.form_settings()))
        except ValueError as exc:
            self.feedback.object = f"Not started: {str(exc).splitlines()[0]}"
            return None
        return self.start(self.form_args(), self.run_name or None)

    def definition_spec(self) -> str | None:
        """The chosen definition: the TOML path when one is typed (inside the runs folder, relative to it),
        else the shipped name. A typed path outside the runs folder raises ValueError, unopened."""
        typed = self.definition_path.strip()
        return str(inside(self.store.root, typed)) if typed else self.definition

    @param.depends("definition", "definition_path", watch=True)
    def _on_definition(self) -> None:
        arms, seeds = [], []
        try:
            spec = self.definition_spec()
        except ValueError as exc:
            spec, self.feedback.object = None, f"Definition not usable: {exc}"
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
        try:
            spec = self.definition_spec()
        except ValueError as exc:
            self.feedback.object = f"Not started: {exc}"
            return None
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

    @param.depends("optimizer")
    def _settings_form(self):
        """The widgets of the hyperparameters the chosen optimizer reads."""
        names = [p.partition(".")[2] for p in self.shown_settings()]
        return pn.Param(self.settings.param, parameters=names, show_name=False, width=320)

    def __panel__(self):
        form = pn.Column(
            pn.Param(self.param, parameters=["preset", "arch", "optimizer"], show_name=False, width=320),
            self._settings_form,
            pn.Param(
                self.param,
                parameters=["grad_clip", "scheduler", "epochs", "seed", "run_name"],
                widgets={"epochs": pn.widgets.IntInput},
                show_name=False,
                width=320,
            ),
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
