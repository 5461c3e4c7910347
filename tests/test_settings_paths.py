"""Every ``fnodiag train`` flag reaches ``config.json`` and ``effective_config.json`` through every path.

One table (:data:`FLAGS`): a non-default value for every flag, the ``config.json`` field it must
set and the ``effective_config.json`` field that proves it trained. Five groups of flags (one per
schedule with settings of its own; RMSprop's and NAdam's settings in groups 4 and 5) are given,
each in one invocation, to ``fnodiag train`` and to ``fnodiag sweep`` (two arms, whose definition
sets values the flags must override); the dashboard's Launch form builds its command lines the
same way. Real training, tiny data, shared dataset cache.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from fnodiag.analysis.audit import audit_run, lookup
from fnodiag.cli import main
from fnodiag.config import DataConfig, RunConfig
from fnodiag.ptycho.simulate import dataset_key
from fnodiag.runs import RunDir
from fnodiag.training.registries import flag_default, flag_table

PROBE = "PROBE"  # replaced by a probe file written by the test
G = "optimizer.param_groups[0]"
DATA_KEY = "data.key"  # data settings are proven by the key of the dataset that trained

# (group, flag, raw value (None: a switch), config path, config value, effective path, effective value)
FLAGS = [
    (1, "--N", "32", "data.N", 32, "data.N", 32),
    (1, "--object-size", "64", "data.object_size", 64, DATA_KEY, None),
    (2, "--nimgs-train", "2", "data.nimgs_train", 2, "data.n_train", 2 * 25),
    (1, "--nimgs-test", "2", "data.nimgs_test", 2, "data.n_test", 2 * 9),
    (1, "--train-stride", "8", "data.train_stride", 8, "data.n_train", 25),
    (3, "--test-stride", "16", "data.test_stride", 16, "data.n_test", 9),
    (2, "--nphotons", "1e6", "data.nphotons", 1e6, DATA_KEY, None),
    (1, "--set-phi", None, "data.set_phi", True, "data.set_phi", True),
    (2, "--probe-npz", PROBE, "data.probe_npz", PROBE, DATA_KEY, None),
    (1, "--arch", "stable_hybrid", "model.arch", "stable_hybrid", "generator.block_class", "StableBlock"),
    (
        1,
        "--spectral-layout",
        "reference",
        "model.spectral_layout",
        "reference",
        "generator.spectral_layout",
        "reference",
    ),
    (1, "--blocks", "2", "model.blocks", 2, "generator.channels", [4, 8, 8]),
    (1, "--width", "4", "model.width", 4, "generator.channels[0]", 4),
    (1, "--modes", "4", "model.modes", 4, "generator.modes", 4),
    (2, "--channel-cap", "6", "model.channel_cap", 6, "generator.channels", [4, 6, 6]),
    (1, "--layerscale-init", "0.01", "model.layerscale_init", 0.01, "generator.layerscale_init", 0.01),
    (1, "--optimizer", "sgd", "optim.name", "sgd", "optimizer.class", "SGD"),
    (1, "--lr", "0.0123456789", "optim.lr", 0.0123456789, f"{G}.initial_lr", 0.0123456789),
    (1, "--momentum", "0.5", "optim.momentum", 0.5, f"{G}.momentum", 0.5),
    (1, "--no-nesterov", None, "optim.nesterov", False, f"{G}.nesterov", False),
    (1, "--weight-decay", "0.01", "optim.weight_decay", 0.01, f"{G}.weight_decay", 0.01),
    (2, "--beta1", "0.8", "optim.beta1", 0.8, f"{G}.betas[0]", 0.8),
    (2, "--beta2", "0.99", "optim.beta2", 0.99, f"{G}.betas[1]", 0.99),
    (5, "--eps", "1e-06", "optim.extra.eps", 1e-6, f"{G}.eps", 1e-6),
    (5, "--momentum-decay", "0.01", "optim.extra.momentum_decay", 0.01, f"{G}.momentum_decay", 0.01),
    (
        5,
        "--decoupled-weight-decay",
        None,
        "optim.extra.decoupled_weight_decay",
        True,
        f"{G}.decoupled_weight_decay",
        True,
    ),
    (4, "--alpha", "0.9", "optim.extra.alpha", 0.9, f"{G}.alpha", 0.9),
    (4, "--centered", None, "optim.extra.centered", True, f"{G}.centered", True),
    (1, "--scheduler", "warmup_cosine", "schedule.name", "warmup_cosine", "scheduler.class", "WarmupCosineLR"),
    (1, "--warmup-epochs", "1", "schedule.warmup_epochs", 1, "scheduler.warmup_epochs", 1),
    (1, "--min-lr-ratio", "0.2", "schedule.min_lr_ratio", 0.2, "scheduler.min_lr_ratio", 0.2),
    (2, "--gamma", "0.8", "schedule.gamma", 0.8, "scheduler.gamma", 0.8),
    (3, "--plateau-factor", "0.3", "schedule.plateau_factor", 0.3, "scheduler.factor", 0.3),
    (3, "--plateau-patience", "4", "schedule.plateau_patience", 4, "scheduler.patience", 4),
    (4, "--step-size", "3", "schedule.step_size", 3, "scheduler.step_size", 3),
    (4, "--step-gamma", "2.0", "schedule.step_gamma", 2.0, "scheduler.gamma", 2.0),
    (4, "--step-wd-gamma", "3.0", "schedule.step_wd_gamma", 3.0, "scheduler.wd_gamma", 3.0),
    (3, "--frozen-schedule", None, "schedule.frozen", True, "scheduler.frozen", True),
    (1, "--grad-clip", "1.5", "clip.value", 1.5, "grad_clip.value", 1.5),
    (1, "--grad-clip", "1.5", "clip.algorithm", "norm", "grad_clip.algorithm", "norm"),  # the configuration's rule
    (2, "--grad-clip-algorithm", "value", "clip.algorithm", "value", "grad_clip.algorithm", "value"),
    (1, "--epochs", "1", "train.epochs", 1, "max_epochs", 1),
    (1, "--batch-size", "8", "train.batch_size", 8, "batch_size", 8),
    (1, "--infer-batch-size", "8", "train.infer_batch_size", 8, "infer_batch_size", 8),
    (1, "--val-batching", "infer", "train.val_batching", "infer", "val_loader.batching", "infer"),
    (1, "--keep-partial-batch", None, "train.keep_partial_batch", True, "train_loader.drop_last", False),
    (1, "--seed", "5", "train.seed", 5, "seed", 5),
    (2, "--loss", "poisson", "train.loss", "poisson", "loss.name", "poisson"),
    (1, "--forward-gain", "batch", "train.forward_gain", "batch", "forward_gain", "batch"),
    (1, "--capture-every", "3", "train.capture_every", 3, "capture.every", 3),
    (1, "--frame-every", "2", "train.frame_every", 2, "frames.every", 2),
    (1, "--accelerator", "cpu", "train.accelerator", "cpu", "accelerator", "CPUAccelerator"),
    (1, "--devices", "1", "train.devices", "1", "num_devices", 1),
    (2, "--strategy", "ddp", "train.strategy", "ddp", "strategy", "DDPStrategy"),
    (2, "--precision", "bf16-mixed", "train.precision", "bf16-mixed", "precision", "bf16-mixed"),
    (2, "--num-workers", "1", "train.num_workers", 1, "num_workers", 1),
]
GROUPS = (1, 2, 3, 4, 5)
# Every group trains the same tiny problem; group 1's flags are repeated in 2 and 3 unless replaced.
TINY = [
    "--N",
    "32",
    "--object-size",
    "64",
    "--train-stride",
    "8",
    "--test-stride",
    "16",
    "--blocks",
    "2",
    "--width",
    "4",
    "--modes",
    "4",
    "--epochs",
    "1",
    "--batch-size",
    "8",
    "--infer-batch-size",
    "8",
    "--accelerator",
    "cpu",
    "--devices",
    "1",
]
GROUP_BASE = {
    2: ["--optimizer", "adamw", "--scheduler", "exponential", "--grad-clip", "0.5", "--arch", "prenorm_hybrid"],
    3: ["--optimizer", "adam", "--scheduler", "plateau"],
    4: ["--scheduler", "step", "--optimizer", "rmsprop"],
    5: ["--optimizer", "nadam"],
}
# The sweep definition: tiny shared settings and two arms with settings the flags must override.
ARMS = {
    "one": {"optim.lr": 0.05, "model.layerscale_init": 0.5, "train.epochs": 3},
    "two": {"schedule.name": "constant"},
}


def test_the_table_covers_every_train_flag():
    flags = {f for _, f, *_ in FLAGS} - {"--no-nesterov"} | {"--nesterov"}
    assert flags == {flag for flag, *_ in flag_table()}
    for _, flag, _, path, value, *_ in FLAGS:
        setting = path.replace(".extra.", ".")  # an optimizer's own setting: optim.extra.<name> in config.json
        shown = {str(value), f"{value:g}"} if isinstance(value, float) else {str(value)}
        assert RunConfig().value(setting) != value and flag_default(setting) not in shown, f"{flag}: non-default"


def _argv(group: int, probe: Path) -> list[str]:
    argv = list(TINY) + GROUP_BASE.get(group, [])
    for g, flag, raw, *_ in FLAGS:
        if g == group and flag not in argv:
            argv += [flag] + ([] if raw is None else [str(probe) if raw == PROBE else raw])
    return argv


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    """Run every group through ``fnodiag train`` and ``fnodiag sweep``: ``{(path, group): [RunDir, ...]}``."""
    d = tmp_path_factory.mktemp("paths")
    probe = d / "probe.npz"
    np.savez(probe, probeGuess=np.ones((32, 32), np.complex64))
    shared = {
        "data.N": 32,
        "data.object_size": 64,
        "data.train_stride": 8,
        "data.test_stride": 16,
        "model.blocks": 2,
        "model.width": 4,
        "model.modes": 4,
        "train.epochs": 1,
        "train.batch_size": 8,
        "train.capture_every": 0,
        "train.accelerator": "cpu",
        "clip.algorithm": "none",
    }
    lines = ['name = "paths"', "seeds = [1]", "[shared]", *[f'"{k}" = {json.dumps(v)}' for k, v in shared.items()]]
    for arm, settings in ARMS.items():
        lines += [f"[arms.{arm}]", *[f'"{k}" = {json.dumps(v)}' for k, v in settings.items()]]
    (d / "paths.toml").write_text("\n".join(lines) + "\n")
    cache = d / "datasets"
    out = {}
    env = dict(os.environ)
    try:
        _run_groups(d, probe, cache, out)
    finally:  # group 2 runs DDP in this process: free its port and its MASTER_* variables for later tests
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
        os.environ.clear()
        os.environ.update(env)
    out["probe"] = probe
    return out


def _run_groups(d: Path, probe: Path, cache: Path, out: dict) -> None:
    for group in GROUPS:
        argv = _argv(group, probe)
        assert (
            main(
                [
                    "train",
                    *argv,
                    "--out",
                    str(d / "train"),
                    "--name",
                    f"g{group}",
                    "--cache-dir",
                    str(cache),
                    "--no-progress",
                ]
            )
            == 0
        )
        out[("train", group)] = [RunDir(d / "train" / f"g{group}")]
        sweep = d / f"sweep{group}"
        assert main(["sweep", str(d / "paths.toml"), *argv, "--out", str(sweep)]) == 0
        seed = argv[argv.index("--seed") + 1] if "--seed" in argv else "1"
        out[("sweep", group)] = [RunDir(sweep / f"{arm}-s{seed}") for arm in ARMS]


def _expected(value, effective_path, cfg: dict, probe: Path):
    if value == PROBE:
        return str(probe)
    if effective_path == DATA_KEY:
        return dataset_key(DataConfig(**cfg["data"]))
    return value


@pytest.mark.slow
@pytest.mark.parametrize("path", ["train", "sweep"])
@pytest.mark.parametrize("row", FLAGS, ids=[f"{r[1]}->{r[5]}" for r in FLAGS])
def test_flag_reaches_config_and_effective_config(paths, path, row):
    group, flag, _, cfg_path, cfg_value, eff_path, eff_value = row
    for run in paths[(path, group)]:
        cfg = json.loads(run.config_path.read_text())
        assert lookup(cfg, cfg_path) == _expected(cfg_value, cfg_path, cfg, paths["probe"]), (run.path.name, flag)
        eff = json.loads(run.effective_config_path.read_text())
        got, want = lookup(eff, eff_path), _expected(eff_value, eff_path, cfg, paths["probe"])
        assert got == pytest.approx(want, rel=1e-6) if isinstance(want, float) else got == want, (run.path.name, flag)


@pytest.mark.parametrize("path", ["train", "sweep"])
def test_every_run_passes_the_summary_check(paths, path):
    for group in GROUPS:
        for run in paths[(path, group)]:
            assert audit_run(run) == [], run.path


def test_launch_form_command_line_reaches_the_run(tmp_path):
    from fnodiag.dashboard.launch import Launcher, LaunchView
    from fnodiag.dashboard.store import DashboardStore
    from fnodiag.models import MODELS

    root = tmp_path / "runs"
    view = LaunchView(store=DashboardStore(root))
    assert view.param.arch.objects == list(MODELS)  # offered from the registry
    view.param.update(arch="prenorm_hybrid", optimizer="sgd", grad_clip=0.25, scheduler="exponential", epochs=1, seed=9)
    view.settings.param.update(lr=1.2345678e-4, momentum=0.55, weight_decay=1.5e-5)  # the optimizer's widgets
    args = view.form_args()
    assert args[args.index("--lr") + 1] == "0.00012345678"  # `:g` gave 0.000123457
    tiny = [x for i in range(0, len(TINY), 2) if TINY[i] not in args for x in TINY[i : i + 2]]  # the tiny problem
    cmd = Launcher(root).command("form", args + tiny)
    assert cmd[3] == "train"
    assert main(cmd[3:] + ["--cache-dir", str(root / "datasets")]) == 0
    run = RunDir(root / "form")
    cfg, eff = json.loads(run.config_path.read_text()), json.loads(run.effective_config_path.read_text())
    assert (cfg["model"]["arch"], eff["generator"]["block_class"]) == ("prenorm_hybrid", "PreNormBlock")
    assert cfg["optim"]["lr"] == 1.2345678e-4 and eff["optimizer"]["param_groups"][0]["initial_lr"] == 1.2345678e-4
    assert (cfg["optim"]["momentum"], eff["optimizer"]["param_groups"][0]["momentum"]) == (0.55, 0.55)
    assert (cfg["optim"]["weight_decay"], eff["optimizer"]["param_groups"][0]["weight_decay"]) == (1.5e-5, 1.5e-5)
    assert cfg["clip"] == {"algorithm": "norm", "value": 0.25} and eff["grad_clip"]["algorithm"] == "norm"
    assert (cfg["schedule"]["name"], eff["scheduler"]["class"]) == ("exponential", "ExponentialLR")
    assert (cfg["train"]["epochs"], eff["max_epochs"], cfg["train"]["seed"], eff["seed"]) == (1, 1, 9, 9)
    assert audit_run(run) == []
