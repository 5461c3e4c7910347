"""Tests for fnodiag.models: spectral convolution, residual blocks, hybrid U-NO generators."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from fnodiag.config import ModelConfig
from fnodiag.models import (
    BLOCKS,
    MODELS,
    SPECTRAL_LAYOUTS,
    ControlBlock,
    HybridUNO,
    PreNormBlock,
    SpectralConv2d,
    StableBlock,
    build_model,
    count_parameters,
    get_block,
)


def _count_on_meta(**kwargs) -> int:
    with torch.device("meta"):
        model = HybridUNO(**kwargs)
    return count_parameters(model)


def _random_loss(out: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """A scalar that depends on every output element with random weights (no symmetric cancellation)."""
    g = torch.Generator().manual_seed(seed)
    if out.is_complex():
        return (out.real * torch.randn(out.shape, generator=g)).sum() + (
            out.imag * torch.randn(out.shape, generator=g)
        ).sum()
    return (out * torch.randn(out.shape, generator=g)).sum()


# --------------------------------------------------------------------------- parameter counts


def test_reference_stage_a_counts_are_pinned():
    base = dict(in_channels=1, width=32, blocks=4, modes=12, size=64, layout="reference")
    assert _count_on_meta(**base, block="control") == 17_202_402
    assert _count_on_meta(**base, block="stable") == 17_204_610
    assert _count_on_meta(**base, block="prenorm") == 17_204_610


def test_build_model_gives_the_pinned_counts_from_a_config():
    cfg = ModelConfig(arch="stable_hybrid", spectral_layout="reference")
    with torch.device("meta"):
        model = build_model(cfg, 64)
    assert count_parameters(model) == 17_204_610
    assert model.block_class == "StableBlock"
    assert model.channel_schedule == [32, 64, 128, 256, 256]


@pytest.mark.parametrize(
    "blocks, cap, expected",
    [
        (2, None, 1_021_666),
        (3, None, 4_258_018),
        (5, None, 68_977_890),
        (6, None, 276_075_746),
        (6, 512, 118_263_522),
        (5, 512, 68_977_890),
    ],
)
def test_reference_depth_table(blocks, cap, expected):
    # Brief §1.3 depth table: 1.02 M, 4.26 M, 68.98 M, 276.08 M uncapped, 118.26 M capped.
    assert _count_on_meta(blocks=blocks, size=64, layout="reference", channel_cap=cap) == expected


def test_channel_cap_bounds_every_conv_and_the_schedule():
    with torch.device("meta"):
        model = HybridUNO(blocks=6, size=64, channel_cap=512)
    assert model.channel_schedule == [32, 64, 128, 256, 512, 512, 512]
    convs = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, SpectralConv2d))]
    assert len(convs) > 20
    assert max(m.out_channels for m in convs) == 512
    with torch.device("meta"):
        uncapped = HybridUNO(blocks=6, size=64)
    assert max(m.out_channels for m in uncapped.modules() if isinstance(m, nn.Conv2d)) == 1024


# --------------------------------------------------------------------------- spectral convolution


def test_spectral_init_scale_and_shapes():
    torch.manual_seed(0)
    conv = SpectralConv2d(64, 8, 6, size=32)
    assert [tuple(w.shape) for w in conv.weights] == [(64, 8, 6, 6)] * 2
    assert all(w.dtype == torch.complex64 for w in conv.weights)
    w = conv.weights[0]
    expected = 1 / np.sqrt(2 * 64)
    assert w.real.std().item() == pytest.approx(expected, rel=0.1)
    assert w.imag.std().item() == pytest.approx(expected, rel=0.1)
    # Sized to the map: at 8x8 the symmetric layout keeps 4 rows per block and 5 columns.
    assert SpectralConv2d(2, 2, 12, size=8).modes_kept == (4, 5)
    assert tuple(SpectralConv2d(2, 2, 12, size=8, layout="reference").weights[0].shape) == (2, 2, 12, 12)


def test_reference_layout_matches_numpy():
    torch.manual_seed(1)
    conv = SpectralConv2d(3, 2, 4, size=6, layout="reference")
    x = torch.randn(2, 3, 6, 6)
    with torch.no_grad():
        y = conv(x).numpy()
    w = conv.weights[0].detach().numpy()
    spec = np.fft.rfft2(x.numpy().astype(np.float64))  # default numpy norm = "backward"
    m_h, m_w = min(4, 6), min(4, 6 // 2 + 1)
    out = np.zeros((2, 2, 6, 4), dtype=np.complex128)
    out[:, :, :m_h, :m_w] = np.einsum("bcxy,coxy->boxy", spec[:, :, :m_h, :m_w], w[:, :, :m_h, :m_w])
    expected = np.fft.irfft2(out, s=(6, 6))
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, expected, atol=1e-5)


def test_symmetric_dc_weight_gives_the_channel_mean():
    conv = SpectralConv2d(2, 3, 4, size=8)
    mix = torch.tensor([[1.0, -2.0, 0.5], [3.0, 0.0, 1.0]])
    with torch.no_grad():
        for w in conv.weights:
            w.zero_()
        conv.weights[0][:, :, 0, 0] = mix.to(torch.complex64)
    x = torch.randn(4, 2, 8, 8)
    with torch.no_grad():
        y = conv(x)
    expected = torch.einsum("bc,co->bo", x.mean(dim=(-2, -1)), mix)[..., None, None].expand_as(y)
    torch.testing.assert_close(y, expected, atol=1e-5, rtol=1e-5)


def test_symmetric_identity_weights_keep_every_frequency():
    # With m >= N/2 + 1 both row blocks tile the whole half-spectrum without overlap, so identity
    # weights reproduce the input exactly; a missing or doubled negative-row block would not.
    conv = SpectralConv2d(2, 2, 16, size=8)
    with torch.no_grad():
        for w in conv.weights:
            w.copy_(torch.eye(2, dtype=torch.complex64)[:, :, None, None].expand_as(w))
    x = torch.randn(3, 2, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(conv(x), x, atol=1e-5, rtol=1e-5)


def test_symmetric_conv_rejects_another_size_and_unknown_layout():
    conv = SpectralConv2d(2, 2, 4, size=16)
    with pytest.raises(ValueError, match="16x16"):
        conv(torch.randn(1, 2, 8, 8))
    with pytest.raises(ValueError, match="symmetric, reference"):
        SpectralConv2d(2, 2, 4, size=16, layout="banana")
    # The reference layout, like the original, adapts to any size.
    assert SpectralConv2d(2, 2, 4, size=16, layout="reference")(torch.randn(1, 2, 8, 8)).shape == (1, 2, 8, 8)


# --------------------------------------------------------------------------- blocks


def test_control_block_with_zero_weights_is_identity():
    block = ControlBlock(4, 3, size=8)
    with torch.no_grad():
        for p in block.parameters():
            p.zero_()
    x = torch.randn(2, 4, 8, 8)
    torch.testing.assert_close(block(x), x, atol=1e-6, rtol=0)
    assert not hasattr(block, "layerscale")


@pytest.mark.parametrize("cls", [StableBlock, PreNormBlock])
def test_normalised_blocks_start_near_identity_and_train_gamma(cls):
    torch.manual_seed(2)
    block = cls(4, 3, size=8, layerscale_init=1e-3)
    assert tuple(block.layerscale.shape) == (4,)
    assert block.norm.affine and block.norm.eps == 1e-5
    x = torch.randn(2, 4, 8, 8)
    y = block(x)
    torch.testing.assert_close(y, x, atol=1e-2, rtol=0)
    assert (y - x).abs().max().item() > 1e-6
    _random_loss(y).backward()
    assert block.layerscale.grad is not None and block.layerscale.grad.abs().min().item() > 0


def test_stable_block_update_has_zero_spatial_mean_per_channel():
    torch.manual_seed(3)
    block = StableBlock(4, 3, size=8)
    captured = {}
    block.norm.register_forward_hook(lambda mod, inp, out: captured.update(a=inp[0], u=out))
    x = torch.randn(3, 4, 8, 8) + 2.0
    y = block(x)
    u = captured["u"]
    torch.testing.assert_close(u.mean(dim=(-2, -1)), torch.zeros(3, 4), atol=1e-5, rtol=0)
    # Unit variance up to the norm's eps: var(u) = v / (v + eps), v the branch output's variance.
    v = captured["a"].var(dim=(-2, -1), unbiased=False)
    torch.testing.assert_close(u.var(dim=(-2, -1), unbiased=False), v / (v + 1e-5), atol=1e-4, rtol=0)
    # The residual update is exactly gamma times the normalised branch output.
    torch.testing.assert_close(y - x, block.layerscale.view(1, -1, 1, 1) * u, atol=1e-6, rtol=0)


def test_prenorm_block_update_ignores_per_channel_affine_input_changes():
    torch.manual_seed(4)
    block = PreNormBlock(3, 3, size=8)
    x = torch.randn(2, 3, 8, 8)
    scale = torch.tensor([2.0, 0.5, 3.0]).view(1, 3, 1, 1)
    shift = torch.tensor([1.0, -4.0, 0.3]).view(1, 3, 1, 1)
    x2 = scale * x + shift
    with torch.no_grad():
        torch.testing.assert_close(block(x2) - x2, block(x) - x, atol=1e-5, rtol=1e-3)
        # The control block's update is not invariant.
        control = ControlBlock(3, 3, size=8)
        assert ((control(x2) - x2) - (control(x) - x)).abs().max().item() > 1e-2


def test_block_registry_and_shared_submodule_names():
    assert set(BLOCKS) == {"control", "stable", "prenorm"}
    for cls in BLOCKS.values():
        block = cls(4, 3, size=8, layout="reference", layerscale_init=0.1)
        assert isinstance(block.spectral, SpectralConv2d) and block.spectral.layout == "reference"
        assert isinstance(block.local, nn.Conv2d) and block.local.kernel_size == (3, 3)
        assert block.local.bias is not None
    with pytest.raises(ValueError, match="control, stable, prenorm"):
        get_block("postnorm")


# --------------------------------------------------------------------------- generators


@pytest.mark.parametrize("arch", list(MODELS))
def test_generator_output_shape_dtype_and_module_names(arch):
    cfg = ModelConfig(arch=arch, blocks=3, width=4, modes=4, in_channels=2)
    model = build_model(cfg, 16)
    out = model(torch.randn(2, 2, 16, 16))
    assert out.shape == (2, 2, 16, 16) and out.dtype == torch.complex64
    names = dict(model.named_modules())
    for name in (
        "lifter.conv1",
        "lifter.conv2",
        "encoder.0.spectral",
        "encoder.2.local",
        "down.1",
        "bottleneck.spectral",
        "up.0",
        "decoder.1.conv2",
        "head",
    ):
        assert name in names
    assert ("encoder.0.norm" in names) == (arch != "hybrid")
    assert model.channel_schedule == [4, 8, 16, 16]
    assert model.head.out_channels == 4
    assert model.bottleneck.spectral.modes == 2


def test_head_channels_are_real_then_imag():
    model = HybridUNO(in_channels=2, width=4, blocks=2, modes=3, size=8)
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.bias.copy_(torch.tensor([1.0, 2.0, 3.0, 4.0]))
        out = model(torch.randn(1, 2, 8, 8))
    assert torch.all(out[0, 0] == complex(1, 3)) and torch.all(out[0, 1] == complex(2, 4))


@pytest.mark.parametrize("arch", list(MODELS))
def test_symmetric_layout_has_no_dead_weights(arch):
    torch.manual_seed(5)
    model = build_model(ModelConfig(arch=arch, blocks=3, width=4, modes=6), 16)
    # At init a pre-norm block's input IN(x) has zero spatial mean (norm bias 0), so its DC
    # spectral weights see a ~0 input; a non-zero norm bias (as after any optimizer step) removes
    # that transient. Structural dead weights would stay dead whatever the bias.
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.InstanceNorm2d):
                module.bias.normal_(0.0, 0.1)
    _random_loss(model(torch.randn(2, 1, 16, 16))).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        n_dead = int((p.grad.abs() == 0).sum())
        assert n_dead == 0, f"{name}: {n_dead} of {p.numel()} elements got a zero gradient"


def test_reference_layout_dead_weights_are_exactly_the_unused_footprint():
    torch.manual_seed(6)
    modes = 12
    model = HybridUNO(width=4, blocks=2, modes=modes, size=16, layout="reference")
    _random_loss(model(torch.randn(2, 1, 16, 16))).backward()
    sizes = {"encoder.0": 16, "encoder.1": 8, "bottleneck": 8}
    for prefix, s in sizes.items():
        block = model.get_submodule(prefix)
        m = block.spectral.modes
        grad = block.spectral.weights[0].grad
        alive = torch.zeros(m, m, dtype=torch.bool)
        alive[: min(m, s), : min(m, s // 2 + 1)] = True
        dead = grad.abs() == 0
        assert torch.all(dead[..., ~alive]), prefix
        assert not torch.any(dead[..., alive]), prefix
        if s < m:
            assert dead.any(), prefix


def test_generator_is_batch_independent_in_eval_mode():
    torch.manual_seed(7)
    model = build_model(ModelConfig(arch="stable_hybrid", blocks=3, width=4, modes=4), 16).eval()
    x = torch.randn(3, 1, 16, 16)
    with torch.no_grad():
        together = model(x)
        alone = torch.cat([model(x[i : i + 1]) for i in range(3)])
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=1e-5)


def test_generator_validation_errors():
    with pytest.raises(ValueError, match="divisible by 2\\*\\*\\(blocks-1\\) = 8"):
        HybridUNO(blocks=4, size=20)
    with pytest.raises(ValueError, match="hybrid, stable_hybrid, prenorm_hybrid"):
        build_model(ModelConfig(arch="unet"), 64)
    model = HybridUNO(width=4, blocks=2, modes=3, size=8)
    with pytest.raises(ValueError, match="expects"):
        model(torch.randn(1, 1, 16, 16))
    assert SPECTRAL_LAYOUTS == ("symmetric", "reference")
    # ModelConfig.validate imports the registries from this package.
    ModelConfig(arch="prenorm_hybrid", spectral_layout="reference").validate()
