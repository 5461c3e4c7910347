"""The ``fnodiag`` command line: every flag reaches the configuration; bad input is one line, exit 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fnodiag.cli import build_parser, main, resolve_config
from fnodiag.config import RunConfig
from fnodiag.training.optimizers import users
from fnodiag.training.registries import flag_default, flag_table

TINY_ARGS = [
    "--N",
    "32",
    "--object-size",
    "64",
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
    "16",
    "--capture-every",
    "0",
    "--accelerator",
    "cpu",
    "--no-progress",
]

# A non-default value for every flag, and the field it must land in.
NON_DEFAULT = {
    "--N": ("128", 128),
    "--object-size": ("300", 300),
    "--nimgs-train": ("2", 2),
    "--nimgs-test": ("3", 3),
    "--train-stride": ("5", 5),
    "--test-stride": ("8", 8),
    "--nphotons": ("1e6", 1e6),
    "--set-phi": (None, True),
    "--probe-npz": ("PROBE", "PROBE"),
    "--arch": ("stable_hybrid", "stable_hybrid"),
    "--spectral-layout": ("reference", "reference"),
    "--blocks": ("3", 3),
    "--width": ("16", 16),
    "--modes": ("8", 8),
    "--channel-cap": ("64", 64),
    "--layerscale-init": ("0.01", 0.01),
    "--optimizer": ("sgd", "sgd"),
    "--lr": ("0.02", 0.02),
    "--momentum": ("0.5", 0.5),
    "--nesterov": (None, True),
    "--weight-decay": ("0.1", 0.1),
    "--beta1": ("0.5", 0.5),
    "--beta2": ("0.9", 0.9),
    "--scheduler": ("exponential", "exponential"),
    "--warmup-epochs": ("2", 2),
    "--min-lr-ratio": ("0.2", 0.2),
    "--gamma": ("0.8", 0.8),
    "--frozen-schedule": (None, True),
    "--forward-gain": ("batch", "batch"),
    "--plateau-factor": ("0.3", 0.3),
    "--plateau-patience": ("4", 4),
    "--step-size": ("3", 3),
    "--step-gamma": ("2.0", 2.0),
    "--step-wd-gamma": ("3.0", 3.0),
    "--grad-clip": ("2.5", 2.5),
    "--grad-clip-algorithm": ("value", "value"),
    "--epochs": ("7", 7),
    "--batch-size": ("4", 4),
    "--infer-batch-size": ("3", 3),
    "--seed": ("5", 5),
    "--loss": ("poisson", "poisson"),
    "--capture-every": ("3", 3),
    "--frame-every": ("4", 4),
    "--accelerator": ("cpu", "cpu"),
    "--devices": ("2", "2"),
    "--strategy": ("ddp", "ddp"),
    "--precision": ("bf16-mixed", "bf16-mixed"),
    "--num-workers": ("1", 1),
    "--val-batching": ("train", "train"),
    "--keep-partial-batch": (None, True),
    "--eps": ("1e-6", 1e-6),
    "--decoupled-weight-decay": (None, True),
    "--momentum-decay": ("0.01", 0.01),
    "--alpha": ("0.9", 0.9),
    "--centered": (None, True),
}


def test_every_flag_has_help_and_reaches_its_field(tmp_path):
    import numpy as np

    probe = tmp_path / "probe.npz"
    np.savez(probe, probeGuess=np.ones((8, 8), np.complex64))
    table = flag_table()
    assert {flag for flag, *_ in table} == set(NON_DEFAULT)
    parser = build_parser()
    train = parser._subparsers._group_actions[0].choices["train"]
    for action in train._actions:
        assert action.help, f"{action.option_strings} has no help string"
    for flag, path, _, _ in table:
        raw, expected = NON_DEFAULT[flag]
        raw = str(probe) if raw == "PROBE" else raw
        expected = str(probe) if expected == "PROBE" else expected
        argv = ["train", flag] + ([] if raw is None else [raw])
        if flag in ("--nesterov", "--momentum"):
            argv += ["--optimizer", "sgd"]
        elif path.startswith("optim.") and flag not in ("--optimizer", "--lr", "--weight-decay"):
            argv += ["--optimizer", users(path)[-1]]  # an optimizer that takes the setting
        if flag == "--grad-clip-algorithm":
            argv += ["--grad-clip", "1.0"]
        cfg = resolve_config(parser.parse_args(argv))
        assert cfg.value(path) == expected, flag
        assert RunConfig().value(path) != expected and flag_default(path) != str(expected), f"{flag}: non-default"


def test_precedence_preset_config_file_flags(tmp_path):
    f = tmp_path / "cfg.json"
    f.write_text(json.dumps({"optim": {"lr": 0.005, "name": "adamw"}, "train": {"epochs": 3}}))
    args = build_parser().parse_args(["train", "--preset", "stage-a", "--config", str(f), "--epochs", "9"])
    cfg = resolve_config(args)
    assert cfg.data.N == 64 and cfg.schedule.warmup_epochs == 5  # preset
    assert cfg.optim.lr == 0.005 and cfg.optim.name == "adamw"  # file over preset
    assert cfg.train.epochs == 9  # flag over file


def test_grad_clip_zero_turns_clipping_off():
    cfg = resolve_config(build_parser().parse_args(["train", "--grad-clip", "0"]))
    assert cfg.clip.algorithm == "none"
    cfg = resolve_config(build_parser().parse_args(["train", "--grad-clip", "1"]))
    assert (cfg.clip.algorithm, cfg.clip.value) == ("norm", 1.0)


@pytest.mark.parametrize(
    "argv, words",
    [
        (["train", "--lr", "-1"], ["optim.lr"]),
        (["train", "--lr", "abc"], ["--lr", "invalid float"]),
        (["train", "--optimizer", "lamb"], ["--optimizer", "'adamw'"]),
        (["train", "--momentum", "1.5", "--optimizer", "sgd"], ["optim.momentum", "[0, 1)"]),
        (["train", "--N", "48"], ["data.N", "64"]),
        (["simulate", "--nphotons", "0"], ["data.nphotons"]),
        (["simulate", "--probe-npz", "/no/such/probe.npz"], ["probe_npz", "does not exist"]),
        (["train", "--config", "/no/such/config.json"], ["--config", "does not exist"]),
        (["train", "--grad-clip-algorithm", "agc"], ["--grad-clip"]),
        (["train", "--arch", "resnet"], ["--arch", "'stable_hybrid'"]),
        (["train", "--bogus"], ["unrecognized arguments"]),
    ],
)
def test_bad_input_is_one_line_exit_2(argv, words, capsys):
    with pytest.raises(SystemExit) as info:
        code = main(argv)
        raise SystemExit(code)
    assert info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    for word in words:
        assert word in err


def test_unregistered_name_in_a_config_file_is_one_line_exit_2(tmp_path, capsys):
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps({"optim": {"name": "lamb"}}))
    assert main(["train", "--config", str(path), "--out", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "optim.name='lamb' is not valid; choose one of adam, adamw, sgd" in err, err
    assert not (tmp_path / "runs").exists()


def test_a_name_added_to_a_registry_reaches_the_parser(monkeypatch):
    from fnodiag.models import MODELS
    from fnodiag.training.optimizers import OPTIMIZERS
    from fnodiag.training.schedulers import SCHEDULERS

    monkeypatch.setitem(OPTIMIZERS, "dummy_opt", OPTIMIZERS["sgd"])
    monkeypatch.setitem(SCHEDULERS, "dummy_sched", SCHEDULERS["constant"])
    monkeypatch.setitem(MODELS, "dummy_arch", MODELS["hybrid"])
    parser = build_parser()
    cfg = resolve_config(
        parser.parse_args(["train", "--optimizer", "dummy_opt", "--scheduler", "dummy_sched", "--arch", "dummy_arch"])
    )
    assert (cfg.optim.name, cfg.schedule.name, cfg.model.arch) == ("dummy_opt", "dummy_sched", "dummy_arch")
    train = next(a for a in parser._actions if a.dest == "command").choices["train"]
    choices = {a.dest: a.choices for a in train._actions if a.choices}
    assert choices["optim__name"] == ["adam", "adamw", "sgd", "radam", "nadam", "rmsprop", "dummy_opt"]
    assert choices["schedule__name"][-1] == "dummy_sched" and choices["model__arch"][-1] == "dummy_arch"
    assert "dummy_opt" in train.format_help()


def test_probe_file_without_probeguess_is_refused(tmp_path, capsys):
    import numpy as np

    bad = tmp_path / "probe.npz"
    np.savez(bad, something=np.ones(3))
    assert main(["simulate", "--N", "32", "--object-size", "64", "--probe-npz", str(bad), "--out", str(tmp_path)]) == 2
    assert "probeGuess" in capsys.readouterr().err


def test_unwritable_output_folder_is_refused(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("keep me")
    assert main(["train", *TINY_ARGS, "--out", str(blocker / "runs")]) == 2
    assert "not writable" in capsys.readouterr().err
    assert main(["simulate", "--N", "32", "--object-size", "64", "--out", str(blocker / "ds")]) == 2
    assert "not writable" in capsys.readouterr().err
    assert blocker.read_text() == "keep me"


def test_existing_run_directory_is_not_overwritten(tmp_path, capsys):
    run = tmp_path / "runs" / "taken"
    run.mkdir(parents=True)
    (run / "notes.txt").write_text("precious")
    assert (
        main(
            [
                "train",
                *TINY_ARGS,
                "--out",
                str(tmp_path / "runs"),
                "--name",
                "taken",
                "--cache-dir",
                str(tmp_path / "ds"),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "already exists" in err and "--resume" in err and "exist_ok" not in err  # names the flags, not Python
    assert (run / "notes.txt").read_text() == "precious"


def test_internal_training_error_exits_1_with_traceback_in_log_and_status(tmp_path, capsys, monkeypatch):
    """A ValueError inside training is not bad input: exit 1, traceback kept; bad input stays exit 2."""
    from fnodiag.training.system import ReconstructionSystem

    original = ReconstructionSystem.training_step

    def broken(self, batch, batch_idx):
        if self.global_step == 2:
            raise ValueError("boom inside training")
        return original(self, batch, batch_idx)

    monkeypatch.setattr(ReconstructionSystem, "training_step", broken)
    out = tmp_path / "runs"
    assert main(["train", *TINY_ARGS, "--out", str(out), "--name", "bad", "--cache-dir", str(tmp_path / "ds")]) == 1
    # (pytest's capture can leave Lightning's log handler on a closed stream: ignore its "Logging error" noise)
    ours = [line for line in capsys.readouterr().err.splitlines() if "boom" in line]
    assert len(ours) == 1 and ours[0].startswith("fnodiag train: training failed: ValueError: boom inside training")
    assert "train.log" in ours[0]
    log = (out / "bad" / "train.log").read_text()
    assert "Traceback" in log and "boom inside training" in log and "training_step" in log
    status = json.loads((out / "bad" / "status.json").read_text())
    assert status["state"] == "failed" and "Traceback" in status["message"] and status["step"] == 2
    assert main(["train", *TINY_ARGS, "--lr", "-1", "--out", str(out), "--name", "lr"]) == 2  # bad input
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "optim.lr" in err and not (out / "lr").exists()


def test_resume_flag(tmp_path, capsys):
    """--resume refuses setting flags, non-run folders and live runs; a finished run is reported, not retrained."""
    from fnodiag.runs import RunDir

    out, ds = tmp_path / "runs", str(tmp_path / "ds")
    assert main(["train", *TINY_ARGS, "--out", str(out), "--name", "done", "--cache-dir", ds]) == 0
    done = out / "done"
    before = (done / "status.json").read_text()
    capsys.readouterr()
    assert main(["train", "--resume", str(done), "--lr", "0.1", "--seed", "3"]) == 2
    err = capsys.readouterr().err
    assert "drop --lr, --seed" in err and "config.json" in err
    assert main(["train", "--resume", str(tmp_path)]) == 2
    assert "not a run directory" in capsys.readouterr().err
    assert main(["train", "--resume", str(done), "--cache-dir", ds]) == 0
    assert "already finished" in capsys.readouterr().out
    assert (done / "status.json").read_text() == before  # nothing retrained
    RunDir(done).write_status("running", step=3, epoch=0)  # this live process "is training it"
    assert main(["train", "--resume", str(done)]) == 2
    assert "still running" in capsys.readouterr().err


def _cli(*args, cwd, timeout=300):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    exe = Path(sys.executable).with_name("fnodiag")  # the installed console script
    return subprocess.run([str(exe), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_simulate_command_writes_dataset_and_prints_where(tmp_path):
    res = _cli("simulate", "--N", "32", "--object-size", "64", "--set-phi", "--out", str(tmp_path / "ds"), cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    where = Path(res.stdout.strip().splitlines()[-1])
    assert where.is_dir() and {p.name for p in where.iterdir()} >= {"train.npz", "test.npz", "dataset.json"}
    assert "fingerprint" in res.stdout


@pytest.mark.slow
def test_train_command_end_to_end(tmp_path):
    res = _cli(
        "train", *TINY_ARGS, "--optimizer", "adamw", "--out", str(tmp_path / "runs"), "--name", "cli", cwd=tmp_path
    )
    assert res.returncode == 0, res.stderr[-2000:]
    run = tmp_path / "runs" / "cli"
    assert json.loads((run / "status.json").read_text())["state"] == "finished"
    assert json.loads((run / "effective_config.json").read_text())["optimizer"]["class"] == "AdamW"
    assert "amp_ssim" in res.stdout
    assert "Tip:" not in res.stdout + res.stderr and "LeafSpec" not in res.stderr  # Lightning's noise kept out


@pytest.mark.slow
def test_ddp_two_processes_on_cpu(tmp_path):
    """Two-process DDP (gloo): both ranks train, only rank 0 writes the run records."""
    res = _cli(
        "train",
        *TINY_ARGS,
        "--devices",
        "2",
        "--strategy",
        "ddp",
        "--out",
        str(tmp_path / "runs"),
        "--name",
        "ddp",
        cwd=tmp_path,
        timeout=600,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert [p.name for p in (tmp_path / "runs").iterdir() if p.name != "datasets" and not p.name.startswith(".")] == [
        "ddp"
    ]
    eff = json.loads((tmp_path / "runs" / "ddp" / "effective_config.json").read_text())
    assert eff["world_size"] == 2 and eff["strategy"] == "DDPStrategy"
    # 81 train patches, batch 8 per rank, sharded over 2 ranks -> 5 steps per epoch
    assert eff["steps_per_epoch"] == 5
    assert json.loads((tmp_path / "runs" / "ddp" / "status.json").read_text())["state"] == "finished"


@pytest.mark.slow
def test_sigint_interrupts_a_run_even_if_inherited_ignored(tmp_path):
    """A run started with SIGINT ignored (background job) still stops gracefully on SIGINT."""
    import signal
    import time

    exe = Path(sys.executable).with_name("fnodiag")
    args = [str(exe), "train", *TINY_ARGS, "--epochs", "200", "--out", str(tmp_path / "runs"), "--name", "bg"]
    proc = subprocess.Popen(
        args,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    status = tmp_path / "runs" / "bg" / "status.json"
    last = tmp_path / "runs" / "bg" / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 120
    # the checkpoint callback runs after the recorder at epoch end: wait for the checkpoint itself
    while time.monotonic() < deadline and not last.is_file():
        time.sleep(0.2)
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) != 0
    final = json.loads(status.read_text())
    assert final["state"] == "interrupted", final.get("message")  # what else ended it, if anything did
    assert last.is_file()


def test_sweep_seed_flag_is_the_seed_list(tmp_path, tiny_sweep, capsys):
    definition = tiny_sweep({"a": {}}, {"train.epochs": 1})  # tiny: even a wrongly started sweep ends soon
    assert main(["sweep", str(definition), "--seed", "5", "--seeds", "1,2", "--out", str(tmp_path / "s")]) == 2
    assert "--seeds only" in capsys.readouterr().err and not (tmp_path / "s").exists()
