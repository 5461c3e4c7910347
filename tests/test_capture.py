"""Live capture during training and ``fnodiag capture`` of saved checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from fnodiag.cli import main
from fnodiag.diagnostics import ACTIVATION_STATS, default_targets
from fnodiag.models import build_model
from fnodiag.runs import StoreReader
from fnodiag.training.run import train

STEPS_PER_EPOCH = 81 // 8


@pytest.fixture(scope="module")
def stable_run(tmp_path_factory, dataset_cache, tiny_cfg):
    """A tiny stable_hybrid run with live capture every 3 steps."""
    cfg = tiny_cfg.override({"model.arch": "stable_hybrid", "train.capture_every": 3, "train.epochs": 2})
    return cfg, train(cfg, tmp_path_factory.mktemp("runs"), name="stable", cache_dir=dataset_cache, progress=False)


def test_live_capture_writes_every_k_steps(stable_run):
    cfg, run = stable_run
    reader = StoreReader(run.store_path)
    gen = build_model(cfg.model, cfg.data.N)
    layers, steps, values = reader.layer_matrix("activation", "spatial_std")
    assert list(steps) == list(range(0, 2 * STEPS_PER_EPOCH, 3))
    assert layers == default_targets(gen)  # network order, every default target
    assert np.isfinite(values).all() and (values[layers.index("output")] > 0).all()
    assert set(ACTIVATION_STATS) <= set(reader.stats("activation"))
    ratio_layers, _, ratios = reader.layer_matrix("activation", "spectral_local_ratio")
    assert "encoder.0" in ratio_layers and (ratios > 0).all()
    grad_layers, grad_steps, grads = reader.layer_matrix("grad", "norm")
    assert list(grad_steps) == list(steps) and "encoder.0.spectral" in grad_layers and (grads > 0).all()
    # LayerScale gamma starts at the configured 1e-3 and is recorded as the reference watched it
    gamma = reader.layer_matrix("param", "layerscale_mean")
    assert gamma.values[:, 0] == pytest.approx(1e-3, rel=0.05)
    assert run.read_json("effective_config.json")["capture"] == {"every": 3, "probe_batch": 2, "targets": "default"}
    upd = reader.layer_matrix("param", "update_ratio")
    assert (upd.values[np.isfinite(upd.values)] > 0).all()


def test_live_capture_gradients_are_before_clipping(stable_run):
    """Per-module grad norms combine to the recorded global pre-clip norm at the same step."""
    _, run = stable_run
    reader = StoreReader(run.store_path)
    _, steps, grads = reader.layer_matrix("grad", "norm")
    pre = reader.scalars("grad/norm_preclip")
    by_step = dict(zip(pre.step.tolist(), pre.value.tolist()))
    for j, step in enumerate(steps):
        col = grads[:, j]
        assert np.sqrt(np.nansum(col**2)) == pytest.approx(by_step[int(step)], rel=1e-4)


def test_collapse_verdict_is_recorded(stable_run):
    _, run = stable_run
    verdict = run.read_json("collapse.json")
    assert verdict["verdict"] in ("healthy", "collapsed") and "earliest_layer" in verdict
    assert verdict["criteria"]["fingerprint_source"] == "effective_config"


# ---- fnodiag capture ------------------------------------------------------------------------


def _capture(tmp_path, *args):
    return main(["capture", *args, "--output", str(tmp_path / "reports")])


@pytest.mark.parametrize("which", ["best", "last", "model"])
def test_capture_from_run_files(stable_run, tmp_path, capsys, which):
    cfg, run = stable_run
    ckpt = {"best": run.best_ckpt_path, "last": run.last_ckpt_path, "model": run.model_path}[which]
    code = _capture(
        tmp_path,
        "--checkpoint",
        str(ckpt),
        "--batch-size",
        "2",
        "--max-samples",
        "5",
        "--output-json-name",
        f"{which}.json",
    )
    assert code == 0, capsys.readouterr().err
    report = json.loads((tmp_path / "reports" / f"{which}.json").read_text())
    s = report["summary"]
    assert (s["architecture"], s["n_samples"], s["batch_size"], s["channels"]) == ("stable_hybrid", 5, 2, 1)
    assert s["config_source"] != "flags/defaults"
    assert len(report["layers"]["output/spatial_std"]) == 3  # one value per forward call: 2 + 2 + 1
    assert set(report["per_layer"]) >= set(default_targets(build_model(cfg.model, cfg.data.N)))
    assert "encoder.0/layerscale_mean" in report["params"]


def test_capture_bare_state_dict_needs_architecture_flags(stable_run, tmp_path, capsys):
    cfg, run = stable_run
    bare = tmp_path / "bare.pt"
    torch.save(torch.load(run.model_path, weights_only=True), bare)
    x = np.random.default_rng(0).random((3, 32, 32, 1)).astype(np.float32)  # reference channel-last layout
    np.savez(tmp_path / "in.npz", diffraction=x)
    flags = [
        "--blocks",
        "2",
        "--width",
        "4",
        "--modes",
        "4",
        "--input",
        str(tmp_path / "in.npz"),
        "--max-samples",
        "3",
        "--batch-size",
        "3",
    ]
    assert _capture(tmp_path, "--checkpoint", str(bare), "--architecture", "stable_hybrid", *flags) == 0
    # the wrong architecture: strict loading lists the keys and names the cause
    assert _capture(tmp_path, "--checkpoint", str(bare), "--architecture", "hybrid", *flags) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "unexpected" in err and "layerscale" in err and "architecture" in err
    assert (
        _capture(tmp_path, "--checkpoint", str(bare), "--architecture", "stable_hybrid", *flags[:-4], "--blocks", "3")
        == 2
    )
    assert "depth" in capsys.readouterr().err


def test_capture_selects_reference_style_generator_keys(stable_run, tmp_path):
    """A reference Lightning state dict holds model.generator.*, model.autoencoder.* and more."""
    _, run = stable_run
    gen = torch.load(run.model_path, weights_only=True)
    state = {f"model.generator.{k}": v for k, v in gen.items()}
    state.update({f"model.autoencoder.{k}": v for k, v in gen.items()})
    state["model.forward_model.alpha"] = torch.ones(())
    torch.save({"state_dict": state}, tmp_path / "ref.ckpt")
    np.savez(tmp_path / "in.npz", diffraction=np.ones((1, 32, 32), np.float32))
    assert (
        _capture(
            tmp_path,
            "--checkpoint",
            str(tmp_path / "ref.ckpt"),
            "--architecture",
            "stable_hybrid",
            "--blocks",
            "2",
            "--width",
            "4",
            "--modes",
            "4",
            "--input",
            str(tmp_path / "in.npz"),
        )
        == 0
    )


class Payload:
    def __reduce__(self):
        return (Path.touch, (Path("/tmp/fnodiag-pwned"),))


@pytest.mark.parametrize(
    "content, words",
    [
        (None, ["does not exist"]),
        (b"", ["empty"]),
        (b"not a checkpoint at all", ["not a readable PyTorch checkpoint"]),
        ("truncated", ["truncated"]),
        ("payload", ["refused", "not executed"]),
    ],
)
def test_capture_bad_checkpoints_are_one_line_exit_2(stable_run, tmp_path, capsys, content, words):
    _, run = stable_run
    path = tmp_path / "x.pt"
    if content == "truncated":
        path.write_bytes(run.best_ckpt_path.read_bytes()[:2000])
    elif content == "payload":
        torch.save({"state_dict": {"w": torch.zeros(1)}, "evil": Payload()}, path)  # as an attacker would
    elif content is not None:
        path.write_bytes(content)
    Path("/tmp/fnodiag-pwned").unlink(missing_ok=True)
    np.savez(tmp_path / "in.npz", diffraction=np.ones((1, 32, 32), np.float32))
    assert _capture(tmp_path, "--checkpoint", str(path), "--input", str(tmp_path / "in.npz")) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    for word in words:
        assert word in err
    assert not Path("/tmp/fnodiag-pwned").exists()


# ---- capture_checkpoint: the one orchestration -----------------------------------------------


def test_capture_checkpoint_finds_the_runs_dataset_and_never_simulates_when_told(stable_run, dataset_cache, tmp_path):
    """The run's recorded dataset cache gives the same patches as passing them; simulate=False writes nothing."""
    from fnodiag.diagnostics.capture import DatasetMissing, capture_checkpoint
    from fnodiag.ptycho.simulate import cached_dataset

    cfg, run = stable_run
    own = capture_checkpoint(run.last_ckpt_path, max_samples=3, batch_size=2, simulate=False)
    patches = cached_dataset(cfg.data, dataset_cache).test.diffraction[:3, None]
    given = capture_checkpoint(run.last_ckpt_path, inputs=patches, max_samples=3, batch_size=2, simulate=False)
    assert own["summary"]["input"].startswith("dataset ") and own["summary"]["input"].endswith("(test split)")
    assert given["summary"]["input"] == "given array" and given["summary"]["n_samples"] == 3
    assert own["layers"] == given["layers"] and len(own["layers"]["output/spatial_std"]) == 2  # batches 2 + 1
    empty = tmp_path / "nowhere"
    with pytest.raises(DatasetMissing, match="is missing and simulating it is off") as info:
        capture_checkpoint(run.last_ckpt_path, max_samples=3, batch_size=2, cache_dir=empty, simulate=False)
    assert info.value.path.parent == empty and not empty.exists()


def test_only_capture_py_orchestrates_a_checkpoint_capture():
    """Every caller (CLI, sweep task, reference import, dashboard) goes through capture_checkpoint():
    no other module of the package uses the pieces it is made of."""
    import ast

    import fnodiag

    pieces = {"capture", "summary", "read_inputs"}
    package = Path(fnodiag.__file__).parent
    found = []
    for path in sorted(package.rglob("*.py")):
        if path == package / "diagnostics" / "capture.py":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        module_aliases = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module == "fnodiag.diagnostics.capture":
                found += [f"{path.name}: imports {a.name}" for a in node.names if a.name in pieces]
            elif isinstance(node, ast.ImportFrom) and node.module == "fnodiag.diagnostics":
                module_aliases |= {a.asname or a.name for a in node.names if a.name == "capture"}
            elif isinstance(node, ast.Import):
                module_aliases |= {a.asname or a.name for a in node.names if a.name == "fnodiag.diagnostics.capture"}
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr in pieces and ast.unparse(node.value) in module_aliases:
                found.append(f"{path.name}: uses {ast.unparse(node)}")
    assert found == []
