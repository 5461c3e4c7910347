"""The name registries in one table: every choice the CLI, the dashboard and validation offer.

``config`` knows values, not names: it sits below the models and training packages and imports
neither. The names of architectures, spectral layouts, optimizers and schedules live in their
registries (``fnodiag.models.MODELS``, ``SPECTRAL_LAYOUTS``, ``fnodiag.training.optimizers.OPTIMIZERS``,
``fnodiag.training.schedulers.SCHEDULERS``); :data:`CHOICES` maps each setting to its registry (the
dict itself, so a key added to a registry shows up everywhere) and :func:`check_names` validates a
:class:`~fnodiag.config.RunConfig` against them. Adding an optimizer or an architecture therefore
touches one file, its registry. Importing this module imports torch, never Lightning.
"""

from __future__ import annotations

from collections.abc import Mapping

from fnodiag.config import RunConfig, check_choice
from fnodiag.models import MODELS, SPECTRAL_LAYOUTS
from fnodiag.training.optimizers import OPTIMIZERS
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
    """Raise a one-line :class:`~fnodiag.config.ConfigError` when a name in ``cfg`` is not registered.

    Returns ``cfg`` (validated values are :meth:`RunConfig.validate`'s job; call both).
    """
    for setting, registry in CHOICES.items():
        section, name = setting.split(".")
        check_choice(section, name, getattr(getattr(cfg, section), name), registry)
    return cfg


def validated(cfg: RunConfig) -> RunConfig:
    """``cfg`` with its values (:meth:`RunConfig.validate`) and its names (:func:`check_names`) checked."""
    return check_names(cfg.validate())
