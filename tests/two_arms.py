"""A real two-arm sweep of tiny runs (two seeds each, live capture every 2 steps) for comparison tests.

``build_two_arm_sweep(root)`` writes the definition, runs it (``fnodiag.sweeps.runner.run_sweep``, in this process) and
returns the sweep folder ``root/tiny2`` (``adam-s7``, ``adam-s8``, ``sgd-s7``, ``sgd-s8``).
"""

from __future__ import annotations

import json
from pathlib import Path

from conftest import TINY

ARMS = {"adam": {"optim.name": "adam"}, "sgd": {"optim.name": "sgd", "optim.lr": 0.01}}


def build_two_arm_sweep(root: Path, *, epochs: int = 1) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    entries = lambda fields: [f'"{k}" = {json.dumps(v)}' for k, v in fields.items()]  # JSON scalars are TOML
    shared = {**TINY, "train.epochs": epochs, "train.capture_every": 2}
    lines = ['name = "tiny2"', "seeds = [7, 8]", 'control = "adam"', "[shared]", *entries(shared)]
    for arm, settings in ARMS.items():
        lines += [f"[arms.{arm}]", *entries(settings)]
    definition = root.parent / "tiny2.toml"
    definition.write_text("\n".join(lines) + "\n")
    from fnodiag.sweeps.definition import load_definition
    from fnodiag.sweeps.runner import run_sweep

    return run_sweep(load_definition(definition), root / "tiny2", echo=lambda _line: None)
