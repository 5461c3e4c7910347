"""Reference-project checkpoints as they are: loading, forward equality, report names, export.

``RefUNO`` below restates the reference generator (PtychoPINN ``HybridUNOGenerator`` /
``StableHybridUNOGenerator``) from the issue's layout table and brief §1.2-§1.4 / §6.1b, on its
own, without importing any fnodiag model code, so the tests compare two implementations.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from fnodiag.cli import main
from fnodiag.diagnostics.capture import CaptureError, load_generator
from fnodiag.models import count_parameters

STAGE_A = {"n_blocks": 4, "hidden": 32, "modes": 12, "N": 64}
TINY = {"n_blocks": 2, "hidden": 4, "modes": 6, "N": 16}  # 6 modes > 8 // 2: the footprint outgrows the 8x8 map
STAGE_A_PARAMS = {False: 17_202_402, True: 17_204_610}


# ---- an independent restatement of the reference generator ------------------------------------


class RefSpectral(nn.Module):
    """``_FallbackSpectralConv2d``: one (Cin, Cout, m, m) complex weight, rows [:m_h], cols [:m_w]."""

    def __init__(self, cin, cout, modes):
        super().__init__()
        self.cout, self.modes = cout, modes
        self.weights = nn.Parameter(torch.randn(cin, cout, modes, modes, dtype=torch.cfloat) / cin**0.5)

    def forward(self, x):
        b, _, h, w = x.shape
        xf = torch.fft.rfft2(x)
        mh, mw = min(self.modes, h), min(self.modes, w // 2 + 1)
        yf = torch.zeros(b, self.cout, h, w // 2 + 1, dtype=torch.cfloat)
        yf[:, :, :mh, :mw] = torch.einsum("bcxy,coxy->boxy", xf[:, :, :mh, :mw], self.weights[:, :, :mh, :mw])
        return torch.fft.irfft2(yf, s=(h, w))


class RefBlock(nn.Module):
    """PtychoBlock ``x + GELU(S + L)``; StablePtychoBlock ``x + layerscale * IN(GELU(S + L))``."""

    def __init__(self, ch, modes, stable):
        super().__init__()
        self.stable = stable
        self.spectral = RefSpectral(ch, ch, modes)
        self.local_conv = nn.Conv2d(ch, ch, 3, padding=1)
        self.act = nn.GELU()
        if stable:
            self.norm = nn.InstanceNorm2d(ch, affine=True, eps=1e-5)
            self.layerscale = nn.Parameter(torch.full((ch,), 1e-3))

    def forward(self, x):
        u = self.act(self.spectral(x) + self.local_conv(x))
        return x + self.layerscale.view(1, -1, 1, 1) * self.norm(u) if self.stable else x + u


class RefLifter(nn.Module):
    def __init__(self, cin, ch):
        super().__init__()
        self.input_transform = nn.Identity()  # 'none': no parameters
        self.conv1, self.act, self.conv2 = nn.Conv2d(cin, ch, 3, padding=1), nn.GELU(), nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x):
        return self.conv2(self.act(self.conv1(self.input_transform(x))))


class RefUNO(nn.Module):
    """HybridUNOGenerator(in_channels=1, out_channels=2, hidden_channels, n_blocks, modes, C)."""

    def __init__(self, hidden, n_blocks, modes, C=1, stable=False):
        super().__init__()
        self.C = C
        self.lifter = RefLifter(C, hidden)
        self.encoder_blocks, self.downsample = nn.ModuleList(), nn.ModuleList()
        ch = hidden
        for i in range(n_blocks):
            self.encoder_blocks.append(RefBlock(ch, modes, stable))
            if i < n_blocks - 1:
                self.downsample.append(nn.Conv2d(ch, 2 * ch, 2, stride=2))
                ch *= 2
        self.bottleneck = RefBlock(ch, modes // 2, stable)
        self.upsample, self.decoder_blocks = nn.ModuleList(), nn.ModuleList()
        for _ in range(n_blocks - 1):
            self.upsample.append(nn.ConvTranspose2d(ch, ch // 2, 2, stride=2))
            ch //= 2
            self.decoder_blocks.append(
                nn.Sequential(nn.Conv2d(2 * ch, ch, 3, padding=1), nn.GELU(), nn.Conv2d(ch, ch, 3, padding=1))
            )
        self.output_proj = nn.Conv2d(hidden, 2 * C, 1)

    def forward(self, x):
        b, _, h, w = x.shape
        x = self.lifter(x)
        skips = []
        for i, block in enumerate(self.encoder_blocks):
            x = block(x)
            if i < len(self.downsample):
                skips.append(x)
                x = self.downsample[i](x)
        x = self.bottleneck(x)
        for i, (up, dec) in enumerate(zip(self.upsample, self.decoder_blocks)):
            x = dec(torch.cat([up(x), skips[-(i + 1)]], dim=1))
        return self.output_proj(x).view(b, 2, self.C, h, w).permute(0, 3, 4, 2, 1)  # (B, H, W, C, 2)


class RefPINN(nn.Module):
    """The reference's physics module: the generator registered twice, plus forward-model tensors."""

    def __init__(self, gen):
        super().__init__()
        self.generator = gen
        self.autoencoder = gen
        self.forward_model = nn.Module()
        self.forward_model.alpha = nn.Parameter(torch.ones(1))
        self.forward_model.beta = nn.Parameter(torch.ones(1))
        self.scaler = nn.Module()
        self.scaler.log_scale = nn.Parameter(torch.tensor(3.2))


def make_reference(size: dict, stable: bool, seed: int = 0) -> RefUNO:
    """A reference generator with every parameter off its init (so each name-map row matters)."""
    torch.manual_seed(seed)
    ref = RefUNO(size["hidden"], size["n_blocks"], size["modes"], stable=stable)
    with torch.no_grad():
        for name, p in ref.named_parameters():
            if name.endswith("layerscale"):
                p.uniform_(0.5, 1.5)
            elif ".norm." in name:
                p.add_(0.2 * torch.randn_like(p))
    return ref.eval()


def save_forms(ref: RefUNO, folder) -> dict:
    """The three forms a reference checkpoint comes in."""
    module_state = {f"model.{k}": v for k, v in RefPINN(ref).state_dict(keep_vars=False).items()}
    forms = {
        "bare": ref.state_dict(),
        "model_pt": module_state,
        "ckpt": {
            "epoch": 3,
            "global_step": 120,
            "pytorch-lightning_version": "2.4.0",
            "state_dict": module_state,
            "optimizer_states": [
                {"state": {0: {"step": torch.tensor(120.0)}}, "param_groups": [{"lr": 1e-3, "params": [0]}]}
            ],
            "lr_schedulers": [],
            "hyper_parameters": {"data_config": {"N": 64}},
        },
    }
    paths = {}
    for form, obj in forms.items():
        paths[form] = folder / f"{form}.{'ckpt' if form == 'ckpt' else 'pt'}"
        torch.save(obj, paths[form])
    return paths


def block_outputs(model: nn.Module, names: list[str], x: torch.Tensor) -> list[torch.Tensor]:
    """Outputs of the named submodules during one forward pass of ``model`` on ``x``."""
    got: dict[str, torch.Tensor] = {}
    modules = dict(model.named_modules())
    handles = [modules[n].register_forward_hook(lambda m, i, o, n=n: got.__setitem__(n, o)) for n in names]
    with torch.no_grad():
        model.eval()(x)
    for h in handles:
        h.remove()
    return [got[n] for n in names]


def as_complex(ref_out: torch.Tensor) -> torch.Tensor:
    """(B, H, W, C, 2) real/imag -> (B, C, H, W) complex, the reference's adapter."""
    return torch.complex(ref_out[..., 0], ref_out[..., 1]).permute(0, 3, 1, 2)


# ---- forward equality --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stage_a(tmp_path_factory):
    """Stage A reference generators (built once) saved in the three forms (~130 MB each, removed after)."""
    folder = tmp_path_factory.mktemp("stage_a")
    out = {}
    for stable in (False, True):
        ref = make_reference(STAGE_A, stable)
        sub = folder / ("stable" if stable else "hybrid")
        sub.mkdir()
        out[stable] = ref, save_forms(ref, sub)
    yield out
    for _, paths in out.values():
        for path in paths.values():
            path.unlink(missing_ok=True)


def test_independent_module_has_the_stage_a_parameter_counts():
    for stable, count in STAGE_A_PARAMS.items():
        assert count_parameters(RefUNO(32, 4, 12, stable=stable)) == count


@pytest.mark.slow
@pytest.mark.parametrize("stable", [False, True], ids=["hybrid", "stable_hybrid"])
def test_stage_a_reference_checkpoint_loads_without_flags_and_forwards_identically(stage_a, stable):
    ref, paths = stage_a[stable]
    x = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        want = as_complex(ref(x))
    blocks = block_outputs(ref, [f"encoder_blocks.{i}" for i in range(4)] + ["bottleneck"], x)
    for form, path in paths.items():
        gen, cfg, info = load_generator(path)
        m = cfg.model
        assert (m.arch, m.blocks, m.width, m.modes, m.spectral_layout, m.channel_cap, cfg.data.N) == (
            "stable_hybrid" if stable else "hybrid",
            4,
            32,
            12,
            "reference",
            None,
            64,
        ), form
        assert count_parameters(gen) == STAGE_A_PARAMS[stable]
        with torch.no_grad():
            got = gen.eval()(x)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6, msg=f"{form}")
        # every block too: at init the deepest level is barely visible in the output
        for a, b in zip(block_outputs(gen, [f"encoder.{i}" for i in range(4)] + ["bottleneck"], x), blocks):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=f"{form}")
        if form != "bare":
            ignored = info["ignored_keys"]
            assert "checked equal" in ignored["model.autoencoder.*"]
            assert {"model.forward_model.alpha", "model.forward_model.beta", "model.scaler.log_scale"} <= set(ignored)
        if form == "ckpt":
            assert (info["epoch"], info["global_step"]) == (3, 120)


@pytest.mark.parametrize("stable", [False, True], ids=["hybrid", "stable_hybrid"])
def test_tiny_reference_checkpoint_forwards_identically_in_all_forms(tmp_path, stable):
    ref = make_reference(TINY, stable, seed=1)
    paths = save_forms(ref, tmp_path)
    x = torch.rand(3, 1, 16, 16)
    with torch.no_grad():
        want = as_complex(ref(x))
    for form, path in paths.items():
        gen, cfg, _ = load_generator(path, N=16)
        assert (cfg.model.blocks, cfg.model.width, cfg.model.modes) == (2, 4, 6)
        with torch.no_grad():
            torch.testing.assert_close(gen.eval()(x), want, rtol=1e-5, atol=1e-6, msg=form)
        for a, b in zip(
            block_outputs(gen, ["encoder.0", "encoder.1", "bottleneck"], x),
            block_outputs(ref, ["encoder_blocks.0", "encoder_blocks.1", "bottleneck"], x),
        ):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=form)
        assert count_parameters(gen) == count_parameters(ref)


# ---- checks and errors ------------------------------------------------------------------------


def test_unequal_autoencoder_duplicate_is_an_error(tmp_path):
    ref = make_reference(TINY, True)
    state = {f"model.{k}": v.clone() for k, v in RefPINN(ref).state_dict().items()}
    state["model.autoencoder.output_proj.bias"] += 1.0
    torch.save(state, tmp_path / "model.pt")
    with pytest.raises(CaptureError, match=r"two different generators: model\.autoencoder\.output_proj\.bias"):
        load_generator(tmp_path / "model.pt", N=16)


@pytest.mark.parametrize(
    "flag, value, words",
    [
        ("--blocks", "3", ["--blocks 3", "blocks 2"]),
        ("--width", "8", ["--width 8", "width 4"]),
        ("--modes", "4", ["--modes 4", "modes 6"]),
        ("--architecture", "hybrid", ["--architecture hybrid", "arch stable_hybrid"]),
        ("--spectral-layout", "symmetric", ["--spectral-layout symmetric", "spectral_layout reference"]),
    ],
)
def test_contradicting_flags_name_both_values(tmp_path, capsys, flag, value, words):
    paths = save_forms(make_reference(TINY, True), tmp_path)
    np.savez(tmp_path / "in.npz", diffraction=np.ones((1, 16, 16), np.float32))
    code = main(
        [
            "capture",
            "--checkpoint",
            str(paths["bare"]),
            "--input",
            str(tmp_path / "in.npz"),
            flag,
            value,
            "--output",
            str(tmp_path / "out"),
        ]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    for word in words:
        assert word in err
    assert not (tmp_path / "out" / "activation_report.json").exists()


def test_a_reference_input_transform_is_refused(tmp_path):
    """The transform has no parameters, so only a Lightning file's hyper_parameters can show it."""
    ref = make_reference(TINY, False)
    torch.save(
        {
            "state_dict": {f"model.generator.{k}": v for k, v in ref.state_dict().items()},
            "hyper_parameters": {"model_config": {"fno_input_transform": "sqrt"}},
        },
        tmp_path / "t.ckpt",
    )
    with pytest.raises(CaptureError, match="input_transform 'sqrt'"):
        load_generator(tmp_path / "t.ckpt", N=16)


def test_agreeing_flags_are_accepted(tmp_path):
    """The issue's first attempt: the right flags, now with the reference's names."""
    paths = save_forms(make_reference(TINY, True), tmp_path)
    gen, cfg, _ = load_generator(
        paths["ckpt"], {"model.arch": "stable_hybrid", "model.spectral_layout": "reference", "model.blocks": 2}, N=16
    )
    assert cfg.model.arch == "stable_hybrid"


def test_mismatch_hints_name_the_real_cause():
    from fnodiag.config import ModelConfig
    from fnodiag.diagnostics.capture import likely_cause
    from fnodiag.models import build_model
    from fnodiag.models.reference_layout import from_reference_state

    def state(**kw):
        cfg = ModelConfig(
            **{"arch": "hybrid", "blocks": 2, "width": 4, "modes": 4, "spectral_layout": "reference", **kw}
        )
        return build_model(cfg, 16).state_dict()

    model = state()
    ref_named = make_reference(TINY, False).state_dict()
    assert from_reference_state(ref_named).keys() == model.keys()
    assert likely_cause(ref_named, model).startswith("naming")
    assert likely_cause(state(blocks=3), model).startswith("depth (the checkpoint has 3 encoder blocks, the model 2)")
    assert likely_cause(state(width=8), model).startswith("width (the checkpoint has 8, the model 4)")
    assert likely_cause(state(modes=6), model).startswith("modes (the checkpoint has 6, the model 4)")
    assert likely_cause(state(arch="stable_hybrid"), model).startswith("architecture")
    assert likely_cause(state(spectral_layout="symmetric"), model).startswith("spectral layout")


# ---- reports in the reference's vocabulary, export and round trip ------------------------------


def test_capture_cli_reference_layer_names_and_summary(tmp_path, capsys):
    paths = save_forms(make_reference(TINY, True), tmp_path)
    np.savez(tmp_path / "in.npz", diffraction=np.random.default_rng(0).random((2, 16, 16)).astype(np.float32))
    base = [
        "capture",
        "--checkpoint",
        str(paths["model_pt"]),
        "--input",
        str(tmp_path / "in.npz"),
        "--max-samples",
        "2",
        "--output",
        str(tmp_path / "out"),
    ]
    assert main([*base, "--output-json-name", "fnodiag.json"]) == 0
    assert main([*base, "--layer-names", "reference", "--output-json-name", "ref.json"]) == 0
    out = capsys.readouterr().out
    assert "ignored: model.autoencoder.*: duplicate of model.generator.*" in out
    assert "ignored: model.forward_model.alpha: not part of the generator" in out
    default = json.loads((tmp_path / "out" / "fnodiag.json").read_text())
    ref = json.loads((tmp_path / "out" / "ref.json").read_text())
    assert {"lifter", "encoder.0", "encoder.0.local", "head", "decoder.0"} <= set(default["per_layer"])
    want = {
        "lifter",
        "encoder_blocks.0",
        "encoder_blocks.1",
        "encoder_blocks.0.spectral",
        "encoder_blocks.0.local_conv",
        "encoder_blocks.0.norm",
        "bottleneck",
        "bottleneck.local_conv",
        "decoder_blocks.0",
        "output_proj",
        "output",
    }
    assert want <= set(ref["per_layer"]) and not {"encoder.0", "head"} & set(ref["per_layer"])
    assert ref["layers"]["encoder_blocks.0.local_conv/spatial_std"] == default["layers"]["encoder.0.local/spatial_std"]
    assert "encoder_blocks.0/spectral_local_ratio" in ref["layers"]
    assert "encoder_blocks.0/layerscale_mean" in ref["params"]
    assert ref["summary"]["layer_names"] == "reference" and "layer_names" not in default["summary"]


@pytest.mark.parametrize("arch", ["hybrid", "stable_hybrid"])
def test_export_round_trip(tmp_path, capsys, tiny_cfg, dataset_cache, arch):
    """fnodiag run -> reference layout -> the independent module and fnodiag capture agree."""
    from fnodiag.training.run import train

    cfg = tiny_cfg.override({"model.arch": arch, "model.spectral_layout": "reference", "train.epochs": 1})
    run = train(cfg, tmp_path / "runs", name="r", cache_dir=dataset_cache, progress=False)
    exported = tmp_path / "ref.pt"
    assert main(["export-checkpoint", str(run.path), "--layout", "reference", "--output", str(exported)]) == 0
    state = torch.load(exported, weights_only=True)
    assert "encoder_blocks.0.spectral.weights" in state and not any(k.startswith("encoder.") for k in state)
    ref = RefUNO(4, 2, 4, stable=arch == "stable_hybrid")
    ref.load_state_dict(state, strict=True)  # the reference's own strict load
    original, _, _ = load_generator(run.best_ckpt_path)
    back, back_cfg, _ = load_generator(exported, N=32)
    assert back_cfg.model.arch == arch
    for (k, a), (k2, b) in zip(original.state_dict().items(), back.state_dict().items()):
        assert k == k2 and torch.equal(a, b), k
    x = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        want = original.eval()(x)
        assert torch.equal(back.eval()(x), want)
        torch.testing.assert_close(as_complex(ref.eval()(x)), want, rtol=1e-5, atol=1e-6)
    # an existing output is kept unless --force
    assert main(["export-checkpoint", str(run.path), "--output", str(exported)]) == 2
    assert "exists" in capsys.readouterr().err
    assert main(["export-checkpoint", str(run.path), "--output", str(exported), "--force", "--weights", "last"]) == 0


def test_export_refuses_what_the_reference_cannot_hold(tmp_path, capsys, tiny_cfg):
    from fnodiag.models import build_model

    for arch, layout, words in (
        ("hybrid", "symmetric", ["symmetric", "--spectral-layout reference"]),
        ("prenorm_hybrid", "reference", ["PreNormBlock", "cannot be exported"]),
    ):
        cfg = tiny_cfg.override({"model.arch": arch, "model.spectral_layout": layout})
        torch.save(build_model(cfg.model, 32).state_dict(), tmp_path / f"{arch}.pt")
        flags = [
            "--architecture",
            arch,
            "--spectral-layout",
            layout,
            "--blocks",
            "2",
            "--width",
            "4",
            "--modes",
            "4",
            "--N",
            "32",
        ]
        code = main(["export-checkpoint", str(tmp_path / f"{arch}.pt"), "--output", str(tmp_path / "x.pt"), *flags])
        err = capsys.readouterr().err.strip()
        assert code == 2 and len(err.splitlines()) == 1, err
        for word in words:
            assert word in err
        assert not (tmp_path / "x.pt").exists()


def test_new_flags_have_help_and_bad_export_input_is_exit_2(tmp_path, capsys):
    from fnodiag.cli import build_parser

    choices = build_parser()._subparsers._group_actions[0].choices
    for cmd in ("export-checkpoint", "capture"):
        for action in choices[cmd]._actions:
            assert action.help, f"{cmd} {action.option_strings} has no help string"
    assert main(["export-checkpoint", str(tmp_path / "nope"), "--output", str(tmp_path / "x.pt")]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    assert main(["export-checkpoint", str(tmp_path / "run"), "--output", str(tmp_path / "x.pt")]) == 2
    assert "no checkpoints/best.ckpt" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["export-checkpoint", str(tmp_path / "run"), "--layout", "symmetric", "--output", "x.pt"])
    assert exc.value.code == 2


def test_infer_model_reads_a_channel_cap_and_rejects_inconsistent_files():
    from fnodiag.config import ModelConfig
    from fnodiag.models import build_model
    from fnodiag.models.reference_layout import infer_model, to_reference_state

    cfg = ModelConfig(arch="stable_hybrid", blocks=3, width=4, modes=4, spectral_layout="reference", channel_cap=8)
    state = to_reference_state(build_model(cfg, 16))
    got = infer_model(state)
    assert (got["arch"], got["blocks"], got["width"], got["modes"], got["channel_cap"]) == ("stable_hybrid", 3, 4, 4, 8)
    assert got["channel_schedule"] == [4, 8, 8, 8]
    bad = dict(state, **{"bottleneck.spectral.weights": state["bottleneck.spectral.weights"][..., :1, :1]})
    with pytest.raises(ValueError, match="bottleneck has 1 spectral modes"):
        infer_model(bad)
    with pytest.raises(ValueError, match="no encoder_blocks"):
        infer_model({k: v for k, v in state.items() if not k.startswith("encoder_blocks.")})


def test_capture_uses_the_reference_arm_folder_dataset(tmp_path, capsys, monkeypatch):
    """<out>/runs/pinn_<arch>/model.pt with <out>/datasets/N16/gs1/test.npz: no --input, nothing written there."""
    arm = tmp_path / "out" / "runs" / "pinn_stable_hybrid"
    arm.mkdir(parents=True)
    forms = save_forms(make_reference(TINY, True), tmp_path)
    forms["model_pt"].rename(arm / "model.pt")
    (arm / "config.json").write_text("{}")  # the reference's own config (not a fnodiag RunConfig)
    data = tmp_path / "out" / "datasets" / "N16" / "gs1"
    data.mkdir(parents=True)
    np.savez(data / "test.npz", diffraction=np.random.default_rng(1).random((3, 16, 16, 1)).astype(np.float32))
    before = sorted(p.relative_to(tmp_path) for p in (tmp_path / "out").rglob("*"))
    assert (
        main(
            [
                "capture",
                "--checkpoint",
                str(arm / "model.pt"),
                "--N",
                "16",
                "--max-samples",
                "3",
                "--output",
                str(tmp_path / "rep"),
            ]
        )
        == 0
    ), capsys.readouterr().err
    report = json.loads((tmp_path / "rep" / "activation_report.json").read_text())
    assert report["summary"]["input"].startswith(str(data / "test.npz")) and report["summary"]["n_samples"] == 3
    assert sorted(p.relative_to(tmp_path) for p in (tmp_path / "out").rglob("*")) == before
    # without its dataset: simulated into ./datasets (here tmp_path), still nothing written into the reference tree
    (data / "test.npz").unlink()
    before = sorted(p.relative_to(tmp_path) for p in (tmp_path / "out").rglob("*"))
    monkeypatch.chdir(tmp_path)
    assert (
        main(
            [
                "capture",
                "--checkpoint",
                str(arm / "model.pt"),
                "--N",
                "32",
                "--object-size",
                "64",
                "--output",
                str(tmp_path / "rep"),
            ]
        )
        == 0
    ), capsys.readouterr().err
    assert sorted(p.relative_to(tmp_path) for p in (tmp_path / "out").rglob("*")) == before
    assert (tmp_path / "datasets").is_dir()
