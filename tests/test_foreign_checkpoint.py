"""Foreign checkpoints: ``fnodiag capture --model IMPORT:CALLABLE`` on real neuraloperator FNO checkpoints.

neuraloperator keeps its constructor settings in the state dict's ``_metadata`` entry, ``non_linearity=F.gelu``
(pickled as ``torch._C._nn.gelu``) and ``conv_module=SpectralConv`` among them. Proved here: such a file saved by
``torch.save(model.state_dict())``, by neuraloperator's own ``save_checkpoint`` and by Lightning is loaded
weights-only and captured with the trained weights; the allowlisted torch function loads as itself, a class
reference as an inert marker (its module never imported); a pickle that calls anything else, torch's own
functions included, is refused in one line naming it and nothing of it runs; a model that does not fit is named
by the setting saved with the weights.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from neuralop.layers.spectral_convolution import SpectralConv
from neuralop.models import FNO
from torch import nn

from fnodiag.cli import main
from fnodiag.diagnostics.capture import capture_checkpoint
from fnodiag.diagnostics.safe_load import CaptureError, Unloaded, load_weights_only

SPEC = "neuralop.models:FNO"
KWARGS = {
    "2d": dict(n_modes=[8, 8], hidden_channels=24, in_channels=1, out_channels=1, n_layers=4),
    "1d": dict(n_modes=[8], hidden_channels=16, in_channels=1, out_channels=1, n_layers=3),
}
SHAPE = {"2d": (1, 32, 32), "1d": (1, 64)}
PWNED = Path("/tmp/fnodiag-foreign-pwned")


def trained_fno(kind: str = "2d") -> FNO:
    """A real FNO after two Adam steps: its weights differ from any freshly built one."""
    torch.manual_seed(0)
    model = FNO(**{k: tuple(v) if k == "n_modes" else v for k, v in KWARGS[kind].items()})
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    x = torch.randn(2, *SHAPE[kind])
    for _ in range(2):
        F.mse_loss(model(x), x).backward()
        opt.step()
        opt.zero_grad()
    return model.eval()


def inputs(tmp_path: Path, kind: str = "2d") -> tuple[Path, np.ndarray]:
    x = np.random.default_rng(1).standard_normal((4, *SHAPE[kind])).astype(np.float32)
    np.save(tmp_path / f"x{kind}.npy", x)
    return tmp_path / f"x{kind}.npy", x


def spectral_convs(model: nn.Module) -> list[str]:
    return [n for n, m in model.named_modules() if isinstance(m, SpectralConv)]


def check_report(report: dict, model: FNO, x: np.ndarray) -> None:
    """Every spectral convolution captured with finite statistics, and the output is the trained model's."""
    for conv in spectral_convs(model):
        stats = report["per_layer"][conv]
        assert stats and all(np.isfinite(v) for v in stats.values()), (conv, stats)
    assert report["summary"]["layer_order"].index("fno_blocks.convs.0") < report["summary"]["layer_order"].index(
        "fno_blocks.convs.1"
    )
    with torch.no_grad():
        out = model(torch.from_numpy(x)).mean().item()
    assert report["per_layer"]["output"]["mean"] == pytest.approx(out, rel=1e-3, abs=1e-5)  # the loaded weights


@pytest.mark.slow  # a fresh process imports torch, Lightning and neuraloperator
def test_torch_save_of_a_neuralop_state_dict_is_captured_by_the_cli(tmp_path):
    """A real ``fnodiag`` subprocess: ``_metadata`` with ``torch._C._nn.gelu`` loads, the trained weights are used."""
    model = trained_fno()
    torch.save(model.state_dict(), tmp_path / "fno.pt")
    x_path, x = inputs(tmp_path)
    argv = ["--checkpoint", str(tmp_path / "fno.pt"), "--model", SPEC, "--model-kwargs", json.dumps(KWARGS["2d"])]
    argv += ["--input", str(x_path), "--max-samples", "4", "--batch-size", "2", "--output", str(tmp_path / "out")]
    proc = subprocess.run(
        [sys.executable, "-m", "fnodiag.cli", "capture", *argv], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    assert "model: neuralop.models:FNO" in proc.stdout and "ignored: _metadata" in proc.stdout
    report = json.loads((tmp_path / "out" / "activation_report.json").read_text())
    assert report["summary"]["n_samples"] == 4 and report["summary"]["prefix"] == ""
    check_report(report, model, x)


@pytest.mark.parametrize("kind", ["1d", "2d"])
def test_neuralops_own_save_checkpoint_file_is_captured(tmp_path, kind):
    model = trained_fno(kind)
    model.save_checkpoint(tmp_path, "fno")  # fno_state_dict.pt (+ fno_metadata.pkl, not needed)
    x_path, x = inputs(tmp_path, kind)
    report = capture_checkpoint(
        tmp_path / "fno_state_dict.pt",
        model=SPEC,
        model_kwargs=KWARGS[kind],
        inputs=x_path,
        max_samples=4,
        batch_size=2,
    )
    check_report(report, model, x)


class FNOSystem(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = trained_fno()

    def training_step(self, batch, batch_idx):
        x, y = batch
        return F.mse_loss(self.net(x), y)

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=1e-3)


def test_a_neuralop_lightning_checkpoint_is_captured_with_model(tmp_path):
    """The ``.ckpt`` keeps the FNO under ``net.`` beside the optimizer state: the prefix is found, loaded strictly."""
    system = FNOSystem()
    x = torch.randn(4, *SHAPE["2d"])
    trainer = L.Trainer(
        max_steps=2,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(system, torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, x), batch_size=2))
    trainer.save_checkpoint(tmp_path / "fno.ckpt")
    x_path, xs = inputs(tmp_path)
    assert main(["capture", "--checkpoint", str(tmp_path / "fno.ckpt"), "--model", SPEC]
                + ["--model-kwargs", json.dumps(KWARGS["2d"]), "--input", str(x_path), "--max-samples", "4"]
                + ["--output", str(tmp_path / "out")]) == 0  # fmt: skip
    report = json.loads((tmp_path / "out" / "activation_report.json").read_text())
    s = report["summary"]
    assert s["checkpoint_kind"] == "lightning" and s["prefix"] == "net." and s["global_step"] == 2
    check_report(report, system.net.eval(), xs)


def test_the_allowlisted_torch_function_loads_as_itself_a_class_reference_as_an_inert_marker(tmp_path):
    torch.save(trained_fno().state_dict(), tmp_path / "fno.pt")
    meta = load_weights_only(tmp_path / "fno.pt")["_metadata"]
    assert meta["non_linearity"] is F.gelu
    assert isinstance(meta["conv_module"], Unloaded) and meta["conv_module"].path.endswith(".SpectralConv")
    with pytest.raises(Exception, match="SpectralConv"):
        meta["conv_module"]()  # the marker cannot be called: it is a name, not the class
    code = (  # a fresh process: loading the file never imports the module the class reference names
        "import sys; from fnodiag.diagnostics.safe_load import load_weights_only; "
        f"load_weights_only({str(tmp_path / 'fno.pt')!r}); print('neuralop' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "False", out.stderr


class Touch:
    """A hostile entry: unpickling it would create a file."""

    def __reduce__(self):
        return (Path.touch, (PWNED,))


class TorchSave:
    """A call of a torch function that is not on the allowlist (it writes a file)."""

    def __reduce__(self):
        return (torch.save, (torch.zeros(1), str(PWNED)))


class Exec:
    def __reduce__(self):
        return (exec, (f"open({str(PWNED)!r}, 'w').close()",))


@pytest.mark.parametrize(
    "payload, named",
    [(Touch(), "builtins.getattr"), (TorchSave(), "torch.serialization.save"), (Exec(), "builtins.exec")],
)
def test_a_hostile_pickle_in_a_neuralop_state_dict_is_refused_in_one_line_naming_it(tmp_path, capsys, payload, named):
    state = trained_fno().state_dict()
    state["_metadata"]["non_linearity"] = payload  # where neuraloperator keeps gelu
    torch.save(state, tmp_path / "evil.pt")
    x_path, _ = inputs(tmp_path)
    PWNED.unlink(missing_ok=True)
    code = main(["capture", "--checkpoint", str(tmp_path / "evil.pt"), "--model", SPEC, "--model-kwargs"]
                + [json.dumps(KWARGS["2d"]), "--input", str(x_path), "--output", str(tmp_path / "out")])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err
    assert "refused" in err and "not executed" in err and named in err, err
    assert not PWNED.exists() and not (tmp_path / "out" / "activation_report.json").exists()


def test_a_model_that_does_not_fit_names_the_setting_saved_with_the_weights(tmp_path, capsys):
    torch.save(trained_fno().state_dict(), tmp_path / "fno.pt")
    x_path, _ = inputs(tmp_path)
    wrong = {**KWARGS["2d"], "hidden_channels": 16}
    code = main(["capture", "--checkpoint", str(tmp_path / "fno.pt"), "--model", SPEC, "--model-kwargs"]
                + [json.dumps(wrong), "--input", str(x_path), "--output", str(tmp_path / "out")])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "hidden_channels" in err and '{"hidden_channels": 24}' in err, err


@pytest.mark.parametrize(
    "argv, words",
    [
        (["--model", "neuralop.models:FNOO"], ["has no 'FNOO'", "FNO"]),
        (["--model", "no_such_pkg.models:FNO"], ["no module 'no_such_pkg'"]),
        (["--model", SPEC, "--model-kwargs", '{"n_mode": [8, 8]}'], ["no keyword 'n_mode'", "n_modes"]),
        (["--model", SPEC, "--model-kwargs", "[1]"], ["JSON object"]),
        (["--model-kwargs", "{}"], ["needs --model"]),
        (["--model", SPEC, "--model-kwargs", json.dumps(KWARGS["2d"]), "--blocks", "2"], ["drop the generator"]),
    ],
)
def test_bad_model_flags_are_one_line_exit_2(tmp_path, capsys, argv, words):
    torch.save(trained_fno().state_dict(), tmp_path / "fno.pt")
    x_path, _ = inputs(tmp_path)
    base = ["capture", "--checkpoint", str(tmp_path / "fno.pt"), "--input", str(x_path)]
    assert main([*base, *argv, "--output", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    for word in words:
        assert word in err, err


def test_load_weights_only_refuses_a_pickle_that_instantiates_a_class_it_names(tmp_path):
    """``NEWOBJ`` on a name that is not allowed (how a pickle builds an arbitrary object) is refused."""

    class Boom:  # pickled by reference to this test module: instantiated through copyreg.__newobj__
        pass

    globals()["Boom"] = Boom
    Boom.__qualname__ = "Boom"
    torch.save({"w": torch.ones(1), "b": Boom()}, tmp_path / "b.pt")
    with pytest.raises(CaptureError, match="refused .* (calls|names) .*Boom"):
        load_weights_only(tmp_path / "b.pt")
