"""Configuration dataclasses: one small dataclass per component, composed into ``RunConfig``.

Every dataclass validates itself (``validate()`` raises :class:`ConfigError`, a ``ValueError``,
whose message names the field, the bad value and what is allowed), converts to and from plain
dicts, and round-trips through JSON so that ``RunConfig.from_dict(cfg.to_dict()) == cfg``.
Presets are plain override dicts applied on top of the defaults. The command-line flags of the
fields live here too, one :class:`Flag` row per field (:data:`CONFIG_FLAGS`); the optimizer registry
adds its optimizers' own settings (kept in ``OptimConfig.extra``) to make the full table,
:func:`fnodiag.training.registries.flag_table`.

Every source of settings reaches a run through one function, :func:`resolve`, which applies
the sources in one order (:data:`PRECEDENCE`; a later source wins)::

    defaults < preset < config file < sweep [shared] < sweep [arms.NAME] < overrides < sweep seed

*overrides* are ``fnodiag train`` flags, ``fnodiag sweep`` override flags, the dashboard's
Launch form (which builds a ``fnodiag train`` / ``fnodiag sweep`` command line) or the
``overrides`` of the Python API; the sweep seed is the seed of one run of a sweep. Each source is
one layer of ``{"section.field": value}`` settings applied by :meth:`RunConfig.override`, which
also owns the clipping rule (:func:`clip_rule`): a layer that sets ``clip.value`` without
``clip.algorithm`` turns clipping off at 0 and, when clipping was off, turns on ``norm``; a layer
that sets ``clip.algorithm = "none"`` alone also zeroes ``clip.value``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, NamedTuple

from fnodiag.files import no_file, write_json

SUPPORTED_N = (32, 64, 128)
MAX_SEED = 2**32 - 1  # numpy (and Lightning's seed_everything) accept seeds up to this


class ConfigError(ValueError):
    """A configuration value is out of range, unknown or inconsistent."""


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def check_choice(section: str, name: str, value: Any, allowed) -> None:
    """Raise a one-line :class:`ConfigError` unless ``value`` is one of ``allowed`` (listed in the message)."""
    allowed = tuple(allowed)
    _check(value in allowed, f"{section}.{name}={value!r} is not valid; choose one of {', '.join(map(str, allowed))}")


def _coerce_floats(obj) -> None:
    """Store ints given for ``float`` fields as floats, so equal configs hash (and cache) alike."""
    for f in fields(obj):
        value = getattr(obj, f.name)
        if f.type in ("float", "float | None") and isinstance(value, int) and not isinstance(value, bool):
            object.__setattr__(obj, f.name, float(value))


class _Section:
    """Mixin of the configuration sections: numeric normalisation on construction."""

    def __post_init__(self) -> None:
        _coerce_floats(self)


def _positive(section: str, name: str, value, *, strict: bool = True) -> None:
    ok = isinstance(value, (int, float)) and math.isfinite(value) and (value > 0 if strict else value >= 0)
    _check(ok, f"{section}.{name}={value!r} must be a finite number {'> 0' if strict else '>= 0'}")


@dataclass(frozen=True)
class DataConfig(_Section):
    """Generation parameters of the synthetic grid_lines dataset (brief §3).

    Every field takes part in the dataset cache key: changing any of them gives a new dataset.
    """

    N: int = 64
    object_size: int = 392
    nimgs_train: int = 1
    nimgs_test: int = 1
    train_stride: int = 4
    test_stride: int = 10
    nphotons: float = 1e9
    set_phi: bool = False
    probe_npz: str | None = None  # None: ideal disk probe; else an NPZ with key ``probeGuess``
    probe_scale: float = 4.0
    probe_smoothing: float = 0.5
    n_lines: int = 400
    train_object_seed: int = 1
    test_object_seed: int = 2

    def validate(self) -> DataConfig:
        s = "data"
        check_choice(s, "N", self.N, SUPPORTED_N)
        _check(
            isinstance(self.object_size, int) and self.object_size >= self.N,
            f"data.object_size={self.object_size!r} must be an integer >= N ({self.N})",
        )
        for name in ("nimgs_train", "nimgs_test", "train_stride", "test_stride", "n_lines"):
            v = getattr(self, name)
            _check(isinstance(v, int) and v >= 1, f"data.{name}={v!r} must be an integer >= 1")
        _check(self.test_stride <= self.N, f"data.test_stride={self.test_stride} must be <= N ({self.N})")
        _positive(s, "nphotons", self.nphotons)
        _positive(s, "probe_scale", self.probe_scale)
        _positive(s, "probe_smoothing", self.probe_smoothing, strict=False)
        if self.probe_npz is not None:
            p = Path(self.probe_npz)
            _check(
                p.is_file(),
                f"data.probe_npz: {no_file(p, 'file')}; pass an NPZ with a 'probeGuess' array "
                "or omit it for the ideal disk probe",
            )
        return self


@dataclass(frozen=True)
class ModelConfig(_Section):
    """Generator architecture (brief §1)."""

    arch: str = "hybrid"
    spectral_layout: str = "symmetric"  # 'symmetric' (standard FNO, ± rows) or 'reference'
    blocks: int = 4
    width: int = 32
    modes: int = 12
    channel_cap: int | None = None
    layerscale_init: float = 1e-3
    in_channels: int = 1  # gridsize**2

    def validate(self) -> ModelConfig:
        s = "model"  # arch and spectral_layout: fnodiag.training.registries.check_names
        for name in ("blocks", "width", "modes", "in_channels"):
            v = getattr(self, name)
            _check(isinstance(v, int) and v >= 1, f"model.{name}={v!r} must be an integer >= 1")
        if self.channel_cap is not None:
            _check(
                isinstance(self.channel_cap, int) and self.channel_cap >= self.width,
                f"model.channel_cap={self.channel_cap!r} must be an integer >= width ({self.width}) or None",
            )
        _positive(s, "layerscale_init", self.layerscale_init, strict=False)
        return self


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class OptimConfig(_Section):
    """Optimizer choice and hyperparameters (brief §5.1).

    The fields are the settings common to several optimizers; what each optimizer reads of them,
    its defaults for the fields left None and its own further settings (``extra``, e.g. RMSprop's
    ``alpha``) are declared by its entry in ``fnodiag.training.optimizers.OPTIMIZERS``, which
    also validates ``extra`` (:func:`fnodiag.training.registries.check_names`).
    """

    name: str = "adam"
    lr: float = 1e-3
    momentum: float | None = None  # None: the optimizer's default (sgd 0.9, rmsprop 0.0)
    nesterov: bool | None = None  # sgd only; None means momentum > 0
    weight_decay: float = 0.0
    beta1: float = 0.9  # the Adam family
    beta2: float = 0.999
    # An optimizer's own settings by name, as given (its registry entry supplies the defaults).
    extra: Mapping[str, Any] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.extra, Mapping):
            object.__setattr__(self, "extra", dict(self.extra))

    def validate(self) -> OptimConfig:
        s = "optim"  # name and extra: fnodiag.training.registries.check_names
        _positive(s, "lr", self.lr)
        m = self.momentum
        _check(
            m is None or (_number(m) and 0 <= m < 1),
            f"optim.momentum={m!r} must be in [0, 1), or null for the optimizer's default",
        )
        for name in ("beta1", "beta2"):
            v = getattr(self, name)
            _check(_number(v) and 0 <= v < 1, f"optim.{name}={v!r} must be in [0, 1)")
        _positive(s, "weight_decay", self.weight_decay, strict=False)
        _check(
            self.nesterov is None or isinstance(self.nesterov, bool),
            f"optim.nesterov={self.nesterov!r} must be true, false or null",
        )
        _check(not (self.nesterov and self.momentum == 0), "optim.nesterov=true needs optim.momentum > 0")
        _check(
            isinstance(self.extra, Mapping) and all(isinstance(k, str) for k in self.extra),
            f"optim.extra={self.extra!r} must map an optimizer's own setting names to values",
        )
        return self


@dataclass(frozen=True)
class ScheduleConfig(_Section):
    """Learning-rate schedule, stepped once per epoch by Lightning (brief §5.3-§5.4)."""

    name: str = "constant"
    warmup_epochs: int = 0
    min_lr_ratio: float = 0.1
    gamma: float = 0.95  # exponential
    plateau_factor: float = 0.5
    plateau_patience: int = 2
    plateau_min_lr: float = 5e-5
    step_size: int = 10  # step: the LR is multiplied by step_gamma every step_size epochs
    step_gamma: float = 0.1  # step: > 1 raises the LR (e.g. to drive a run that learned into a collapse)
    # step: the weight decay is multiplied by this at the same epochs; with adamw a step that makes
    # lr x weight_decay ~1 contracts every weight to ~lr whatever the gradients (a deterministic collapse)
    step_wd_gamma: float = 1.0
    frozen: bool = False  # reference quirk: the LR stays at the value the schedule sets when built

    def validate(self) -> ScheduleConfig:
        s = "schedule"  # name: fnodiag.training.registries.check_names
        _check(
            isinstance(self.warmup_epochs, int) and self.warmup_epochs >= 0,
            f"schedule.warmup_epochs={self.warmup_epochs!r} must be an integer >= 0",
        )
        _check(0 <= self.min_lr_ratio <= 1, f"schedule.min_lr_ratio={self.min_lr_ratio!r} must be in [0, 1]")
        _check(0 < self.gamma <= 1, f"schedule.gamma={self.gamma!r} must be in (0, 1]")
        _check(0 < self.plateau_factor < 1, f"schedule.plateau_factor={self.plateau_factor!r} must be in (0, 1)")
        _check(
            isinstance(self.plateau_patience, int) and self.plateau_patience >= 0,
            f"schedule.plateau_patience={self.plateau_patience!r} must be an integer >= 0",
        )
        _positive(s, "plateau_min_lr", self.plateau_min_lr, strict=False)
        _check(
            isinstance(self.step_size, int) and self.step_size >= 1,
            f"schedule.step_size={self.step_size!r} must be an integer >= 1 (epochs between LR steps)",
        )
        _check(
            isinstance(self.step_gamma, (int, float)) and math.isfinite(self.step_gamma) and self.step_gamma > 0,
            f"schedule.step_gamma={self.step_gamma!r} must be a finite number > 0 (< 1 lowers the LR, > 1 raises it)",
        )
        _check(
            isinstance(self.step_wd_gamma, (int, float))
            and math.isfinite(self.step_wd_gamma)
            and self.step_wd_gamma > 0,
            f"schedule.step_wd_gamma={self.step_wd_gamma!r} must be a finite number > 0 "
            "(the weight-decay factor of each step; 1 leaves the weight decay alone)",
        )
        _check(isinstance(self.frozen, bool), f"schedule.frozen={self.frozen!r} must be true or false")
        return self


CLIP_ALGORITHMS = ("none", "norm", "value", "agc")


@dataclass(frozen=True)
class ClipConfig(_Section):
    """Gradient clipping: 'none', global 'norm', elementwise 'value', or unit-wise 'agc'."""

    algorithm: str = "none"
    value: float = 0.0

    def validate(self) -> ClipConfig:
        check_choice("clip", "algorithm", self.algorithm, CLIP_ALGORITHMS)
        if self.algorithm != "none":
            ok = isinstance(self.value, (int, float)) and math.isfinite(self.value) and self.value > 0
            _check(ok, f"clip.value={self.value!r} must be > 0 with clip.algorithm={self.algorithm!r} (--grad-clip)")
        else:
            _check(
                self.value in (0, None),
                f"clip.value={self.value!r} has no effect with clip.algorithm='none'; "
                "set clip.algorithm (norm, value or agc) or clip.value=0",
            )
        return self


LOSSES_ALLOWED = ("mae", "poisson")
FORWARD_GAINS = ("none", "batch")
# Validation batch size: 'train' = the training batch size with the partial last batch kept (the
# reference's validation loader), 'infer' = ``infer_batch_size``, 'auto' = 'train' under
# ``forward_gain='batch'`` (whose predictions carry the batch size as a gain) and 'infer' otherwise.
VAL_BATCHINGS = ("auto", "train", "infer")


@dataclass(frozen=True)
class TrainConfig(_Section):
    """Loop, loss and Lightning Trainer pass-through settings."""

    epochs: int = 20
    batch_size: int = 16
    infer_batch_size: int = 64
    seed: int = 20260128
    loss: str = "mae"
    forward_gain: str = "none"  # reference quirk 'batch': prediction x the size of each batch (brief §2.2)
    val_batching: str = "auto"  # see VAL_BATCHINGS; resolved by val_batch_size
    keep_partial_batch: bool = False  # reference quirk: keep the train loader's last partial batch
    capture_every: int = 10  # 0 turns live capture off
    frame_every: int = 25  # live reconstruction frames every M steps (stage-a: 344 frames in 20 epochs); 0 = off
    accelerator: str = "auto"
    devices: str = "auto"
    strategy: str = "auto"
    precision: str = "32-true"
    num_workers: int = 0

    def validate(self) -> TrainConfig:
        s = "train"
        for name in ("epochs", "batch_size", "infer_batch_size"):
            v = getattr(self, name)
            _check(isinstance(v, int) and v >= 1, f"train.{name}={v!r} must be an integer >= 1")
        _check(
            isinstance(self.seed, int) and 0 <= self.seed <= MAX_SEED,
            f"train.seed={self.seed!r} must be an integer in [0, {MAX_SEED}] (--seed; numpy's seed range)",
        )
        check_choice(s, "loss", self.loss, LOSSES_ALLOWED)
        check_choice(s, "forward_gain", self.forward_gain, FORWARD_GAINS)
        check_choice(s, "val_batching", self.val_batching, VAL_BATCHINGS)
        _check(
            isinstance(self.keep_partial_batch, bool),
            f"train.keep_partial_batch={self.keep_partial_batch!r} must be true or false",
        )
        _check(
            isinstance(self.capture_every, int) and self.capture_every >= 0,
            f"train.capture_every={self.capture_every!r} must be an integer >= 0 (0 turns capture off)",
        )
        _check(
            isinstance(self.frame_every, int) and not isinstance(self.frame_every, bool) and self.frame_every >= 0,
            f"train.frame_every={self.frame_every!r} must be an integer >= 0 (0 turns reconstruction frames off)",
        )
        _check(
            isinstance(self.num_workers, int) and self.num_workers >= 0,
            f"train.num_workers={self.num_workers!r} must be an integer >= 0",
        )
        return self


def val_batch_size(train: TrainConfig) -> int:
    """The validation batch size ``train.val_batching`` asks for.

    ``'train'``: ``train.batch_size`` (the reference's validation loader); ``'infer'``:
    ``train.infer_batch_size``; ``'auto'``: ``'train'`` under ``forward_gain='batch'`` (so that
    validation predictions carry the gain training calibrated), ``'infer'`` otherwise.
    """
    mode = train.val_batching
    if mode == "auto":
        mode = "train" if train.forward_gain == "batch" else "infer"
    return train.batch_size if mode == "train" else train.infer_batch_size


SECTIONS = {
    "data": DataConfig,
    "model": ModelConfig,
    "optim": OptimConfig,
    "schedule": ScheduleConfig,
    "clip": ClipConfig,
    "train": TrainConfig,
}


@dataclass(frozen=True)
class RunConfig:
    """Everything one training run needs; ``config.json`` of a run directory holds it."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    clip: ClipConfig = field(default_factory=ClipConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def validate(self) -> RunConfig:
        for name in SECTIONS:
            getattr(self, name).validate()
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> RunConfig:
        _check(isinstance(d, dict), f"a run configuration must be a mapping of sections, got {type(d).__name__}")
        unknown = set(d) - set(SECTIONS)
        _check(
            not unknown, f"unknown configuration section(s) {sorted(unknown)}; valid sections: {', '.join(SECTIONS)}"
        )
        return cls(**{name: _section_from_dict(name, d.get(name, {})) for name in SECTIONS})

    def override(self, flat: dict[str, Any]) -> RunConfig:
        """Return a copy with one layer of ``{"section.field": value}`` settings applied.

        None values are skipped; nested ``{"section": {"field": value}}`` entries are accepted too
        (:func:`flatten`). An ``optim.<name>`` key that is no :class:`OptimConfig` field is an
        optimizer's own setting and goes to ``optim.extra`` (``optim.extra`` given as a mapping is
        merged key by key); the optimizer registry decides whether it is one
        (:func:`fnodiag.training.registries.check_names`). The layer goes through :func:`clip_rule`
        first. Not validated: see :func:`resolve`.
        """
        d = self.to_dict()
        flat = clip_rule(self, {k: v for k, v in flatten(flat).items() if v is not None})
        for key, value in flat.items():
            section, _, name = key.partition(".")
            known = section in SECTIONS and name in {f.name for f in fields(SECTIONS[section])}
            if section == "optim" and name == "extra":
                _check(
                    isinstance(value, Mapping), f"optim.extra={value!r} must be a mapping of setting names to values"
                )
                d["optim"]["extra"].update(value)
            elif section == "optim" and not known and name and "." not in name:
                d["optim"]["extra"][name] = value  # an optimizer's own setting: the registry checks it
            else:
                _check(
                    known, f"unknown setting {key!r}; settings look like 'optim.lr' (sections: {', '.join(SECTIONS)})"
                )
                d[section][name] = value
        return RunConfig.from_dict(d)

    def value(self, path: str) -> Any:
        """The value of the setting ``"section.field"``; an optimizer's own setting (``"optim.alpha"``) is read
        from ``optim.extra`` (None when not given: its default is the optimizer registry's)."""
        section, _, name = path.partition(".")
        _check(section in SECTIONS, f"unknown setting {path!r}; settings look like 'optim.lr'")
        part = getattr(self, section)
        if section == "optim" and name not in {f.name for f in fields(OptimConfig)}:
            return part.extra.get(name)
        _check(hasattr(part, name), f"unknown setting {path!r}; settings look like 'optim.lr'")
        return getattr(part, name)

    def save(self, path: str | Path) -> None:
        write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> RunConfig:
        return cls.from_dict(_read_json(path))


def flatten(layer: Mapping[str, Any]) -> dict[str, Any]:
    """``{"section.field": value}`` from a flat, nested (``{"optim": {"lr": ...}}``) or mixed mapping."""
    _check(
        isinstance(layer, Mapping),
        f"settings must be a mapping of 'section.field' to values, got {type(layer).__name__}",
    )
    out: dict[str, Any] = {}
    for key, value in layer.items():
        if isinstance(value, Mapping) and "." not in str(key):
            out.update({f"{key}.{k}": v for k, v in value.items()})
        else:
            out[str(key)] = value
    return out


def clip_rule(cfg: RunConfig, layer: dict[str, Any]) -> dict[str, Any]:
    """The clipping rule of one settings layer applied on top of ``cfg`` (a new dict).

    ``clip.value`` without ``clip.algorithm``: 0 turns clipping off (``none``); a value > 0 turns on
    ``norm`` when ``cfg`` does not clip (an algorithm already chosen is kept). ``clip.algorithm =
    "none"`` without ``clip.value`` sets the value to 0. A layer giving both is taken as it is.
    """
    layer = dict(layer)
    has_value, has_algo = layer.get("clip.value") is not None, layer.get("clip.algorithm") is not None
    if has_value and not has_algo:
        if layer["clip.value"] == 0:
            layer["clip.algorithm"] = "none"
        elif cfg.clip.algorithm == "none":
            layer["clip.algorithm"] = "norm"
    elif has_algo and not has_value and layer["clip.algorithm"] == "none":
        layer["clip.value"] = 0.0
    return layer


def _section_from_dict(name: str, d: dict):
    cls = SECTIONS[name]
    _check(isinstance(d, dict), f"configuration section {name!r} must be a mapping, got {type(d).__name__}")
    valid = {f.name for f in fields(cls)}
    unknown = set(d) - valid
    _check(not unknown, f"unknown setting(s) {sorted(unknown)} in section {name!r}; valid: {', '.join(sorted(valid))}")
    return cls(**d)


def reference_quirks(cfg: RunConfig) -> list[str]:
    """The reference project's training conditions this configuration reproduces on purpose.

    ``forward_gain`` (prediction x batch size), ``frozen_schedule`` (the LR never steps),
    ``reference_layout`` (one low-frequency row block with m x m weights), ``clipping``
    (the reference clipped its control arm at norm 1.0 and not its stable arm) and
    ``partial_batch`` (the train loader keeps its last partial batch, which under the batch gain
    trains once per epoch at its own gain, brief §2.2). Empty for a configuration with none of them.
    ``train.val_batching`` is not a condition of its own: it decides how validation is batched
    (the reference validated at the training batch size) and stays as set.
    """
    quirks = []
    if cfg.train.forward_gain != "none":
        quirks.append("forward_gain")
    if cfg.schedule.frozen:
        quirks.append("frozen_schedule")
    if cfg.model.spectral_layout == "reference":
        quirks.append("reference_layout")
    if cfg.clip.algorithm != "none":
        quirks.append("clipping")
    if cfg.train.keep_partial_batch:
        quirks.append("partial_batch")
    return quirks


def without_quirks(cfg: RunConfig) -> RunConfig:
    """``cfg`` with every reference condition of :func:`reference_quirks` set back to the default."""
    defaults = RunConfig()
    return cfg.override(
        {
            "train.forward_gain": defaults.train.forward_gain,
            "schedule.frozen": False,
            "model.spectral_layout": defaults.model.spectral_layout,
            "clip.algorithm": defaults.clip.algorithm,
            "clip.value": defaults.clip.value,
            "train.keep_partial_batch": False,
        }
    )


def config_key(obj: Any, extra: bytes = b"") -> str:
    """A short stable hash of a dataclass (canonical JSON) plus optional extra bytes."""
    payload = json.dumps(dataclasses.asdict(obj), sort_keys=True).encode() + extra
    return hashlib.sha256(payload).hexdigest()[:16]


# -- command-line flags: one row per setting, beside the settings they set ------------------------------


class Flag(NamedTuple):
    """One settings flag: ``--flag`` sets ``path`` (``"section.field"``) to a value of ``type``.

    ``type`` is ``int``, ``float``, ``str`` or ``"bool"`` (a ``--flag / --no-flag`` switch). The
    tables below hold the :class:`RunConfig` fields; :func:`fnodiag.training.registries.flag_table`
    adds the optimizers' own settings and is the table the CLI and the dashboard's Launch form read.
    """

    flag: str
    path: str
    type: Any
    help: str


DATA_FLAGS: list[Flag] = [
    Flag("--N", "data.N", int, "diffraction pattern / patch size in pixels (32, 64 or 128)"),
    Flag("--object-size", "data.object_size", int, "side of each simulated object image in pixels"),
    Flag("--nimgs-train", "data.nimgs_train", int, "number of object images in the train split"),
    Flag("--nimgs-test", "data.nimgs_test", int, "number of object images in the test split"),
    Flag("--train-stride", "data.train_stride", int, "scan step of the train grid in pixels"),
    Flag("--test-stride", "data.test_stride", int, "scan step of the test grid in pixels (also the stitched window)"),
    Flag("--nphotons", "data.nphotons", float, "mean photons per diffraction pattern (Poisson noise level)"),
    Flag("--set-phi", "data.set_phi", "bool", "give the object a non-zero phase (π·tanh of the amplitude)"),
    Flag("--probe-npz", "data.probe_npz", str, "NPZ with a 'probeGuess' array to use instead of the ideal disk probe"),
]
MODEL_FLAGS: list[Flag] = [
    Flag("--arch", "model.arch", str, "generator architecture"),
    Flag(
        "--spectral-layout",
        "model.spectral_layout",
        str,
        "spectral mode layout (symmetric: ± rows; reference: one row block)",
    ),
    Flag("--blocks", "model.blocks", int, "encoder depth (number of spectral blocks before the bottleneck)"),
    Flag("--width", "model.width", int, "channels of the first encoder level"),
    Flag("--modes", "model.modes", int, "Fourier modes kept per axis (bottleneck uses modes // 2)"),
    Flag("--channel-cap", "model.channel_cap", int, "maximum channels of any encoder level (default: no cap)"),
    Flag("--layerscale-init", "model.layerscale_init", float, "initial LayerScale γ of stable/prenorm blocks"),
]
OPTIM_FLAGS: list[Flag] = [
    Flag("--optimizer", "optim.name", str, "optimizer"),
    Flag("--lr", "optim.lr", float, "base learning rate"),
    Flag("--momentum", "optim.momentum", float, "momentum in [0, 1)"),
    Flag("--nesterov", "optim.nesterov", "bool", "Nesterov momentum (default: on when momentum > 0)"),
    Flag(
        "--weight-decay",
        "optim.weight_decay",
        float,
        "weight decay >= 0 (L2, or decoupled where the optimizer decouples it)",
    ),
    Flag("--beta1", "optim.beta1", float, "β1 in [0, 1): decay of the gradient average"),
    Flag("--beta2", "optim.beta2", float, "β2 in [0, 1): decay of the squared-gradient average"),
]
SCHEDULE_FLAGS: list[Flag] = [
    Flag("--scheduler", "schedule.name", str, "LR schedule"),
    Flag("--warmup-epochs", "schedule.warmup_epochs", int, "warmup_cosine: epochs of linear warmup from 0.1·lr"),
    Flag("--min-lr-ratio", "schedule.min_lr_ratio", float, "warmup_cosine: final LR as a fraction of lr"),
    Flag("--gamma", "schedule.gamma", float, "exponential: LR factor per epoch"),
    Flag("--step-size", "schedule.step_size", int, "step: epochs between LR steps"),
    Flag("--step-gamma", "schedule.step_gamma", float, "step: LR factor at each step (> 1 raises the LR)"),
    Flag(
        "--step-wd-gamma",
        "schedule.step_wd_gamma",
        float,
        "step: weight-decay factor at each step (with AdamW, lr x wd stepped to 1 collapses a run on purpose)",
    ),
    Flag("--plateau-factor", "schedule.plateau_factor", float, "plateau: LR factor on a plateau"),
    Flag("--plateau-patience", "schedule.plateau_patience", int, "plateau: epochs without improvement before reducing"),
    Flag(
        "--frozen-schedule",
        "schedule.frozen",
        "bool",
        "reference quirk: build the schedule but never step it (the LR stays at its construction-time value)",
    ),
    Flag("--grad-clip", "clip.value", float, "clip threshold; 0 turns clipping off (algorithm defaults to norm)"),
    Flag(
        "--grad-clip-algorithm",
        "clip.algorithm",
        str,
        "clipping: none, norm (global L2), value (elementwise), agc (unit-wise adaptive)",
    ),
]
RUN_FLAGS: list[Flag] = [
    Flag("--epochs", "train.epochs", int, "training epochs"),
    Flag(
        "--batch-size",
        "train.batch_size",
        int,
        "training batch size (partial last batches are dropped unless --keep-partial-batch)",
    ),
    Flag(
        "--infer-batch-size",
        "train.infer_batch_size",
        int,
        "batch size for evaluation, and for validation under --val-batching infer",
    ),
    Flag(
        "--val-batching",
        "train.val_batching",
        str,
        "validation batch size: train (the training batch size, partial last batch kept, as the reference), infer "
        "(--infer-batch-size) or auto (train under --forward-gain batch, else infer)",
    ),
    Flag(
        "--keep-partial-batch",
        "train.keep_partial_batch",
        "bool",
        "reference quirk: keep the train loader's last partial batch "
        "(under --forward-gain batch it trains at its own gain)",
    ),
    Flag("--seed", "train.seed", int, "training seed (model init, shuffling); data do not depend on it"),
    Flag("--loss", "train.loss", str, "physics loss: mae (normalised amplitude MAE) or poisson (NLL)"),
    Flag(
        "--forward-gain",
        "train.forward_gain",
        str,
        "reference quirk: 'batch' multiplies each prediction by the size of its batch; 'none' is correct physics",
    ),
    Flag("--capture-every", "train.capture_every", int, "live activation capture every k steps; 0 turns it off"),
    Flag(
        "--frame-every",
        "train.frame_every",
        int,
        "live reconstruction frames (probe batch amplitude / phase) every M steps; 0 turns them off",
    ),
    Flag("--accelerator", "train.accelerator", str, "Lightning accelerator: auto, cpu, gpu, ..."),
    Flag("--devices", "train.devices", str, "Lightning devices: auto, a count, or ids"),
    Flag("--strategy", "train.strategy", str, "Lightning strategy: auto, ddp, ..."),
    Flag("--precision", "train.precision", str, "Lightning precision: 32-true, bf16-mixed, 16-mixed, ..."),
    Flag("--num-workers", "train.num_workers", int, "DataLoader worker processes"),
]
CONFIG_FLAGS: list[Flag] = DATA_FLAGS + MODEL_FLAGS + OPTIM_FLAGS + SCHEDULE_FLAGS + RUN_FLAGS


# Presets are override dicts on top of the defaults; ``--preset`` applies one before flags.
PRESETS: dict[str, dict[str, Any]] = {
    # The seed investigation's shared Stage A hyperparameters (brief §7.4, issue 3).
    "stage-a": {
        "data.N": 64,
        "data.nimgs_train": 1,
        "data.nimgs_test": 1,
        "data.set_phi": True,
        "model.blocks": 4,
        "model.width": 32,
        "model.modes": 12,
        "optim.lr": 3e-4,
        "schedule.name": "warmup_cosine",
        "schedule.warmup_epochs": 5,
        "schedule.min_lr_ratio": 0.05,
        "train.epochs": 20,
        "train.batch_size": 16,
        "train.seed": 20260128,
    },
    # A reduction that trains one arm in about two minutes on a 2-core CPU.
    "quick": {
        "data.N": 32,
        "data.object_size": 164,
        "data.nimgs_train": 1,
        "data.nimgs_test": 1,
        "data.set_phi": True,
        "model.blocks": 3,
        "model.width": 16,
        "model.modes": 8,
        "optim.lr": 2e-3,
        "schedule.name": "warmup_cosine",
        "schedule.warmup_epochs": 1,
        "schedule.min_lr_ratio": 0.05,
        "train.epochs": 24,
        "train.batch_size": 8,
        "train.capture_every": 10,
        "train.seed": 20260128,
    },
}


def preset(name: str) -> RunConfig:
    """The default RunConfig with preset ``name`` applied (``resolve(preset=name)``)."""
    return resolve(preset=name)


# The sources of settings, lowest precedence first: a later source overrides an earlier one.
PRECEDENCE = ("defaults", "preset", "file", "shared", "arm", "overrides", "seed")


def read_settings_file(path: str | Path) -> dict[str, Any]:
    """``{"section.field": value}`` from a (possibly partial) RunConfig JSON file, e.g. a run's config.json."""
    d = _read_json(path, " (--config)")
    _check(
        isinstance(d, dict) and not set(d) - set(SECTIONS),
        f"config file {str(path)!r} must hold sections among {', '.join(SECTIONS)} (--config)",
    )
    return flatten(d)


def _read_json(path: str | Path, source: str = "") -> Any:
    """The JSON of a config file; a missing or malformed file is a :class:`ConfigError` naming ``source``."""
    p = Path(path)
    _check(p.is_file(), no_file(p, "config file") + source)
    try:
        return json.loads(p.read_text())
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"config file {str(p)!r} is not valid JSON ({exc.msg} at line {exc.lineno}){source}"
        ) from None


def resolve(
    *,
    preset: str | None = None,
    file: str | Path | Mapping | None = None,
    shared: Mapping | None = None,
    arm: Mapping | None = None,
    overrides: Mapping | None = None,
    seed: int | None = None,
) -> RunConfig:
    """The one path from every source of settings to a validated :class:`RunConfig`.

    Sources are applied in :data:`PRECEDENCE` order (a later one wins), each as one layer through
    :meth:`RunConfig.override` (so :func:`clip_rule` holds for every source alike).

    Parameters
    ----------
    preset : str, optional
        A :data:`PRESETS` name (``--preset``, or a sweep definition's ``preset``).
    file : path or mapping, optional
        A RunConfig JSON file (``--config``; :func:`read_settings_file`) or the same as a mapping.
    shared, arm : mapping, optional
        A sweep definition's ``[shared]`` table and one ``[arms.NAME]`` table.
    overrides : mapping, optional
        Command-line flags (``fnodiag train``, ``fnodiag sweep``, the dashboard's Launch form) or
        Python API overrides, as ``{"section.field": value}``; None values are skipped.
    seed : int, optional
        The seed of one sweep run: sets ``train.seed`` last. An override ``train.seed`` that
        differs is an error (a sweep run's seed comes from its seed list).

    Raises
    ------
    ConfigError
        An unknown setting (the message names the source) or an invalid value.
    """
    cfg = RunConfig()
    if preset is not None:
        check_choice("run", "preset", preset, PRESETS)
    file_layer = read_settings_file(file) if isinstance(file, (str, Path)) else file
    layers = (
        ("preset " + repr(preset), PRESETS.get(preset) if preset else None),
        ("config file", file_layer),
        ("sweep [shared]", shared),
        ("sweep arm", arm),
        ("overrides", overrides),
    )
    for source, layer in layers:
        if layer:
            try:
                cfg = cfg.override(layer)
            except ConfigError as exc:
                raise ConfigError(f"{exc} (in {source})") from None
    if seed is not None:
        asked = flatten(overrides or {}).get("train.seed")
        _check(
            asked is None or int(asked) == int(seed),
            f"train.seed={asked!r} conflicts with the sweep seed {seed}; give sweep seeds with --seeds",
        )
        cfg = cfg.override({"train.seed": int(seed)})
    return cfg.validate()
