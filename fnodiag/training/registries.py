"""The registries in one place: every name and every settings flag the CLI, the dashboard and validation offer.

``config`` knows values, not names: it sits below the models and training packages and imports
neither. The names of architectures, spectral layouts, optimizers and schedules live in their
registries (``fnodiag.models.MODELS``, ``SPECTRAL_LAYOUTS``, ``fnodiag.training.optimizers.OPTIMIZERS``,
``fnodiag.training.schedulers.SCHEDULERS``); :data:`CHOICES` maps each setting to its registry (the
dict itself, so a key added to a registry shows up everywhere) and :func:`check_names` validates a
:class:`~fnodiag.config.RunConfig` against them, an optimizer's own settings (``optim.extra``)
included. :func:`flag_table` is the one table of settings flags: the RunConfig fields' rows
(:data:`fnodiag.config.CONFIG_FLAGS`) and one row per setting a registered optimizer declares;
``fnodiag.cli`` builds its parsers and the dashboard's Launch form its widgets from it. Adding an
optimizer or an architecture therefore touches one file, its registry. Importing this module
imports torch, never Lightning.
"""

from __future__ import annotations

from collections.abc import Mapping

from fnodiag.config import CONFIG_FLAGS, OPTIM_FLAGS, Flag, RunConfig, check_choice
from fnodiag.models import MODELS, SPECTRAL_LAYOUTS
from fnodiag.training.optimizers import OPTIMIZERS, check_settings, own_settings, users
from fnodiag.training.schedulers import SCHEDULERS

CHOICES: dict[str, Mapping | tuple] = {
    "model.arch": MODELS,
    "model.spectral_layout": SPECTRAL_LAYOUTS,
    "optim.name": OPTIMIZERS,
    "schedule.name": SCHEDULERS,
}


def choices(setting: str) -> list[str]:
    """The registered names for ``setting`` (a :data:`CHOICES` key such as ``"optim.name"``), in registry order."""
    if setting not in CHOICES:
        raise ValueError(f"{setting!r} has no registry; settings with one: {', '.join(CHOICES)}")
    return list(CHOICES[setting])


def check_names(cfg: RunConfig) -> RunConfig:
    """Raise a one-line :class:`~fnodiag.config.ConfigError` when a name in ``cfg`` is not registered, or an
    optimizer setting in ``optim.extra`` is unknown, not one the chosen optimizer takes, or out of its range.

    Returns ``cfg`` (validated values are :meth:`RunConfig.validate`'s job; call both).
    """
    for setting, registry in CHOICES.items():
        section, name = setting.split(".")
        check_choice(section, name, getattr(getattr(cfg, section), name), registry)
    check_settings(cfg.optim)
    return cfg


def validated(cfg: RunConfig) -> RunConfig:
    """``cfg`` with its values (:meth:`RunConfig.validate`) and its names (:func:`check_names`) checked."""
    return check_names(cfg.validate())


def _text(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _for_whom(path: str) -> str:
    """``"sgd, rmsprop: "`` for an optimizer setting not every registered optimizer reads, else ``""``."""
    who = users(path)
    return f"{', '.join(who)}: " if path != "optim.name" and len(who) < len(OPTIMIZERS) else ""


def optimizer_flags() -> list[Flag]:
    """One row per setting the registered optimizers declare (a name several declare: one row)."""
    rows = []
    for declared in own_settings().values():
        s = declared[0][1]
        kind = "bool" if s.type is bool else s.type
        allowed = "" if s.type is bool else f", {s.allowed}"
        rows.append(Flag(s.flag, s.path, kind, f"{s.help}{allowed}"))
    return rows


def flag_table() -> list[Flag]:
    """Every settings flag: the RunConfig fields' rows, then each optimizer's own settings after the optimizer rows.

    The help of an optimizer setting opens with the registered optimizers that read it when not all
    do (``"sgd, rmsprop: momentum in [0, 1)"``). Read at
    call time, so an entry added to a registry (even inside a test) shows up at once.
    """
    last_optim = CONFIG_FLAGS.index(OPTIM_FLAGS[-1]) + 1
    rows = CONFIG_FLAGS[:last_optim] + optimizer_flags() + CONFIG_FLAGS[last_optim:]
    return [r._replace(help=_for_whom(r.path) + r.help) if r.path.startswith("optim.") else r for r in rows]


def flag_default(path: str) -> str:
    """The default of the setting ``path`` as --help shows it.

    A RunConfig field's default; for a field left None for the optimizer to decide (``optim.momentum``)
    and for an optimizer's own setting, each optimizer's default (``"sgd 0.9, rmsprop 0"``), or the
    one value when they all agree.
    """
    section, _, name = path.partition(".")
    config = RunConfig().to_dict()[section]
    if name in config and (config[name] is not None or section != "optim"):
        return _text(config[name])
    per = {}
    for opt in users(path):
        spec = OPTIMIZERS[opt]
        value = spec.field_defaults.get(name) if name in config else spec.setting(name).default
        if value is not None:
            per[opt] = value
    if not per:
        return "None"
    if len(set(map(repr, per.values()))) == 1:
        return _text(next(iter(per.values())))
    return "the optimizer's: " + ", ".join(f"{opt} {_text(v)}" for opt, v in per.items())
