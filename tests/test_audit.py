"""The summary's proof (fnodiag.analysis.audit): expected effective configuration, comparison, realised LR.

Pure tests on hand-written records, then the reference's three failures faked in the records of a
real finished tiny sweep (Adam where SGD was asked; a warmup-cosine LR that never moved; a clip
asked and not applied), each of which must become a warning in summary.md / summary.json.
"""

from __future__ import annotations

import json
import shutil
import sqlite3

import pytest

from fnodiag.analysis.audit import (
    compare_effective,
    config_differences,
    expected_effective,
    generator_parameters,
    lookup,
    lr_differences,
    warning,
)
from fnodiag.config import RunConfig, resolve
from fnodiag.sweeps.summary import write_summary
from tests.conftest import TINY

SGD_WC = {
    "optim.name": "sgd",
    "optim.lr": 0.01,
    "optim.momentum": 0.5,
    "schedule.name": "warmup_cosine",
    "schedule.warmup_epochs": 1,
    "schedule.min_lr_ratio": 0.2,
    "clip.algorithm": "norm",
    "clip.value": 1.0,
}


def _unflatten(flat: dict) -> dict:
    """A nested record holding exactly ``flat`` (paths ``a.b[0].c``)."""
    import re

    out: dict = {}
    for path, value in flat.items():
        parts = re.findall(r"[^.\[\]]+|\[\d+\]", path)
        node = out
        for part, nxt in zip(parts, parts[1:]):
            key = int(part[1:-1]) if part.startswith("[") else part
            child = [] if nxt.startswith("[") else {}
            if isinstance(node, list):
                while len(node) <= key:
                    node.append(child)
                node = node[key]
            else:
                node = node.setdefault(key, child)
        last = parts[-1]
        if last.startswith("["):
            node.extend([None] * (int(last[1:-1]) + 1 - len(node)))
            node[int(last[1:-1])] = value
        else:
            node[last] = value
    return out


@pytest.fixture(scope="module")
def sgd_cfg() -> RunConfig:
    return resolve(overrides={**TINY, **SGD_WC})


def test_expected_effective_names_every_listed_field(sgd_cfg):
    exp = expected_effective(sgd_cfg)
    g = "optimizer.param_groups[0]"
    assert exp["optimizer.class"] == "SGD" and exp[f"{g}.momentum"] == 0.5 and exp[f"{g}.nesterov"] is True
    assert exp[f"{g}.initial_lr"] == 0.01 and exp[f"{g}.lr"] == pytest.approx(0.001)  # warmup starts at 0.1·lr
    assert (exp["scheduler.class"], exp["scheduler.stepped_by"], exp["scheduler.frozen"]) == (
        "WarmupCosineLR",
        "lightning",
        False,
    )
    assert (exp["scheduler.warmup_epochs"], exp["scheduler.min_lr_ratio"], exp["scheduler.total_epochs"]) == (1, 0.2, 2)
    assert (exp["grad_clip.algorithm"], exp["grad_clip.value"]) == ("norm", 1.0)
    for key in (
        "forward_gain",
        "generator.class",
        "generator.parameters",
        "generator.spectral_layout",
        "seed",
        "data.key",
        "precision",
    ):
        assert key in exp
    adam = expected_effective(sgd_cfg.override({"optim.name": "adam", "schedule.frozen": True}))
    assert adam[f"{g}.betas"] == [0.9, 0.999] and f"{g}.momentum" not in adam
    assert (adam["scheduler.frozen"], adam["scheduler.stepped_by"]) == (True, None)


def test_parameter_count_matches_a_real_generator(sgd_cfg):
    from fnodiag.models import build_model, count_parameters

    assert generator_parameters(sgd_cfg.model, 32) == count_parameters(build_model(sgd_cfg.model, 32))


def test_a_matching_record_passes_and_each_difference_is_named(sgd_cfg):
    exp = expected_effective(sgd_cfg)
    record = _unflatten(exp)
    assert compare_effective(exp, record) == []
    record["optimizer"]["param_groups"][0]["betas"] = [0.9, 0.999]  # extra fields are not differences
    assert compare_effective(exp, record) == []
    for path, bad in (
        ("optimizer.class", "Adam"),
        ("optimizer.param_groups[0].nesterov", False),
        ("scheduler.stepped_by", None),
        ("grad_clip.algorithm", "none"),
        ("forward_gain", "batch"),
        ("generator.parameters", 1),
        ("seed", 1),
        ("data.key", "other"),
        ("precision", "bf16-mixed"),
    ):
        broken = _unflatten({**exp, path: bad})
        assert compare_effective(exp, broken) == [{"field": path, "asked": exp[path], "got": bad}], path
    missing = _unflatten({k: v for k, v in exp.items() if k != "scheduler.frozen"})
    assert compare_effective(exp, missing)[0]["got"] == "(not recorded)"


def test_base_lr_is_read_from_lr_without_a_scheduler():
    cfg = resolve(overrides={**TINY, "optim.lr": 0.003})
    exp = expected_effective(cfg)
    record = _unflatten({k: v for k, v in exp.items() if not k.endswith("initial_lr")})
    assert compare_effective(exp, record) == []
    assert lookup(record, "optimizer.param_groups[0].lr") == 0.003 and lookup(record, "nope[3].x") == "(not recorded)"


def test_realised_lr_against_the_formula(sgd_cfg):
    epochs = [0, 0, 0, 1, 1, 1]
    moving = [0.001] * 3 + [0.01] * 3  # warmup 1 epoch from 0.1·lr, then cosine from lr
    assert lr_differences(sgd_cfg, epochs, moving) is None
    diff = lr_differences(sgd_cfg, epochs, [0.001] * 6, step=range(10, 16))
    assert (diff["step"], diff["epoch"], diff["n_differ"], diff["n_steps"]) == (13, 1, 3, 6)
    assert diff["asked"] == pytest.approx(0.01) and diff["got"] == 0.001
    frozen = sgd_cfg.override({"schedule.frozen": True})
    assert lr_differences(frozen, epochs, [0.001] * 6) is None and lr_differences(frozen, epochs, moving) is not None
    assert lr_differences(sgd_cfg.override({"schedule.name": "plateau"}), epochs, moving) is None  # no formula
    assert "at step 13 (epoch 1); 3 of 6 steps differ" in warning("r", diff)


def test_config_differences(sgd_cfg):
    unclipped = sgd_cfg.override({"clip.algorithm": "none"})
    assert config_differences(sgd_cfg, unclipped) == [
        {"field": "config.json clip.algorithm", "asked": "norm", "got": "none"},
        {"field": "config.json clip.value", "asked": 1.0, "got": 0.0},
    ]
    assert config_differences(sgd_cfg, sgd_cfg) == []


# -- the reference's three failures, faked in a real finished run ---------------------------------------------


@pytest.fixture(scope="module")
def finished_sweep(tmp_path_factory):
    """A real tiny sweep: one SGD + warmup-cosine arm, 2 epochs, clip asked by an override (``--grad-clip 1.0``)."""
    from fnodiag.sweeps.definition import load_definition
    from fnodiag.sweeps.runner import run_sweep

    d = tmp_path_factory.mktemp("audit")
    arm = {k: v for k, v in SGD_WC.items() if not k.startswith("clip.")}
    shared = {**TINY, "data.train_stride": 8, "data.test_stride": 16, "clip.algorithm": "none"}
    lines = [
        'name = "audit"',
        "seeds = [3]",
        "[shared]",
        *[f'"{k}" = {json.dumps(v)}' for k, v in shared.items()],
        "[arms.sgd_wc]",
        *[f'"{k}" = {json.dumps(v)}' for k, v in arm.items()],
    ]
    (d / "audit.toml").write_text("\n".join(lines) + "\n")
    out = run_sweep(load_definition(d / "audit.toml"), d / "sweep", overrides={"clip.value": 1.0}, echo=lambda _: None)
    return out


@pytest.fixture
def sweep_copy(finished_sweep, tmp_path):
    return shutil.copytree(finished_sweep, tmp_path / "sweep")


def _edit_effective(sweep, change):
    path = sweep / "sgd_wc-s3" / "effective_config.json"
    eff = json.loads(path.read_text())
    change(eff)
    path.write_text(json.dumps(eff))


def _assert_warned(sweep, text):
    summary = write_summary(sweep)
    assert any(text in w for w in summary["warnings"]), summary["warnings"]
    assert any(text in w for w in summary["runs"][0]["config_warnings"])
    md = (sweep / "summary.md").read_text()
    assert text in md and "| sgd_wc-s3 | finished ⚑ clipping ⚠" in md


def test_a_run_that_trained_as_asked_has_no_warning(finished_sweep):
    cfg = json.loads((finished_sweep / "sgd_wc-s3" / "config.json").read_text())
    assert cfg["clip"] == {"algorithm": "norm", "value": 1.0}  # the override reached the run (issue 11)
    summary = write_summary(finished_sweep)
    assert summary["warnings"] == [] and summary["runs"][0]["config_warnings"] == []
    assert "⚠" not in (finished_sweep / "summary.md").read_text().split("⚠ marks")[0]


def test_adam_where_sgd_was_asked(sweep_copy):
    _edit_effective(sweep_copy, lambda e: e["optimizer"].update({"class": "Adam"}))
    _assert_warned(sweep_copy, "sgd_wc-s3: optimizer.class asked 'SGD', got 'Adam'")


def test_warmup_cosine_whose_lr_never_moved(sweep_copy):
    with sqlite3.connect(sweep_copy / "sgd_wc-s3" / "run.sqlite") as db:  # every step at the first step's LR
        (lr_id,) = db.execute("SELECT id FROM names WHERE kind = 'scalar' AND text = 'lr'").fetchone()
        (first,) = db.execute("SELECT value FROM scalars WHERE name_id = ? ORDER BY id LIMIT 1", (lr_id,)).fetchone()
        db.execute("UPDATE scalars SET value = ? WHERE name_id = ?", (first, lr_id))
    _assert_warned(sweep_copy, "sgd_wc-s3: lr per step (warmup_cosine) asked 0.01, got 0.001")


def test_clip_asked_and_not_applied(sweep_copy):
    _edit_effective(sweep_copy, lambda e: e.update(grad_clip={"algorithm": "none", "value": None, "applied_by": None}))
    _assert_warned(sweep_copy, "sgd_wc-s3: grad_clip.algorithm asked 'norm', got 'none'")


def test_config_json_that_dropped_the_asked_clip(sweep_copy):
    """What `fnodiag sweep ... --grad-clip 1.0` recorded before issue 11: clip {none, 1.0}."""
    path = sweep_copy / "sgd_wc-s3" / "config.json"
    cfg = json.loads(path.read_text())
    cfg["clip"]["algorithm"] = "none"
    path.write_text(json.dumps(cfg))
    _assert_warned(sweep_copy, "sgd_wc-s3: config.json clip.algorithm asked 'norm', got 'none'")
