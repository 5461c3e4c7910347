"""Optimizer registry: everything fnodiag knows about an optimizer lives in its :data:`OPTIMIZERS` entry.

An :class:`OptimizerSpec` holds the torch class, a one-line description, :attr:`~OptimizerSpec.kwargs`
(every torch keyword argument besides ``lr``, from an :class:`~fnodiag.config.OptimConfig`), the
common OptimConfig fields it reads with its own defaults for those left None (SGD's momentum 0.9),
and its own settings beyond them (:class:`Setting`: name, default, type, allowed range, help),
which a configuration carries in ``OptimConfig.extra``. Everything else reads the entry: the build
(``spec.cls(params, lr=cfg.lr, **spec.torch_kwargs(cfg))``), configuration checks and the flag
table (:mod:`fnodiag.training.registries`: CLI flags, the dashboard's Launch form), the audit's
expectation, the summary's and the dashboard's hyperparameter text and the reference import.
Adding an optimizer is one entry here.

One parameter group holds every parameter (as in the reference, brief §5.1); what the optimizer
really holds is read back from ``optimizer.param_groups`` into the run's effective configuration.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from fnodiag.config import ConfigError, OptimConfig, check_choice
from fnodiag.runs import jsonable

COMMON_FIELDS = tuple(f.name for f in dataclasses.fields(OptimConfig) if f.name not in ("name", "extra"))


@dataclass(frozen=True)
class Range:
    """An interval of allowed numbers: ``Range(0, 1, high_open=True)`` is [0, 1), ``Range(0)`` is >= 0."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def __contains__(self, x: float) -> bool:
        above = self.low is None or x > self.low or (x == self.low and not self.low_open)
        below = self.high is None or x < self.high or (x == self.high and not self.high_open)
        return above and below

    def __str__(self) -> str:
        if self.low is not None and self.high is not None:
            return f"in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"
        if self.low is not None:
            return f"{'>' if self.low_open else '>='} {self.low:g}"
        if self.high is not None:
            return f"{'<' if self.high_open else '<='} {self.high:g}"
        return "finite"


@dataclass(frozen=True)
class Setting:
    """An optimizer's own setting: ``optim.<name>`` in a configuration, ``--<name>`` on the command line."""

    name: str
    default: Any
    type: type  # float, int or bool
    help: str
    range: Range = Range()

    @property
    def path(self) -> str:
        return f"optim.{self.name}"

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def allowed(self) -> str:
        """What a value must be, in words (``"a number in [0, 1)"``, ``"true or false"``)."""
        if self.type is bool:
            return "true or false"
        return f"{'an integer' if self.type is int else 'a number'} {self.range}"

    def accepts(self, value: Any) -> bool:
        if self.type is bool:
            return isinstance(value, bool)
        if isinstance(value, bool) or not isinstance(value, int if self.type is int else (int, float)):
            return False
        return math.isfinite(value) and value in self.range


@dataclass(frozen=True)
class OptimizerSpec:
    """One registered optimizer.

    Parameters
    ----------
    cls : the torch optimizer class built with ``cls(params, lr=cfg.lr, **torch_kwargs(cfg))``
    description : one line saying what it is
    kwargs : ``kwargs(cfg) -> dict``, every torch keyword argument besides ``lr``; ``cfg`` is the
        configuration :meth:`filled` with this optimizer's defaults (``cfg.extra`` holds every
        setting of :attr:`settings`, no field of :attr:`field_defaults` is None)
    fields : the common :class:`~fnodiag.config.OptimConfig` fields ``kwargs`` reads (besides ``lr``)
    field_defaults : its values for fields whose OptimConfig default is None ("the optimizer's default")
    settings : its own settings beyond the common fields
    """

    cls: type[torch.optim.Optimizer]
    description: str
    kwargs: Callable[[OptimConfig], dict[str, Any]]
    fields: tuple[str, ...] = ("weight_decay",)
    field_defaults: Mapping[str, Any] = field(default_factory=dict)
    settings: tuple[Setting, ...] = ()

    def setting(self, name: str) -> Setting | None:
        return next((s for s in self.settings if s.name == name), None)

    def filled(self, cfg: OptimConfig) -> OptimConfig:
        """``cfg`` with this optimizer's defaults in place of None fields and of settings not given."""
        fields_ = {k: v for k, v in self.field_defaults.items() if getattr(cfg, k) is None}
        extra = {s.name: s.default for s in self.settings} | dict(cfg.extra)
        return dataclasses.replace(cfg, **fields_, extra=extra)

    def torch_kwargs(self, cfg: OptimConfig) -> dict[str, Any]:
        """The keyword arguments besides ``lr`` the torch class is built with for ``cfg``."""
        return dict(self.kwargs(self.filled(cfg)))

    def values(self, cfg: OptimConfig) -> dict[str, Any]:
        """``{"optim.<name>": value}`` of every setting this optimizer reads (:meth:`paths`), its defaults filled in."""
        filled = self.filled(cfg)
        names = [p.partition(".")[2] for p in self.paths()]
        return {f"optim.{n}": getattr(filled, n) if n in COMMON_FIELDS else filled.extra[n] for n in names}

    def paths(self) -> list[str]:
        """Every setting this optimizer reads, as ``"optim.<name>"``: lr, its common fields, its own settings."""
        return ["optim.lr", *(f"optim.{f}" for f in self.fields), *(s.path for s in self.settings)]


EPS = Setting("eps", 1e-8, float, "term added to the denominator for numerical stability", Range(0, low_open=True))
DECOUPLED_WEIGHT_DECAY = Setting(
    "decoupled_weight_decay", False, bool, "decouple the weight decay from the gradient (as AdamW) instead of L2"
)
MOMENTUM_DECAY = Setting("momentum_decay", 4e-3, float, "NAdam's momentum decay ψ", Range(0))
ALPHA = Setting("alpha", 0.99, float, "smoothing constant of the squared-gradient average", Range(0, 1, high_open=True))
CENTERED = Setting("centered", False, bool, "normalise by the gradient's estimated variance (centered RMSprop)")
ADAM_FIELDS = ("beta1", "beta2", "weight_decay")


def _adam_family(c: OptimConfig) -> dict[str, Any]:
    return {"betas": (c.beta1, c.beta2), "eps": c.extra["eps"], "weight_decay": c.weight_decay}


def _sgd(c: OptimConfig) -> dict[str, Any]:
    nesterov = c.momentum > 0 if c.nesterov is None else c.nesterov
    return {"momentum": c.momentum, "nesterov": nesterov, "weight_decay": c.weight_decay}


def _radam(c: OptimConfig) -> dict[str, Any]:
    return {**_adam_family(c), "decoupled_weight_decay": c.extra["decoupled_weight_decay"]}


def _nadam(c: OptimConfig) -> dict[str, Any]:
    return {**_radam(c), "momentum_decay": c.extra["momentum_decay"]}


def _rmsprop(c: OptimConfig) -> dict[str, Any]:
    x = c.extra
    return {
        "alpha": x["alpha"],
        "eps": x["eps"],
        "momentum": c.momentum,
        "centered": x["centered"],
        "weight_decay": c.weight_decay,
    }


OPTIMIZERS: dict[str, OptimizerSpec] = {
    "adam": OptimizerSpec(torch.optim.Adam, "Adam, weight decay as L2", _adam_family, ADAM_FIELDS, settings=(EPS,)),
    "adamw": OptimizerSpec(
        torch.optim.AdamW, "AdamW: Adam with decoupled weight decay", _adam_family, ADAM_FIELDS, settings=(EPS,)
    ),
    "sgd": OptimizerSpec(
        torch.optim.SGD,
        "SGD with momentum; Nesterov unless set otherwise when momentum > 0",
        _sgd,
        ("momentum", "nesterov", "weight_decay"),
        field_defaults={"momentum": 0.9},
    ),
    "radam": OptimizerSpec(
        torch.optim.RAdam,
        "RAdam: Adam with a rectified adaptive step (no warmup needed)",
        _radam,
        ADAM_FIELDS,
        settings=(EPS, DECOUPLED_WEIGHT_DECAY),
    ),
    "nadam": OptimizerSpec(
        torch.optim.NAdam,
        "NAdam: Adam with Nesterov momentum",
        _nadam,
        ADAM_FIELDS,
        settings=(EPS, MOMENTUM_DECAY, DECOUPLED_WEIGHT_DECAY),
    ),
    "rmsprop": OptimizerSpec(
        torch.optim.RMSprop,
        "RMSprop: the step divided by a running RMS of the gradient",
        _rmsprop,
        ("momentum", "weight_decay"),
        field_defaults={"momentum": 0.0},
        settings=(ALPHA, EPS, CENTERED),
    ),
}


def optimizer_spec(name: str) -> OptimizerSpec:
    """The registry entry of ``name``; a one-line :class:`~fnodiag.config.ConfigError` listing the names otherwise."""
    check_choice("optim", "name", name, OPTIMIZERS)
    return OPTIMIZERS[name]


def own_settings() -> dict[str, list[tuple[str, Setting]]]:
    """Every optimizer's own setting by name: ``{name: [(optimizer, Setting), ...]}``, in registry order.

    Raises
    ------
    ValueError
        A registry that contradicts itself: a setting named like a common OptimConfig field, or one
        name declared with two types.
    """
    out: dict[str, list[tuple[str, Setting]]] = {}
    for opt, spec in OPTIMIZERS.items():
        for s in spec.settings:
            if s.name in COMMON_FIELDS or s.name in ("name", "extra"):
                raise ValueError(f"optimizer {opt!r}: setting {s.name!r} is an OptimConfig field; name it otherwise")
            if out.get(s.name) and out[s.name][0][1].type is not s.type:
                first = out[s.name][0]
                raise ValueError(
                    f"optimizer {opt!r}: setting {s.name!r} is a {s.type.__name__}, but {first[0]!r} "
                    f"declares it a {first[1].type.__name__}; use one type per name"
                )
            out.setdefault(s.name, []).append((opt, s))
    return out


def users(path: str) -> list[str]:
    """The registered optimizers that read the setting ``path`` (``"optim.momentum"`` -> sgd, rmsprop)."""
    return [name for name, spec in OPTIMIZERS.items() if path in spec.paths()]


def check_settings(cfg: OptimConfig) -> OptimConfig:
    """Raise a one-line :class:`~fnodiag.config.ConfigError` unless ``cfg.name`` is registered and every
    setting in ``cfg.extra`` is one the chosen optimizer declares, with a value in its range.

    The common fields are checked by :meth:`OptimConfig.validate`; a common field the optimizer does
    not read is ignored (a sweep's shared settings may hold momentum and Adam arms).
    """
    spec = optimizer_spec(cfg.name)
    declared = own_settings()
    for key, value in cfg.extra.items():
        if key not in declared:
            raise ConfigError(
                f"unknown setting 'optim.{key}': no registered optimizer takes it "
                f"(optimizers' own settings: {', '.join(sorted(declared))}; common: {', '.join(COMMON_FIELDS)})"
            )
        s = spec.setting(key)
        if s is None:
            own = ", ".join(x.name for x in spec.settings) or "none"
            takers = ", ".join(opt for opt, _ in declared[key])
            raise ConfigError(
                f"optim.{key} is not a setting of optimizer {cfg.name!r} (its own: {own}); "
                f"drop it or choose an optimizer that takes it: {takers}"
            )
        if not s.accepts(value):
            raise ConfigError(f"optim.{key}={value!r} must be {s.allowed} ({cfg.name}: {s.help}; {s.flag})")
    return cfg


def build_optimizer(params: Iterable[torch.nn.Parameter], cfg: OptimConfig) -> torch.optim.Optimizer:
    """Build the optimizer named by ``cfg.name`` after validating ``cfg``.

    Raises
    ------
    ValueError
        Unknown name (lists the valid ones) or an out-of-range hyperparameter (names the field).
    """
    cfg.validate()
    spec = optimizer_spec(check_settings(cfg).name)
    return spec.cls(params, lr=cfg.lr, **spec.torch_kwargs(cfg))


def optimizer_class(name: str) -> str:
    """The torch class name the registry builds for ``name`` (``"adamw"`` -> ``"AdamW"``)."""
    return optimizer_spec(name).cls.__name__


def spec_for_class(class_name: str | None) -> OptimizerSpec | None:
    """The first registry entry that builds the torch class named ``class_name`` (None if none does)."""
    return next((s for s in OPTIMIZERS.values() if s.cls.__name__ == class_name), None)


def hyperparameters(class_name: str | None, group: Mapping[str, Any]) -> dict[str, Any]:
    """The optimizer hyperparameters a recorded param group holds, in registry order.

    Parameters
    ----------
    class_name : the optimizer class an effective configuration records (e.g. ``"RMSprop"``)
    group : one recorded ``param_groups`` entry

    Returns
    -------
    dict
        The torch keyword arguments its registry entry passes (besides ``lr``) found in ``group``;
        for a class no entry builds (a user's own optimizer), those of any registered optimizer.
    """
    spec = spec_for_class(class_name)
    specs = [spec] if spec is not None else list(OPTIMIZERS.values())
    keys: dict[str, None] = {}
    for s in specs:
        keys.update(dict.fromkeys(s.torch_kwargs(OptimConfig())))
    return {k: group[k] for k in keys if k in group}


def _text(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "(" + ", ".join(_text(v) for v in value) + ")"
    return f"{value:g}" if isinstance(value, (int, float)) and not isinstance(value, bool) else str(value)


def hyperparameter_text(class_name: str | None, group: Mapping[str, Any], skip: Iterable[str] = ()) -> str:
    """:func:`hyperparameters` as one short line, e.g. ``"betas=(0.9, 0.999) eps=1e-08"``.

    Values that are off (False, 0, None) are left out; a switch that is on shows as its name
    (``"nesterov"``); keys in ``skip`` are left out.
    """
    parts = []
    for key, value in hyperparameters(class_name, group).items():
        if key in skip or value is None or value is False or (not isinstance(value, (list, tuple)) and value == 0):
            continue
        parts.append(key if value is True else f"{key}={_text(value)}")
    return " ".join(parts)


def describe_optimizer(optimizer: torch.optim.Optimizer) -> dict:
    """What an optimizer really holds: its class and every param-group hyperparameter.

    Returns
    -------
    dict
        ``{"class": "Adam", "param_groups": [{"lr": ..., "betas": [...], ...}, ...]}`` with JSON-safe
        values (tuples become lists, tensors become floats) and the parameter count of each group.
    """
    groups = []
    for group in optimizer.param_groups:
        entry = {}
        for key, value in group.items():
            if key == "params":
                entry["n_tensors"] = len(value)
                entry["n_parameters"] = int(sum(p.numel() for p in value))
                continue
            entry[key] = jsonable(value)
        groups.append(entry)
    return {"class": type(optimizer).__name__, "module": type(optimizer).__module__, "param_groups": groups}
