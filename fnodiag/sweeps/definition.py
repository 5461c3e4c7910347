"""Sweep definitions: TOML files of shared settings plus arms, run over seeds.

A definition is a TOML file::

    name = "stage-a"
    preset = "stage-a"                 # optional base preset
    seeds = [20260128, 20260129]
    control = "control"                # optional: the arm that must learn; baseline = "ARM" likewise
    data_arms = ["phase_on"]           # optional: the arms whose condition is other data (data.*)
    [shared]                           # "section.field" overrides for every arm
    "clip.algorithm" = "none"
    [arms.stable_sgd]                  # one table of overrides per arm
    "model.arch" = "stable_hybrid"
    "optim.name" = "sgd"

:func:`load_definition` reads a shipped definition (``definitions/*.toml``) or a file and validates
every arm, and that only the arms named in ``data_arms`` train on other data than the data reference
arm (the baseline, else the control, else the first arm; :mod:`fnodiag.sweeps.data`): each distinct
data setting is its own dataset, and a difference nobody declared is an error that says how to declare
it. :meth:`SweepDefinition.config` resolves one arm × seed through
:func:`fnodiag.config.resolve`. This module imports torch (the name registries), never Lightning:
the dashboard lists and reads definitions.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fnodiag.config import ConfigError, RunConfig, resolve
from fnodiag.sweeps.data import DATA_ARMS_KEY, check_declared, reference_arm
from fnodiag.training.registries import check_names  # torch, never Lightning

SHIPPED_DIR = Path(__file__).parent / "definitions"


@dataclass(frozen=True)
class SweepDefinition:
    """A parsed sweep definition; :meth:`config` gives the RunConfig of one arm and seed."""

    name: str
    seeds: tuple[int, ...]
    arms: dict[str, dict[str, Any]]
    shared: dict[str, Any] = field(default_factory=dict)
    preset: str | None = None
    description: str = ""
    source: str = ""
    control: str | None = None  # the arm that must learn for the sweep's verdict to answer anything
    baseline: str | None = None  # the arm the others are compared to, one changed condition at a time
    data_arms: tuple[str, ...] = ()  # the arms allowed to train on other data than the data reference arm

    def config(self, arm: str, seed: int, overrides: dict[str, Any] | None = None) -> RunConfig:
        """preset < shared < arm < overrides < ``train.seed = seed``, through :func:`fnodiag.config.resolve`."""
        if arm not in self.arms:
            raise ConfigError(f"sweep {self.name!r} has no arm {arm!r}; arms: {', '.join(self.arms)}")
        return check_names(
            resolve(preset=self.preset, shared=self.shared, arm=self.arms[arm], overrides=overrides, seed=seed)
        )

    @property
    def data_reference(self) -> str:
        """The arm whose data every arm not in ``data_arms`` shares: the baseline, else the control, else the first."""
        return reference_arm(self.arms, self.baseline, self.control)

    def data_arms_changes(
        self, overrides: dict[str, Any] | None = None, *, seed: int | None = None, strict: bool = False
    ) -> dict[str, list]:
        """``{arm: [data changes]}`` of the arms that train on other data than :attr:`data_reference`, every arm
        resolved with ``overrides`` for ``seed`` (default: the first of :attr:`seeds`).

        Raises
        ------
        ConfigError
            An arm not in ``data_arms`` changes the data (the message gives the line that declares it);
            with ``strict``, also an arm in ``data_arms`` that does not.
        """
        seed = self.seeds[0] if seed is None else seed
        data = {arm: self.config(arm, seed, overrides).to_dict()["data"] for arm in self.arms}
        where = repr(self.source or self.name)
        return check_declared(where, data, self.data_reference, self.data_arms, strict=strict)

    @classmethod
    def from_dict(cls, d: dict) -> SweepDefinition:
        """Inverse of :meth:`to_dict` (e.g. a manifest's ``spec``)."""
        return cls(
            name=d["name"],
            seeds=tuple(d["seeds"]),
            arms=dict(d["arms"]),
            shared=dict(d.get("shared") or {}),
            preset=d.get("preset"),
            description=d.get("description", ""),
            source=d.get("source", ""),
            control=d.get("control"),
            baseline=d.get("baseline"),
            data_arms=tuple(d.get(DATA_ARMS_KEY) or ()),
        )

    def to_dict(self) -> dict:
        """The definition as a JSON-able dict (``sweep.json`` ``spec``); :meth:`from_dict` reads it back."""
        return {
            "name": self.name,
            "description": self.description,
            "preset": self.preset,
            "seeds": list(self.seeds),
            "shared": self.shared,
            "arms": self.arms,
            "source": self.source,
            "control": self.control,
            "baseline": self.baseline,
            DATA_ARMS_KEY: list(self.data_arms),
        }


def shipped_definitions() -> list[str]:
    """Names of the definitions that ship with fnodiag."""
    return sorted(p.stem for p in SHIPPED_DIR.glob("*.toml"))


def load_definition(name_or_path: str | Path) -> SweepDefinition:
    """A shipped definition by name, or a TOML file by path; every arm is validated.

    Raises
    ------
    ConfigError
        Unknown name (lists the shipped ones), unreadable TOML, missing keys or a bad setting.
    """
    p = Path(name_or_path)
    if not p.is_file():
        if str(name_or_path) not in shipped_definitions():
            raise ConfigError(
                f"sweep definition {str(name_or_path)!r} is neither a file nor a shipped definition "
                f"({', '.join(shipped_definitions())})"
            )
        p = SHIPPED_DIR / f"{name_or_path}.toml"
    try:
        raw = tomllib.loads(p.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"sweep definition {str(p)!r} is not valid TOML ({exc})") from None
    keys = ("name", "description", "preset", "seeds", "shared", "arms", "control", "baseline", DATA_ARMS_KEY)
    unknown = set(raw) - set(keys)
    if unknown:
        raise ConfigError(f"sweep definition {str(p)!r} has unknown keys {sorted(unknown)}; valid: {', '.join(keys)}")
    if not raw.get("arms") or not raw.get("seeds"):
        raise ConfigError(
            f"sweep definition {str(p)!r} needs a non-empty 'seeds' list and at least one [arms.NAME] table"
        )
    seeds = raw["seeds"]
    if not (isinstance(seeds, list) and all(isinstance(x, int) and not isinstance(x, bool) for x in seeds)):
        raise ConfigError(
            f"sweep definition {str(p)!r}: seeds must be a TOML list of integers, e.g. seeds = [1, 2]; got {seeds!r}"
        )
    data_arms = raw.get(DATA_ARMS_KEY, [])
    if not (isinstance(data_arms, list) and all(isinstance(a, str) for a in data_arms)):
        raise ConfigError(
            f"sweep definition {str(p)!r}: {DATA_ARMS_KEY} must be a list of arm names, "
            f'e.g. {DATA_ARMS_KEY} = ["phase_on"]'
        )
    defn = SweepDefinition(
        name=str(raw.get("name", p.stem)),
        seeds=tuple(int(s) for s in raw["seeds"]),
        arms={str(k): dict(v) for k, v in raw["arms"].items()},
        shared=dict(raw.get("shared", {})),
        preset=raw.get("preset"),
        description=str(raw.get("description", "")),
        source=str(p),
        control=raw.get("control"),
        baseline=raw.get("baseline"),
        data_arms=tuple(data_arms),
    )
    for role in ("control", "baseline"):
        named = getattr(defn, role)
        if named is not None and named not in defn.arms:
            raise ConfigError(
                f"sweep definition {str(p)!r}: {role} = {named!r} is not one of its arms "
                f"({', '.join(defn.arms)}); name an [arms.NAME] table"
            )
    for arm in defn.data_arms:
        if arm not in defn.arms:
            raise ConfigError(
                f"sweep definition {str(p)!r}: {DATA_ARMS_KEY} names {arm!r}, which is not one of its arms "
                f"({', '.join(defn.arms)}); name an [arms.NAME] table"
            )
        if arm == defn.data_reference:
            raise ConfigError(
                f"sweep definition {str(p)!r}: {DATA_ARMS_KEY} names {arm!r}, the arm whose data the others are "
                "compared with (the baseline, else the control, else the first arm); remove it from data_arms"
            )
    for arm in defn.arms:
        defn.config(arm, defn.seeds[0])
    defn.data_arms_changes(strict=True)
    return defn


def run_name(arm: str, seed: int) -> str:
    """Run directory name of one arm and seed."""
    return f"{arm}-s{seed}"


def select(defn: SweepDefinition, arms: list[str] | None, seeds: list[int] | None) -> list[tuple[str, int]]:
    """The (arm, seed) pairs to run, in definition order; unknown arms are an error."""
    arms = list(arms or defn.arms)
    bad = [a for a in arms if a not in defn.arms]
    if bad:
        raise ConfigError(f"unknown arm(s) {', '.join(bad)} for sweep {defn.name!r}; arms: {', '.join(defn.arms)}")
    return [(a, int(s)) for a in arms for s in (seeds or defn.seeds)]
