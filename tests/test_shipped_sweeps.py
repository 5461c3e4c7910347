"""Every shipped sweep definition, every arm, run end to end at a tiny size; arms that train on other data.

One test per definition in ``fnodiag/sweeps/definitions`` (parametrized over :func:`shipped_definitions`,
so a definition added later is run without editing this file): all its arms for one seed, through
:func:`run_sweep` in this process, at the TINY size of ``conftest.py`` and one epoch. It checks the
datasets (one per distinct data setting, simulated once each; only the declared ``data_arms`` train on
other data), training, the checkpoint captures, ``summary.md`` / ``summary.json``, the verdict and,
where the definition asks an attribution question (a ``baseline``, or arms with reference conditions),
the attribution table with a row for every condition.
"""

from __future__ import annotations

import json

import pytest
from conftest import TINY

import fnodiag.ptycho.simulate as simulate_module
from fnodiag.cli import main
from fnodiag.config import ConfigError, reference_quirks
from fnodiag.ptycho.simulate import dataset_key
from fnodiag.runs import RunDir, states
from fnodiag.sweeps.data import data_report, data_warnings
from fnodiag.sweeps.definition import SweepDefinition, load_definition, run_name, shipped_definitions
from fnodiag.sweeps.runner import run_sweep
from fnodiag.sweeps.summary import write_summary


def tiny_overrides(defn: SweepDefinition) -> dict:
    """TINY, one epoch, less every setting an arm of ``defn`` sets itself (an override applies to every arm
    and would erase the condition the arm tests, e.g. phase5's ``phase_on`` sets ``data.set_phi``)."""
    tiny = {**TINY, "train.epochs": 1}
    del tiny["train.capture_every"]  # the definitions' own live capture runs too
    return {k: v for k, v in tiny.items() if not any(k in arm for arm in defn.arms.values())}


@pytest.mark.slow
@pytest.mark.parametrize("name", shipped_definitions())
def test_shipped_definition_runs_every_arm_end_to_end(name, tmp_path, monkeypatch):
    defn = load_definition(name)
    seed, overrides = defn.seeds[0], tiny_overrides(defn)
    configs = {arm: defn.config(arm, seed, overrides) for arm in defn.arms}
    assert all(c.data.N == 32 and c.model.width == 4 and c.train.epochs == 1 for c in configs.values())
    keys = {arm: dataset_key(c.data) for arm, c in configs.items()}
    ref = defn.data_reference
    simulated, original, where = [], simulate_module.simulate, tmp_path / name
    started = lambda: [p.name for p in where.glob(f"*-s{seed}")]  # run folders that exist when a dataset is made
    monkeypatch.setattr(
        simulate_module, "simulate", lambda c: simulated.append((dataset_key(c), started())) or original(c)
    )

    out = run_sweep(defn, where, seeds=[seed], overrides=overrides, echo=lambda _: None, cpus_per_run=1)

    # datasets: one per distinct data setting, simulated once each before any run starts; only declared data arms differ
    assert sorted(simulated) == sorted((key, []) for key in set(keys.values()))
    assert {p.name for p in (out / "datasets").iterdir()} == set(keys.values())
    assert {arm for arm, key in keys.items() if key != keys[ref]} == set(defn.data_arms)
    for arm, cfg in configs.items():  # training and capture, each on its own data
        run = RunDir(out / run_name(arm, seed))
        assert run.read_config() == cfg
        assert run.read_status()["state"] in states.DONE, (arm, run.read_status())
        assert run.read_json("effective_config.json")["data"]["key"] == keys[arm]
        for tag in ("best", "last"):
            assert run.read_capture(tag)["summary"]["n_samples"] > 0, (arm, tag)
        assert not run.capture_error_path.exists()

    summary = json.loads((out / "summary.json").read_text())
    md = (out / "summary.md").read_text()
    assert [r["arm"] for r in summary["runs"]] == list(defn.arms)
    assert all(r["state"] in states.DONE and r["epochs"] == "1/1" for r in summary["runs"])
    verdict = summary["verdict"]
    assert verdict["conclusion"] in (("inconclusive", "controlled") if defn.control else ("no control",))
    assert verdict["text"] and verdict["text"] in md
    assert sum(sum(o.values()) for o in verdict["outcomes"].values()) == len(defn.arms)
    # per arm: its dataset and whether that is other data than the reference arm's, as the definition declares
    for arm, entry in summary["arms"].items():
        assert entry["data_key"] == keys[arm]
        assert entry["other_data"] is (keys[arm] != keys[ref]) and entry["data_arm"] is (arm in defn.data_arms)
    assert not any("dataset" in w for w in summary["warnings"]), summary["warnings"]
    assert "## Data" in md
    for arm in defn.data_arms:
        assert f"| {arm} | {keys[arm]} | yes, the arm's condition |" in md
        assert arm in summary["data"]["note"]
    if not defn.data_arms:
        assert f"Every arm trained on one dataset, `{keys[ref]}`." in md

    att = summary["attribution"]
    if defn.baseline:  # remove one condition: every arm but the baseline and the control is one condition
        assert att["kind"] == "removal" and att["conclusion"] in ("inconclusive", "answered")
        rows = {t["arm"]: t for t in att["rows"]}
        assert set(rows) == set(defn.arms) - {defn.baseline, defn.control}
        for arm, t in rows.items():
            assert t["changed"] and t["without"]["n_done"] == 1 and t["with"]["n_done"] == 1
            assert t["other_data"] is (arm in defn.data_arms) and t["data_arm"] is (arm in defn.data_arms)
            note = " (other data: the arm's condition)" if arm in defn.data_arms else ""
            assert (
                f"| {t['condition']}{note} | {arm} | 0/1 |" in md or f"| {t['condition']}{note} | {arm} | 1/1 |" in md
            )
    elif any(reference_quirks(c) for c in configs.values()):  # add conditions: every arm with one is a row
        assert att["kind"] == "additive" and att["conclusion"] in ("inconclusive", "answered")
        quirky = {arm: reference_quirks(c) for arm, c in configs.items() if reference_quirks(c)}
        rows = {t["arm"]: t for t in att["rows"]}
        assert {arm: t["conditions"] for arm, t in rows.items()} == quirky
        assert all(t["baseline"] is not None and t["with"]["n_done"] == 1 for t in rows.values())
        for arm, t in rows.items():
            assert f"| {arm} | {', '.join(t['conditions'])} | {t['baseline']} |" in md
    else:
        assert att is None


def test_data_arms_must_be_declared_and_true(tmp_path, capsys):
    base = '[arms.a]\n"model.arch" = "stable_hybrid"\n[arms.b]\n"model.arch" = "hybrid"\n"data.nimgs_train" = 2\n'
    path = tmp_path / "d.toml"
    path.write_text('name = "d"\nseeds = [1]\n' + base)
    with pytest.raises(ConfigError) as err:
        load_definition(path)
    assert "arm(s) 'b' (data.nimgs_train 1 → 2) train on other data than 'a'" in str(err.value)
    assert 'declare it with the top-level line data_arms = ["b"]' in str(err.value)
    assert main(["sweep", str(path), "--out", str(tmp_path / "out")]) == 2  # one line, nothing written
    assert 'data_arms = ["b"]' in capsys.readouterr().err and not (tmp_path / "out").exists()

    path.write_text('name = "d"\nseeds = [1]\ndata_arms = ["b"]\n' + base)
    defn = load_definition(path)
    assert defn.data_arms == ("b",) and defn.data_reference == "a"
    assert defn.data_arms_changes() == {"b": [{"field": "data.nimgs_train", "reference": 1, "arm": 2}]}
    assert SweepDefinition.from_dict(json.loads(json.dumps(defn.to_dict()))) == defn  # sweep.json keeps it
    # a flag applied to every arm may erase the difference: no longer an error once the run starts
    assert defn.data_arms_changes({"data.nimgs_train": 3}) == {}
    assert defn.data_arms_changes({"train.seed": 5}, seed=5) == defn.data_arms_changes()  # `--seed 5` of a sweep

    for head, match in (
        ('data_arms = ["b", "c"]', "'c', which is not one of its arms"),
        ('data_arms = ["a", "b"]', "'a', the arm whose data the others are compared with"),
        ('data_arms = "b"', "must be a list of arm names"),
    ):
        path.write_text(f'name = "d"\nseeds = [1]\n{head}\n' + base)
        with pytest.raises(ConfigError, match=match):
            load_definition(path)
    path.write_text('name = "d"\nseeds = [1]\ndata_arms = ["b"]\n' + base.replace('"data.nimgs_train" = 2\n', ""))
    with pytest.raises(ConfigError, match="data_arms names 'b', which train.s. on the same data as 'a'"):
        load_definition(path)
    # the baseline, else the control, is the reference
    path.write_text('name = "d"\nseeds = [1]\ncontrol = "b"\ndata_arms = ["a"]\n' + base)
    assert load_definition(path).data_arms_changes() == {"a": [{"field": "data.nimgs_train", "reference": 2, "arm": 1}]}


def _row(arm, key, nimgs=1):
    return {"arm": arm, "data_key": key, "expected": {"data": {"N": 32, "nimgs_train": nimgs}}}


def test_data_warnings_name_undeclared_and_erased_data_arms():
    rows = [_row("a", "k1"), _row("b", "k2", 2), _row("c", "k1")]
    declared = data_report(rows, "a", ["b"])
    assert declared["arms"]["b"] | {"changed": None} == {
        "data_key": "k2",
        "other_data": True,
        "declared": True,
        "changed": None,
        "condition": "data.nimgs_train 1 → 2",
    }
    assert declared["note"].startswith("b trains on other data than a: that is the arm's condition")
    assert data_warnings(rows, declared) == []
    assert data_warnings(rows, data_report(rows, "a")) == [
        "runs trained on different datasets: arm b trained on k2 (data.nimgs_train 1 → 2), not on a's k1, "
        "and the definition does not declare it a data arm (data_arms)"
    ]
    erased = data_warnings(rows, data_report(rows, "a", ["c"]))
    assert erased[-1].startswith("arm c is declared a data arm (data_arms) but trained on the same dataset as a")
    assert data_warnings(rows, data_report(rows, None)) == ["runs trained on different datasets: k1, k2"]
    split = [*rows, {**_row("c", "k3"), "seed": 2}]
    assert "the seeds of arm c trained on different datasets: k1, k3" in data_warnings(split, data_report(split, "a"))


@pytest.mark.slow
def test_summary_of_a_sweep_with_a_data_arm(tiny_sweep, tmp_path):
    """A real tiny sweep whose arm `more` trains on two objects: its own dataset, declared, said so; undeclared
    (the manifest edited as an older definition would have it), the same folder warns."""
    path = tiny_sweep({"plain": {"model.arch": "hybrid"}, "more": {"model.arch": "hybrid", "data.nimgs_train": 2}})
    path.write_text(path.read_text().replace("seeds = [7]", 'seeds = [7]\ndata_arms = ["more"]'))
    lines = []
    out = run_sweep(
        load_definition(path), tmp_path / "s", overrides={"train.epochs": 1}, echo=lines.append, cpus_per_run=1
    )
    plain, more = (RunDir(out / f"{a}-s7").read_json("effective_config.json")["data"] for a in ("plain", "more"))
    assert plain["key"] != more["key"] and (more["n_train"], plain["n_train"]) == (162, 81)
    assert {p.name for p in (out / "datasets").iterdir()} == {plain["key"], more["key"]}
    assert any(line.startswith(f"dataset {more['key']}: more (data arm: data.nimgs_train)") for line in lines)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["warnings"] == [] and summary["arms"]["more"]["other_data"] is True
    assert summary["arms"]["plain"]["other_data"] is False and summary["data"]["reference"] == "plain"
    assert (
        f"| more | {more['key']} | yes, the arm's condition | data.nimgs_train 1 → 2 |"
        in (out / "summary.md").read_text()
    )

    manifest = json.loads((out / "sweep.json").read_text())
    manifest["spec"]["data_arms"] = []
    (out / "sweep.json").write_text(json.dumps(manifest))
    warns = write_summary(out)["warnings"]
    assert any("arm more trained on" in w and "does not declare it a data arm" in w for w in warns)
    assert "yes ⚠ not declared" in (out / "summary.md").read_text()
