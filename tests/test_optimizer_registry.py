"""The optimizer registry is the one home of optimizer knowledge (issue 24).

An optimizer registered from inside a test (``torch.optim.Adagrad`` with its own ``lr_decay``)
reaches the CLI, configuration checks, a real training run's ``config.json`` and
``effective_config.json``, the audit, the sweep summary, the dashboard's Launch form and its
label with no other edit; RAdam, NAdam and RMSprop train in a real tiny sweep with every
hyperparameter off its default and no warning. The expected torch arguments are written out by
hand here, not read from the registry, so an entry that loses a setting on the way is caught.
"""

from __future__ import annotations

import json

import pytest
import torch

from fnodiag.analysis.audit import audit_run
from fnodiag.cli import main
from fnodiag.config import ConfigError, OptimConfig, RunConfig, resolve
from fnodiag.dashboard.catalog import optimizer_label
from fnodiag.dashboard.launch import LaunchView
from fnodiag.dashboard.store import DashboardStore
from fnodiag.runs import RunDir
from fnodiag.sweeps.definition import load_definition
from fnodiag.sweeps.runner import run_sweep
from fnodiag.sweeps.summary import run_row, write_summary
from fnodiag.training.optimizers import OPTIMIZERS, OptimizerSpec, Range, Setting, build_optimizer, own_settings
from fnodiag.training.registries import flag_table, validated
from tests.conftest import TINY

LR_DECAY = Setting("lr_decay", 0.0, float, "learning-rate decay per step", Range(0))
ADAGRAD = OptimizerSpec(
    torch.optim.Adagrad,
    "Adagrad: per-parameter steps scaled by the accumulated squared gradients",
    lambda c: {"lr_decay": c.extra["lr_decay"], "weight_decay": c.weight_decay},
    settings=(LR_DECAY,),
)


def tiny_flags() -> list[str]:
    """``fnodiag train`` flags of the TINY configuration (tests/conftest.py), through the flag table."""
    rows = {r.path: r for r in flag_table()}
    out = []
    for path, value in TINY.items():
        flag = rows[path].flag
        out += ([flag] if value else ["--no-" + flag[2:]]) if rows[path].type == "bool" else [flag, str(value)]
    return out + ["--epochs", "1", "--no-progress"]


def _one_line_exit_2(argv, capsys, *words):
    with pytest.raises(SystemExit) as info:  # argparse exits itself; main returns 2 for a bad setting
        raise SystemExit(main(argv))
    assert info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    for word in words:
        assert word in err, err


def test_an_optimizer_registered_in_a_test_reaches_every_place(tmp_path, dataset_cache, monkeypatch, capsys):
    monkeypatch.setitem(OPTIMIZERS, "adagrad", ADAGRAD)
    # the flag table, so the CLI: a flag of its own, said to be adagrad's
    row = next(r for r in flag_table() if r.flag == "--lr-decay")
    assert row.path == "optim.lr_decay" and row.type is float and row.help.startswith("adagrad: ")
    # configuration checks: a bad value, a setting the chosen optimizer does not take, an unknown one
    with pytest.raises(ConfigError, match=r"optim.lr_decay=-1.0 must be a number >= 0") as info:
        validated(resolve(overrides={"optim.name": "adagrad", "optim.lr_decay": -1.0}))
    assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match="optim.lr_decay is not a setting of optimizer 'adam'.*adagrad"):
        validated(resolve(overrides={"optim.lr_decay": 0.1}))
    _one_line_exit_2(["train", "--optimizer", "adagrad", "--lr-decay", "-1"], capsys, "optim.lr_decay", ">= 0")
    _one_line_exit_2(["train", "--lr-decay", "0.1"], capsys, "not a setting of optimizer 'adam'")
    _one_line_exit_2(["train", "--optimizer", "adagrad", "--lr-dekay", "0.1"], capsys, "unrecognized arguments")

    # a real tiny run: the flags parse and reach config.json and effective_config.json
    root = tmp_path / "runs"
    argv = ["train", *tiny_flags(), "--optimizer", "adagrad", "--lr-decay", "0.1", "--weight-decay", "0.001"]
    assert main([*argv, "--out", str(root), "--name", "ada", "--cache-dir", str(dataset_cache)]) == 0
    run = RunDir(root / "ada")
    cfg = json.loads(run.config_path.read_text())
    assert cfg["optim"]["name"] == "adagrad" and cfg["optim"]["extra"] == {"lr_decay": 0.1}
    assert RunConfig.from_dict(cfg) == run.read_config() and run.read_config().optim.extra == {"lr_decay": 0.1}
    effective = json.loads(run.effective_config_path.read_text())
    group = effective["optimizer"]["param_groups"][0]
    assert effective["optimizer"]["class"] == "Adagrad" and (group["lr_decay"], group["weight_decay"]) == (0.1, 0.001)

    # the audit: nothing to say; a recorded param group that differs is named
    assert audit_run(run) == []
    broken = json.loads(json.dumps(effective))
    broken["optimizer"]["param_groups"][0]["lr_decay"] = 0.2
    run.write_json("effective_config.json", broken)
    assert audit_run(run) == ["ada: optimizer.param_groups[0].lr_decay asked 0.1, got 0.2"]
    run.write_json("effective_config.json", effective)

    # the summary: its row and its hyperparameter column
    row = run_row(run, "ada", 20260128)
    assert row["optimizer"] == "Adagrad" and row["hyperparameters"] == {"lr_decay": 0.1, "weight_decay": 0.001}
    assert row["config_warnings"] == []
    write_summary(root)
    assert "| Adagrad | 0.001000 | lr_decay=0.1 | 0.001 |" in (root / "summary.md").read_text()

    # the dashboard: its label, the overview row, the Launch form's choice and widgets
    label, lr = optimizer_label(effective, run.read_config())
    assert label.startswith("Adagrad lr_decay=0.1 weight_decay=0.001") and lr == pytest.approx(1e-3)
    assert [r["optimizer"] for r in DashboardStore(root).rows if r.get("optimizer")] == [label]
    view = LaunchView(store=DashboardStore(root))
    assert view.param.optimizer.objects[-1] == "adagrad" and "lr_decay" not in [
        p.partition(".")[2] for p in view.shown_settings()
    ]
    view.optimizer = "adagrad"
    assert view.shown_settings() == ["optim.lr", "optim.weight_decay", "optim.lr_decay"]
    assert view.settings.lr_decay == 0.0  # the entry's default
    assert (
        view.settings.param.lr_decay.label == "lr-decay" and "learning-rate decay" in view.settings.param.lr_decay.doc
    )
    view.settings.lr_decay = 0.25
    args = view.form_args()
    assert args[args.index("--optimizer") + 1] == "adagrad" and args[args.index("--lr-decay") + 1] == "0.25"
    assert "--momentum" not in args and "--eps" not in args  # what adagrad does not read is not passed
    view.settings.lr_decay = -1.0
    assert view.start_form() is None and "optim.lr_decay=-1.0 must be" in view.feedback.object
    assert view.launcher.runs == {}


def test_the_registry_is_consistent():
    """Each entry reads exactly the common fields it declares, and builds its class with its settings."""
    assert own_settings()  # names and types agree across entries
    probes = {"momentum": 0.31, "nesterov": False, "weight_decay": 0.07, "beta1": 0.71, "beta2": 0.91}
    for name, spec in OPTIMIZERS.items():
        base = spec.torch_kwargs(OptimConfig(name=name, momentum=0.5))
        for field, probe in probes.items():
            changed = spec.torch_kwargs(OptimConfig(name=name, **{"momentum": 0.5, field: probe}))
            assert (changed != base) == (field in spec.fields), (name, field)
        opt = build_optimizer([torch.nn.Parameter(torch.zeros(2))], OptimConfig(name=name))
        assert type(opt) is spec.cls
        group = opt.param_groups[0]
        for key, value in spec.torch_kwargs(OptimConfig(name=name)).items():
            assert group[key] == value, (name, key)


def test_momentum_none_is_the_optimizers_default_and_old_configs_still_hold(tmp_path):
    sgd = build_optimizer([torch.nn.Parameter(torch.zeros(1))], OptimConfig(name="sgd"))
    rms = build_optimizer([torch.nn.Parameter(torch.zeros(1))], OptimConfig(name="rmsprop"))
    assert (sgd.param_groups[0]["momentum"], sgd.param_groups[0]["nesterov"]) == (0.9, True)
    assert rms.param_groups[0]["momentum"] == 0.0
    old = RunConfig.from_dict({"optim": {"name": "sgd", "momentum": 0.9, "nesterov": None}})  # config.json before extra
    assert old.optim.extra == {} and validated(old).optim.momentum == 0.9
    path = tmp_path / "config.json"  # a run's config.json (extra nested) and a hand-written file (optim.<name>)
    for settings in ({"name": "rmsprop", "extra": {"alpha": 0.95}}, {"name": "rmsprop", "alpha": 0.95}):
        path.write_text(json.dumps({"optim": settings}))
        cfg = validated(resolve(file=path, overrides={"optim.centered": True}))
        assert cfg.optim.extra == {"alpha": 0.95, "centered": True}  # merged with the later layer
        assert RunConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


# Every hyperparameter of the three entries off its default; the torch arguments they must give, by hand.
THREE = {
    "radam": (
        {"optim.beta1": 0.85, "optim.beta2": 0.99, "optim.eps": 1e-6, "optim.decoupled_weight_decay": True},
        {"betas": [0.85, 0.99], "eps": 1e-6, "weight_decay": 1e-3, "decoupled_weight_decay": True},
    ),
    "nadam": (
        {"optim.beta1": 0.8, "optim.beta2": 0.98, "optim.eps": 1e-7, "optim.momentum_decay": 0.01}
        | {"optim.decoupled_weight_decay": True},
        {
            "betas": [0.8, 0.98],
            "eps": 1e-7,
            "weight_decay": 1e-3,
            "momentum_decay": 0.01,
            "decoupled_weight_decay": True,
        },
    ),
    "rmsprop": (
        {"optim.alpha": 0.9, "optim.eps": 1e-6, "optim.momentum": 0.5, "optim.centered": True},
        {"alpha": 0.9, "eps": 1e-6, "weight_decay": 1e-3, "momentum": 0.5, "centered": True},
    ),
}


@pytest.mark.slow  # three real trainings, their checkpoint captures and a summary
def test_radam_nadam_rmsprop_train_in_a_sweep_with_every_setting_as_asked(tiny_sweep, tmp_path):
    shared = {"train.epochs": 1, "optim.lr": 2e-3, "optim.weight_decay": 1e-3}
    arms = {name: {"optim.name": name, **settings} for name, (settings, _) in THREE.items()}
    defn = load_definition(tiny_sweep(arms, shared))
    for name, spec in OPTIMIZERS.items():
        if name in THREE:
            asked, default = defn.config(name, 7).optim, OptimConfig(name=name)
            for path, value in spec.values(asked).items():
                assert value != spec.values(default)[path], f"{name}: {path} left at its default"
    out = run_sweep(defn, tmp_path / "sweep", echo=lambda _: None)
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["runs"]) == 3 and not [w for w in summary["warnings"] if "asked" in w], summary["warnings"]
    md = (out / "summary.md").read_text()
    for row in summary["runs"]:
        name, (_, want) = row["arm"], THREE[row["arm"]]
        assert row["state"] == "finished" and row["config_warnings"] == [], (name, row["config_warnings"])
        effective = json.loads((out / row["run"] / "effective_config.json").read_text())
        assert effective["optimizer"]["class"] == OPTIMIZERS[name].cls.__name__
        group = effective["optimizer"]["param_groups"][0]
        assert {k: group[k] for k in want} == want and group["lr"] == 2e-3, name
        assert row["hyperparameters"] == want
        assert f"| {row['run']} | finished" in md
    assert "alpha=0.9 eps=1e-06 momentum=0.5 centered" in md and "momentum_decay=0.01" in md
