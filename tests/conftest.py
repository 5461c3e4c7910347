"""Shared fixtures: a tiny run configuration and a session-wide dataset cache."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from fnodiag.config import RunConfig

torch.set_num_threads(2)

# N=32 patches of a 64-px object: 81 train / 16 test patches; a 2-level width-4 U-NO.
TINY = {
    "data.N": 32,
    "data.object_size": 64,
    "data.set_phi": True,
    "model.blocks": 2,
    "model.width": 4,
    "model.modes": 4,
    "train.epochs": 2,
    "train.batch_size": 8,
    "train.infer_batch_size": 16,
    "train.capture_every": 0,
    "train.accelerator": "cpu",
    "train.devices": "1",
}


@pytest.fixture(scope="session")
def tiny_cfg() -> RunConfig:
    """Frozen, so one instance serves every test."""
    return RunConfig().override(TINY).validate()


@pytest.fixture(scope="session")
def dataset_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("datasets")


@pytest.fixture
def count_transfers(monkeypatch):
    """Start counting device-to-host calls (Tensor.cpu / .item / .tolist); returns the counts dict.

    ``count_transfers(strict=True)`` also counts ``.numpy()`` and the implicit reads ``float(t)``,
    ``int(t)`` and ``bool(t)`` (``if torch.isfinite(loss):``), each a host synchronisation on a device.
    The methods stay patched for the rest of the test; the dict holds the live counts.
    """

    def start(*, strict: bool = False) -> dict:
        names = {"cpu": "cpu", "item": "item", "tolist": "tolist"}
        if strict:
            names.update(numpy="numpy", float="__float__", int="__int__", bool="__bool__")
        calls = dict.fromkeys(names, 0)
        for key, method in names.items():
            original = getattr(torch.Tensor, method)

            def counted(self, *a, _key=key, _orig=original, **k):
                calls[_key] += 1
                return _orig(self, *a, **k)

            monkeypatch.setattr(torch.Tensor, method, counted)
        return calls

    return start


@pytest.fixture
def tiny_sweep(tmp_path):
    """``tiny_sweep(arms, shared)`` writes the sweep definition "tiny" (seed 7) on the TINY configuration
    plus ``shared`` and returns its path; ``arms`` maps arm names to their settings."""

    def write(arms: dict[str, dict], shared: dict | None = None) -> Path:
        entries = lambda fields: [f'"{k}" = {json.dumps(v)}' for k, v in fields.items()]  # JSON scalars are TOML
        lines = ['name = "tiny"', "seeds = [7]", "[shared]", *entries({**TINY, **(shared or {})})]
        for arm, settings in arms.items():
            lines += [f"[arms.{arm}]", *entries(settings)]
        path = tmp_path / "tiny.toml"
        path.write_text("\n".join(lines) + "\n")
        return path

    return write


@pytest.fixture(scope="session")
def two_arm_sweep(tmp_path_factory):
    """A real sweep folder ``runs/tiny2``: arms adam / sgd x seeds 7, 8, two epochs, live capture every 2 steps."""
    from two_arms import build_two_arm_sweep

    return build_two_arm_sweep(tmp_path_factory.mktemp("two-arms") / "runs", epochs=2)


# -- browser tests (tests/test_browser*.py): the system Chromium through Playwright
REPO = Path(__file__).resolve().parent.parent
KEEP_ARTIFACTS = os.environ.get("FNODIAG_KEEP_ARTIFACTS", "") not in ("", "0")
CHROMIUM = os.environ.get("FNODIAG_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory) -> Path:
    """Where screenshots go: a temporary folder, or ``test-artifacts/`` under FNODIAG_KEEP_ARTIFACTS=1."""
    if KEEP_ARTIFACTS:
        (REPO / "test-artifacts").mkdir(exist_ok=True)
        return REPO / "test-artifacts"
    return tmp_path_factory.mktemp("artifacts")


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    with pytest.importorskip("playwright.sync_api").sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")),
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1600, "height": 1100},
        )
        for blank in context.pages:  # the start-up tab would sit in front of the tests' pages
            blank.close()
        try:
            yield context
        finally:
            context.close()
