"""Default targets and statistics on real neuraloperator models (1-D, 2-D, 3-D, complex, factorized)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from neuralop.layers.spectral_convolution import SpectralConv
from neuralop.models import FNO
from torch import nn

from fnodiag.diagnostics.hooks import ActivationRecorder, choose_targets
from fnodiag.diagnostics.stats import ACTIVATION_STATS
from fnodiag.diagnostics.targets import OUTPUT

#: (FNO keyword arguments, probe shape): the issue's 2-D model, a 1-D one and a small 3-D one
MODELS = {
    "2d": (dict(n_modes=(8, 8), hidden_channels=24, n_layers=4), (2, 1, 32, 32)),
    "1d": (dict(n_modes=(8,), hidden_channels=16, n_layers=3), (2, 1, 64)),
    "3d": (dict(n_modes=(4, 4, 4), hidden_channels=8, n_layers=2), (2, 1, 12, 12, 12)),
}


def fno(kind: str, **extra) -> tuple[nn.Module, torch.Tensor]:
    kwargs, shape = MODELS[kind]
    torch.manual_seed(0)
    model = FNO(in_channels=1, out_channels=1, **kwargs, **extra)
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(1))
    return model, x


def train_a_little(model: nn.Module, x: torch.Tensor, steps: int = 3) -> None:
    """A few Adam steps towards a smooth target, so statistics are those of a trained model."""
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    y = x.roll(1, dims=-1)
    for _ in range(steps):
        loss = nn.functional.mse_loss(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()


def capture(model: nn.Module, x: torch.Tensor):
    """Default targets of ``model`` for probe ``x`` and one capture's ``(layer, stat) -> value``."""
    plan = choose_targets(model, x)
    model.eval()
    with ActivationRecorder(model, plan) as rec, torch.no_grad():
        model(x)
    return plan, rec.collect()


def spectral_convs(model: nn.Module) -> list[str]:
    return [n for n, m in model.named_modules() if isinstance(m, SpectralConv)]


@pytest.mark.parametrize("kind", list(MODELS))
def test_default_targets_record_every_spectral_conv_in_forward_order_with_finite_stats(kind):
    model, x = fno(kind)
    train_a_little(model, x)
    plan, values = capture(model, x)
    convs = spectral_convs(model)
    assert len(convs) == MODELS[kind][0]["n_layers"]
    for conv in convs:  # recorded, every statistic present and finite
        assert {s: math.isfinite(values[(conv, s)]) for s in ACTIVATION_STATS} == dict.fromkeys(ACTIVATION_STATS, True)
    finite = sum(math.isfinite(v) for v in values.values())
    assert finite / len(values) >= 0.95, f"{finite} of {len(values)} cells finite"
    # forward order: lifting, then the blocks, then the projection, then the output
    layers = list(dict.fromkeys(layer for layer, _ in values))
    assert layers == plan.targets and layers[-1] == OUTPUT
    first = lambda prefix: min(i for i, t in enumerate(layers) if t.startswith(prefix))  # noqa: E731
    last = lambda prefix: max(i for i, t in enumerate(layers) if t.startswith(prefix))  # noqa: E731
    assert last("lifting") < first("fno_blocks") and last("fno_blocks") < first("projection")
    assert [c for c in layers if c in convs] == convs  # block 0 before block 1 ...
    assert plan.left_out == {}
    # every layer of a neuraloperator FNO is a field: no statistic is absent anywhere
    assert plan.absent() == {} and {s for (_, s) in values} == set(ACTIVATION_STATS)


def test_registration_order_is_not_forward_order_in_neuralop_fno():
    """The FNO registers its blocks before its lifting: the traced order is not named_modules order."""
    model, x = fno("2d")
    names = [n for n, _ in model.named_modules()]
    assert names.index("fno_blocks") < names.index("lifting")
    plan = choose_targets(model, x)
    assert plan.targets.index("lifting") < plan.targets.index("fno_blocks.convs.0")


def test_flattened_channel_mlps_are_recorded_as_fields_of_the_2d_model():
    """neuraloperator's ChannelMLP and skips run Conv1d on (B, C, H*W): recorded with their (H, W) axes."""
    model, x = fno("2d")
    plan, values = capture(model, x)
    assert plan.shapes["lifting"] == (2, 24, 32, 32) and plan.shapes["fno_blocks.fno_skips.0"] == (2, 24, 32, 32)
    assert plan.layouts["fno_blocks.channel_mlp.0.fcs.0"] == (32, 32)
    assert plan.merged["lifting.fcs.1"] == "lifting" and plan.merged["fno_blocks.fno_skips.0.conv"].endswith("skips.0")
    assert all(len(plan.shapes[t]) == 4 for t in plan.targets)
    # the restored layout gives the 2-D spectrum of the hidden layer: pin it to numpy
    hidden = {}
    handle = model.lifting.fcs[0].register_forward_hook(lambda m, a, out: hidden.setdefault("h", out.detach()))
    with torch.no_grad():
        model(x)
    handle.remove()
    field = hidden["h"].numpy().astype(np.float64).reshape(2, 48, 32, 32)
    power = np.abs(np.fft.rfft2(np.abs(field), norm="ortho")) ** 2
    expected = power[..., :4, :3].mean() / power.mean()  # ceil(32/8) x ceil(17/8)
    assert values[("lifting.fcs.0", "low_freq_ratio")] == pytest.approx(expected, rel=1e-4)
    assert values[("lifting.fcs.0", "spatial_std")] == pytest.approx(field.std(axis=(2, 3)).mean(), rel=1e-4)


def test_complex_fno_records_complex_spectral_convs_by_magnitude():
    model, _ = fno("2d", complex_data=True)
    x = torch.randn(2, 1, 32, 32, dtype=torch.complex64, generator=torch.Generator().manual_seed(2))
    seen = {}
    handle = model.fno_blocks.convs[1].register_forward_hook(lambda m, a, out: seen.setdefault("z", out.detach()))
    plan, values = capture(model, x)
    handle.remove()
    z = seen["z"].numpy()
    assert np.iscomplexobj(z) and "fno_blocks.convs.1" in plan.targets
    a = np.abs(z).astype(np.float64)  # complex activations are measured by magnitude
    map_std = a.std(axis=(2, 3))
    assert values[("fno_blocks.convs.1", "mean")] == pytest.approx(a.mean(), rel=1e-4)
    assert values[("fno_blocks.convs.1", "spatial_std")] == pytest.approx(map_std.mean(), rel=1e-4)
    assert values[("fno_blocks.convs.1", "min_channel_std")] == pytest.approx(map_std.mean(axis=0).min(), rel=1e-4)
    # ComplexValued runs its real MLP twice (real and imaginary parts): recorded through the wrapper
    assert "lifting" in plan.targets and plan.merged["lifting.fr.fcs.0"] == "lifting"
    assert all(math.isfinite(v) for v in values.values())


def test_spectral_conv_with_factorized_weight_and_no_bias_is_an_operator_target():
    """Its only parameters live in a factorized tensor module that is never called."""
    torch.manual_seed(0)
    conv = SpectralConv(3, 3, n_modes=(4, 4), bias=False, factorization="cp", rank=0.5)
    assert not list(conv.parameters(recurse=False)) and list(conv.parameters())
    model = nn.Sequential(nn.Conv2d(1, 3, 1), conv, nn.GELU())
    plan, values = capture(model, torch.randn(2, 1, 16, 16))
    assert plan.targets == ["0", "1", "2", OUTPUT]
    assert all(math.isfinite(values[("1", s)]) for s in ACTIVATION_STATS)
