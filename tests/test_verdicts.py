"""Verdicts that say what happened: per-run outcomes, the control-checked sweep verdict, remove-one attribution.

The outcome classifier is a pure function fed dicts; the sweep verdict is checked on a real tiny sweep
whose control cannot learn (one epoch) and on run folders written through :class:`~fnodiag.runs.RunDir`
(the files a finished run leaves: config.json, status.json, metrics.json, collapse.json).
"""

from __future__ import annotations

import json

import pytest
from conftest import TINY

from fnodiag.analysis.outcome import OUTCOMES, run_outcome
from fnodiag.runs import RunDir
from fnodiag.sweeps.definition import load_definition, run_name
from fnodiag.sweeps.runner import run_sweep
from fnodiag.sweeps.summary import write_summary

FP = {"amp_ssim": 0.25, "amp_mae": 0.5}


def _collapse(verdict="healthy", *, ltc=False, onset=None, best_at=False, last_at=False):
    return {
        "verdict": verdict,
        "learned_then_collapsed": ltc,
        "onset_step": onset,
        "best_weights": {"criterion": "val_loss (min)", "at_fingerprint": best_at},
        "metrics": {"best": {"at_fingerprint": best_at}, "last": {"at_fingerprint": last_at}},
    }


@pytest.mark.parametrize(
    "state, collapse, ssim, expected",
    [
        ("finished", _collapse(), 0.85, "learned"),
        ("finished", _collapse(), 0.80, "learned"),  # the target itself counts
        ("finished", _collapse(), 0.79, "below target"),
        ("finished", _collapse(), None, "below target"),
        ("finished", _collapse("collapsed", ltc=True, last_at=True), 0.25, "learned then collapsed"),
        ("finished", _collapse("collapsed", onset=120), 0.30, "learned then collapsed"),  # onset after learning
        ("finished", _collapse("collapsed", best_at=True, last_at=True), 0.25, "never learned"),
        ("finished", _collapse("healthy", best_at=True), 0.26, "never learned"),  # best weights constant already
        ("finished", {}, 0.9, "learned"),  # no collapse.json: the score decides
        ("diverged", _collapse(), None, "diverged"),
        ("interrupted", _collapse(), 0.9, "stopped"),
        ("failed", None, None, "stopped"),
        ("stopped", None, None, "stopped"),
        ("running", None, None, "stopped"),
        (None, None, None, "stopped"),
    ],
)
def test_run_outcome(state, collapse, ssim, expected):
    assert run_outcome(state, collapse, ssim) == expected
    assert expected in OUTCOMES


def _definition(tmp_path, arms: dict[str, dict], *, control="control", baseline=None, name="tiny"):
    entries = lambda fields: [f'"{k}" = {json.dumps(v)}' for k, v in fields.items()]
    lines = [f'name = "{name}"', "seeds = [7, 8]", f'control = "{control}"']
    lines += [f'baseline = "{baseline}"'] if baseline else []
    lines += ["[shared]", *entries(TINY)]
    for arm, settings in arms.items():
        lines += [f"[arms.{arm}]", *entries(settings)]
    path = tmp_path / f"{name}.toml"
    path.write_text("\n".join(lines) + "\n")
    return load_definition(path)


@pytest.mark.slow
def test_sweep_with_a_crippled_control_is_inconclusive_and_says_why_first(tmp_path):
    """One epoch on the tiny problem: the control cannot reach 0.80, so nothing is claimed about the other arm."""
    defn = _definition(
        tmp_path,
        {"control": {"model.arch": "hybrid"}, "stable_sgd": {"model.arch": "stable_hybrid", "optim.name": "sgd"}},
    )
    out = run_sweep(defn, tmp_path / "s", seeds=[7], overrides={"train.epochs": 1}, echo=lambda _: None)
    manifest = json.loads((out / "sweep.json").read_text())
    assert manifest["control"] == "control" and manifest["spec"]["control"] == "control"
    summary = json.loads((out / "summary.json").read_text())
    v = summary["verdict"]
    ssim = summary["runs"][0]["last_amp_ssim"]
    assert summary["runs"][0]["outcome"] in ("below target", "never learned")
    assert v["conclusion"] == "inconclusive" and v["control"]["ok"] is False
    assert v["text"].startswith("Inconclusive: the control arm 'control' did not reach amp SSIM >= 0.80")
    assert f"seed 7: amp SSIM {ssim:.3f}" in v["text"]
    assert "stable_sgd" not in v["text"] and "avoided collapse" not in v["text"]
    assert v["avoided_collapse"] == [] and v["did_not"] == []
    md = (out / "summary.md").read_text()
    assert md.split("## Verdict\n\n")[1].startswith("Inconclusive: the control arm 'control'")
    assert "| control-s7 | finished | " + summary["runs"][0]["outcome"] + " |" in md
    assert "Probe: every run used the ideal disk probe" in md and summary["probe"].startswith("Probe: every run")
    effective = json.loads((out / "control-s7" / "effective_config.json").read_text())
    assert effective["data"]["probe"] == "ideal disk"


def test_control_not_run_or_not_finished_is_inconclusive(tmp_path):
    defn = _definition(tmp_path, {"control": {}, "other": {"optim.lr": 2e-3}})
    out = tmp_path / "s"
    _write_runs(out, defn, {("other", 7): "learned", ("other", 8): "learned"})
    v = write_summary(out)["verdict"]
    assert v["conclusion"] == "inconclusive"
    assert v["text"].startswith("Inconclusive: the control arm 'control' was not run in this sweep folder")
    _write_runs(
        out,
        defn,
        {("control", 7): "learned", ("control", 8): "stopped", ("other", 7): "learned", ("other", 8): "learned"},
    )
    v = write_summary(out)["verdict"]
    assert v["text"].startswith("Inconclusive: the control arm 'control' did not reach")
    assert "seed 8: no score (stopped, interrupted)" in v["text"] and "other" not in v["text"].split(".")[0]


# -- run folders with the records a finished run leaves ---------------------------------------------------

RECORDS = {  # outcome -> (status state, best amp SSIM, last amp SSIM, collapse.json fields)
    "learned": ("finished", 0.86, 0.85, _collapse()),
    "below target": ("finished", 0.61, 0.60, _collapse()),
    "learned then collapsed": ("finished", 0.70, 0.25, _collapse("collapsed", ltc=True, onset=40, last_at=True)),
    "never learned": ("finished", 0.25, 0.25, _collapse("collapsed", best_at=True, last_at=True)),
    "diverged": ("diverged", None, None, _collapse("insufficient_data")),
    "stopped": ("interrupted", None, None, None),
}


def _write_runs(out, defn, outcomes: dict[tuple[str, int], str]):
    """Run folders with config.json, status.json, metrics.json and collapse.json, and a sweep.json."""
    from fnodiag.sweeps.manifest import write_spec

    out.mkdir(parents=True, exist_ok=True)
    write_spec(out, defn, list(outcomes), {})
    for (arm, seed), outcome in outcomes.items():
        state, best, last, collapse = RECORDS[outcome]
        run = RunDir.create(out / run_name(arm, seed), defn.config(arm, seed), exist_ok=True)
        run.write_status(state, step=10, epoch=1)
        metric = lambda s: None if s is None else {"amp_ssim": s, "amp_mae": 0.1}
        run.write_metrics(metric(best), metric(last))
        if collapse is not None:
            run.write_json("collapse.json", collapse)


def test_working_control_verdict_names_what_happened_to_each_arm(tmp_path):
    arms = {
        a: {"optim.lr": lr}
        for a, lr in (
            ("control", 1e-3),
            ("good", 2e-3),
            ("collapsing", 3e-3),
            ("hopeless", 4e-3),
            ("weak", 5e-3),
            ("exploding", 6e-3),
        )
    }
    defn = _definition(tmp_path, arms)
    runs = {
        ("control", 7): "learned",
        ("control", 8): "learned",
        ("good", 7): "learned",
        ("good", 8): "learned",
        ("collapsing", 7): "learned then collapsed",
        ("collapsing", 8): "learned",
        ("hopeless", 7): "never learned",
        ("hopeless", 8): "never learned",
        ("weak", 7): "below target",
        ("weak", 8): "learned",
        ("exploding", 7): "diverged",
        ("exploding", 8): "stopped",
    }
    out = tmp_path / "s"
    _write_runs(out, defn, runs)
    summary = write_summary(out)
    got = {(r["arm"], r["seed"]): r["outcome"] for r in summary["runs"]}
    assert got == runs
    v = summary["verdict"]
    assert v["conclusion"] == "controlled" and v["control"]["ok"] is True
    assert v["text"].startswith("Control: the control arm 'control' learned on every seed (seed 7: amp SSIM 0.850")
    assert "Learned (amp SSIM >= 0.80, last weights) on every finished seed: control, good." in v["text"]
    assert "Learned then collapsed: collapsing (1/2 seeds)." in v["text"]
    assert "Never learned: hopeless (2/2 seeds)." in v["text"] and "Below target: weak (1/2 seeds)." in v["text"]
    assert "Diverged: exploding (1/2 seeds)." in v["text"] and "Incomplete: 1 of 12 runs" in v["text"]
    assert v["avoided_collapse"] == ["control", "good"]
    assert summary["arms"]["collapsing"]["n_collapsed"] == 1
    assert summary["arms"]["hopeless"]["n_collapsed"] == 0  # never learned is not a collapse
    assert summary["arms"]["hopeless"]["outcomes"] == {"never learned": 2}


def test_remove_one_condition_attribution_reads_the_changed_fields_from_the_configs(tmp_path):
    base = {"model.arch": "stable_hybrid", "train.forward_gain": "batch", "train.keep_partial_batch": True}
    arms = {
        "stable": base,
        "control": {**base, "model.arch": "hybrid"},
        "no_gain": {**base, "train.forward_gain": "none"},
        "drop_partial": {**base, "train.keep_partial_batch": False},
        "lr_low": {**base, "optim.lr": 3e-4},
    }
    defn = _definition(tmp_path, arms, baseline="stable")
    runs = {
        ("control", 7): "learned",
        ("control", 8): "learned",
        ("stable", 7): "learned then collapsed",
        ("stable", 8): "learned then collapsed",
        ("no_gain", 7): "learned",
        ("no_gain", 8): "learned",
        ("drop_partial", 7): "learned then collapsed",
        ("drop_partial", 8): "learned then collapsed",
        ("lr_low", 7): "learned",
        ("lr_low", 8): "learned then collapsed",
    }
    out = tmp_path / "s"
    _write_runs(out, defn, runs)
    att = write_summary(out)["attribution"]
    assert att["kind"] == "removal" and att["conclusion"] == "answered"
    rows = {t["arm"]: t for t in att["rows"]}
    assert set(rows) == {"no_gain", "drop_partial", "lr_low"}  # control: another architecture
    assert rows["no_gain"]["changed"] == [{"field": "train.forward_gain", "baseline": "batch", "arm": "none"}]
    assert rows["lr_low"]["condition"] == "optim.lr 0.001 → 0.0003"
    assert rows["no_gain"]["with"]["n_collapsed"] == 2 and rows["no_gain"]["without"]["n_collapsed"] == 0
    assert rows["no_gain"]["prevents"] and not rows["drop_partial"]["prevents"] and rows["lr_low"]["prevents"] is True
    assert att["text"].startswith("The baseline 'stable' learned then collapsed on 2/2 seeds.")
    assert (
        "Removing train.forward_gain batch → none (no_gain) prevents the collapse on 2/2 seeds (learned on 2)"
        in att["text"]
    )
    assert "train.keep_partial_batch true → false (drop_partial) does not: 2/2 seeds still collapse" in att["text"]
    md = (out / "summary.md").read_text()
    assert "## Attribution: remove one condition from `stable`" in md
    assert "| train.forward_gain batch → none | no_gain | 2/2 | 0/2 | 0.250 ± 0.000 | 0.850 ± 0.000 |" in md

    # the baseline did not collapse: nothing to remove
    _write_runs(out, defn, {**runs, ("stable", 7): "never learned", ("stable", 8): "learned"})
    att = write_summary(out)["attribution"]
    assert att["conclusion"] == "inconclusive"
    assert att["text"].startswith(
        "Inconclusive: the baseline 'stable' did not learn then collapse on most seeds "
        "(0/2 learned then collapsed, 1 learned)"
    )
    # the control did not learn: inconclusive, whatever the baseline did
    _write_runs(out, defn, {**runs, ("control", 8): "below target"})
    att = write_summary(out)["attribution"]
    assert att["text"].startswith("Inconclusive: the control arm 'control' did not reach amp SSIM >= 0.80")
    assert "prevents" not in att["text"]
