"""RunConfig: validation messages, dict/file round trips, overrides and presets."""

from __future__ import annotations

import json

import pytest

from fnodiag.config import PRESETS, ConfigError, DataConfig, OptimConfig, RunConfig, preset
from fnodiag.training.registries import validated


def test_round_trip_through_dict_and_file(tmp_path):
    cfg = preset("stage-a").override(
        {
            "optim.name": "sgd",
            "optim.nesterov": False,
            "model.channel_cap": 128,
            "train.val_batching": "train",
            "train.keep_partial_batch": True,
        }
    )
    assert RunConfig.from_dict(cfg.to_dict()) == cfg
    cfg.save(tmp_path / "config.json")
    assert RunConfig.load(tmp_path / "config.json") == cfg


@pytest.mark.parametrize(
    "override, words",
    [
        ({"optim.lr": 0.0}, ["optim.lr", "> 0"]),
        ({"optim.momentum": 1.0}, ["optim.momentum", "[0, 1)"]),
        ({"optim.beta2": 1.5}, ["optim.beta2", "[0, 1)"]),
        ({"optim.weight_decay": -1e-3}, ["optim.weight_decay", ">= 0"]),
        ({"optim.name": "lamb"}, ["optim.name", "adam", "adamw", "sgd"]),
        ({"schedule.name": "cyclic"}, ["schedule.name", "warmup_cosine", "plateau"]),
        ({"clip.algorithm": "norm", "clip.value": 0.0}, ["clip.value", "> 0"]),
        ({"model.arch": "unet"}, ["model.arch", "hybrid", "stable_hybrid", "prenorm_hybrid"]),
        ({"data.N": 48}, ["data.N", "32", "64", "128"]),
        ({"data.nphotons": -5.0}, ["data.nphotons", "> 0"]),
        ({"data.probe_npz": "/nonexistent/probe.npz"}, ["probe_npz", "does not exist"]),
        ({"train.loss": "l2"}, ["train.loss", "mae", "poisson"]),
        ({"train.val_batching": "64"}, ["train.val_batching", "auto", "train", "infer"]),
        ({"train.keep_partial_batch": 1}, ["train.keep_partial_batch", "true or false"]),
    ],
)
def test_validation_names_field_and_allowed_values(override, words):
    with pytest.raises(ConfigError) as info:
        validated(RunConfig().override(override))  # values (config) and registry names (training.registries)
    message = str(info.value)
    assert "\n" not in message
    for word in words:
        assert word in message


def test_unknown_keys_are_rejected_with_the_valid_ones():
    with pytest.raises(ConfigError, match="unknown setting 'optim.learning_rate'"):
        validated(RunConfig().override({"optim.learning_rate": 1e-3}))  # optim.<name>: the registry's check
    with pytest.raises(ConfigError, match="unknown setting 'model.learning_rate'"):
        RunConfig().override({"model.learning_rate": 1e-3})
    with pytest.raises(ConfigError, match="valid: .*beta1"):
        RunConfig.from_dict({"optim": {"betas": [0.9, 0.99]}})
    with pytest.raises(ConfigError, match="unknown configuration section"):
        RunConfig.from_dict({"optimiser": {}})


def test_override_skips_none_and_keeps_other_fields():
    cfg = RunConfig().override({"optim.lr": 5e-4, "optim.momentum": None})
    assert cfg.optim.lr == 5e-4 and cfg.optim.momentum == OptimConfig().momentum


def test_stage_a_preset_is_the_seed_investigation():
    cfg = preset("stage-a")
    assert (cfg.data.N, cfg.data.nimgs_train, cfg.data.nimgs_test) == (64, 1, 1)
    assert (cfg.model.blocks, cfg.train.seed, cfg.train.epochs, cfg.train.batch_size) == (4, 20260128, 20, 16)
    assert (cfg.schedule.name, cfg.schedule.warmup_epochs, cfg.schedule.min_lr_ratio) == ("warmup_cosine", 5, 0.05)
    assert cfg.optim.lr == 3e-4
    assert set(PRESETS) >= {"stage-a", "quick"}
    with pytest.raises(ConfigError, match="stage-a"):
        preset("stage-b")


def test_load_reports_bad_json(tmp_path):
    p = tmp_path / "bad.json"
    p.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        RunConfig.load(p)
    p.write_text(json.dumps({"data": {"N": 64}}))
    assert RunConfig.load(p).data == DataConfig()


def test_integer_floats_are_normalised_so_cache_keys_agree():
    from fnodiag.ptycho.simulate import dataset_key

    a, b = DataConfig(nphotons=10**9), DataConfig(nphotons=1e9)
    assert a == b and isinstance(a.nphotons, float)
    assert dataset_key(a) == dataset_key(b)
    assert RunConfig().override({"optim.lr": 1}).optim.lr == 1.0


# -- one resolution path (issue 11) ------------------------------------------------------------------------


def test_resolve_applies_every_source_in_the_documented_order():
    from fnodiag.config import PRECEDENCE, resolve

    assert PRECEDENCE == ("defaults", "preset", "file", "shared", "arm", "overrides", "seed")
    layers = {
        "file": {"optim": {"lr": 1e-3, "name": "adamw"}},
        "shared": {"optim.lr": 2e-4, "train.epochs": 3},
        "arm": {"optim.lr": 3e-4},
        "overrides": {"optim.lr": 4e-4, "optim.beta1": None},
    }
    cfg = resolve(preset="quick", seed=7, **layers)
    assert (cfg.optim.lr, cfg.optim.name, cfg.train.epochs, cfg.train.seed, cfg.data.N) == (4e-4, "adamw", 3, 7, 32)
    assert cfg.optim.beta1 == 0.9  # None: not given
    lrs = [2e-3, 1e-3, 2e-4, 3e-4, 4e-4]  # quick's lr, then each later source's
    for top in range(len(lrs)):
        kept = dict(list(layers.items())[:top])
        assert resolve(preset="quick", **kept).optim.lr == lrs[top]


@pytest.mark.parametrize("source", ["file", "shared", "arm", "overrides"])
def test_the_clip_rule_holds_for_every_source(source):
    from fnodiag.config import resolve

    cfg = resolve(**{source: {"clip.value": 1.0}})
    assert (cfg.clip.algorithm, cfg.clip.value) == ("norm", 1.0)
    cfg = resolve(**{source: {"clip.value": 0}}, preset="quick")
    assert cfg.clip.algorithm == "none"


def test_clip_rule_across_layers_and_refused_combinations():
    from fnodiag.config import ClipConfig, resolve

    # the case: [shared] says no clipping, `fnodiag sweep ... --grad-clip 1.0`
    cfg = resolve(shared={"clip.algorithm": "none"}, overrides={"clip.value": 1.0})
    assert (cfg.clip.algorithm, cfg.clip.value) == ("norm", 1.0)
    cfg = resolve(shared={"clip.algorithm": "agc", "clip.value": 0.1}, overrides={"clip.value": 0.02})
    assert (cfg.clip.algorithm, cfg.clip.value) == ("agc", 0.02)  # a chosen algorithm is kept
    cfg = resolve(shared={"clip.algorithm": "norm", "clip.value": 1.0}, arm={"clip.algorithm": "none"})
    assert (cfg.clip.algorithm, cfg.clip.value) == ("none", 0.0)
    with pytest.raises(ConfigError, match="no effect with clip.algorithm='none'"):
        RunConfig(clip=ClipConfig("none", 1.0)).validate()
    with pytest.raises(ConfigError, match="--grad-clip"):
        resolve(overrides={"clip.algorithm": "value"})


def test_resolve_errors_name_the_source_and_the_seed_conflict():
    from fnodiag.config import resolve

    with pytest.raises(ConfigError, match=r"unknown setting 'train.epoch'.*\(in sweep arm\)"):
        resolve(arm={"train.epoch": 1})
    with pytest.raises(ConfigError, match=r"unknown setting 'optim.lrr'"):  # an optimizer setting: the registry's
        validated(resolve(arm={"optim.lrr": 1}))
    with pytest.raises(ConfigError, match="conflicts with the sweep seed 3"):
        resolve(overrides={"train.seed": 4}, seed=3)
    assert resolve(overrides={"train.seed": 3}, seed=3).train.seed == 3


def test_sweep_tables_may_nest_sections(tmp_path):
    from fnodiag.sweeps.definition import load_definition

    path = tmp_path / "nested.toml"
    path.write_text(
        'name = "n"\nseeds = [1]\n[shared]\noptim.lr = 0.002\n[arms.a.optim]\nname = "sgd"\n'
        '[arms.a]\n"clip.value" = 0.5\n'
    )
    cfg = load_definition(path).config("a", 1)
    assert (cfg.optim.lr, cfg.optim.name, cfg.clip.algorithm, cfg.clip.value) == (0.002, "sgd", "norm", 0.5)
