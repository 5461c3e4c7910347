"""RunConfig: validation messages, dict/file round trips, overrides and presets."""
from __future__ import annotations

import json

import pytest

from fnodiag.config import PRESETS, ConfigError, DataConfig, OptimConfig, RunConfig, preset


def test_round_trip_through_dict_and_file(tmp_path):
    cfg = preset("stage-a").override({"optim.name": "sgd", "optim.nesterov": False, "model.channel_cap": 128,
                                      "train.val_batching": "train", "train.keep_partial_batch": True})
    assert RunConfig.from_dict(cfg.to_dict()) == cfg
    cfg.save(tmp_path / "config.json")
    assert RunConfig.load(tmp_path / "config.json") == cfg


@pytest.mark.parametrize("override, words", [
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
])
def test_validation_names_field_and_allowed_values(override, words):
    with pytest.raises(ConfigError) as info:
        RunConfig().override(override).validate()
    message = str(info.value)
    assert "\n" not in message
    for word in words:
        assert word in message


def test_unknown_keys_are_rejected_with_the_valid_ones():
    with pytest.raises(ConfigError, match="unknown setting 'optim.learning_rate'"):
        RunConfig().override({"optim.learning_rate": 1e-3})
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
    from fnodiag.simulate import dataset_key

    a, b = DataConfig(nphotons=10**9), DataConfig(nphotons=1e9)
    assert a == b and isinstance(a.nphotons, float)
    assert dataset_key(a) == dataset_key(b)
    assert RunConfig().override({"optim.lr": 1}).optim.lr == 1.0
