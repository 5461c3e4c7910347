"""Tests of fnodiag.diagnostics.stats: known values by hand or numpy, one-transfer to_host."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from fnodiag.diagnostics import stats
from fnodiag.diagnostics.stats import (
    ACTIVATION_STATS,
    GLOBAL_STATS,
    SPATIAL_STATS,
    STAT_SETS,
    absent_stats,
    activation_stat_names,
    activation_stats,
    branch_ratio,
    grad_norms,
    scale_params,
    snapshot_weights,
    stat_set,
    to_host,
    update_ratios,
    weight_norms,
)
from fnodiag.models import HybridUNO

IDX = {name: i for i, name in enumerate(ACTIVATION_STATS)}


def as_dict(t: torch.Tensor) -> dict[str, float]:
    return dict(zip(ACTIVATION_STATS, t.tolist()))


def numpy_stats(a: np.ndarray, near_zero: float = 1e-6) -> dict[str, float]:
    """Independent reference for finite real (BATCH, C, H, W) arrays (float64 numpy)."""
    a = a.astype(np.float64)
    mag = np.abs(a)
    map_std = a.std(axis=(2, 3))  # (BATCH, C), ddof=0
    power = np.abs(np.fft.rfft2(mag, norm="ortho")) ** 2
    kh, kw = math.ceil(power.shape[-2] / 8), math.ceil(power.shape[-1] / 8)
    return {
        "mean": a.mean(),
        "std": a.std(),
        "abs_mean": mag.mean(),
        "p50": np.quantile(mag, 0.5),
        "p95": np.quantile(mag, 0.95),
        "p99": np.quantile(mag, 0.99),
        "frac_near_zero": (mag <= near_zero).mean(),
        "spatial_std": map_std.mean(),
        "min_channel_std": map_std.mean(axis=0).min(),
        "low_freq_ratio": power[..., :kh, :kw].mean() / power.mean(),
        "nonfinite": 0.0,
    }


def assert_stats(got: torch.Tensor, expected: dict[str, float], rtol=1e-5, atol=1e-6):
    for name, value in as_dict(got).items():
        if name in expected:
            assert value == pytest.approx(expected[name], rel=rtol, abs=atol, nan_ok=True), name


# --------------------------------------------------------------------------- activation_stats


def test_contract_shape_dtype_device():
    out = activation_stats(torch.randn(2, 3, 8, 8, dtype=torch.float64))
    assert out.shape == (len(ACTIVATION_STATS),) and out.dtype == torch.float32 and out.device.type == "cpu"
    assert len(set(ACTIVATION_STATS)) == 11


def test_constant_map_has_zero_spatial_std_and_dc_only_spectrum():
    t = torch.full((2, 3, 8, 12), -2.5)
    got = as_dict(activation_stats(t))
    # rfft2 half-spectrum 8 x 7; the DC term alone carries power c^2 H W, so the corner
    # (ceil(8/8) x ceil(7/8) = 1 x 1) over the whole half-spectrum is H * W_r / 1.
    assert got["low_freq_ratio"] == pytest.approx(8 * 7)
    assert got["mean"] == -2.5 and got["abs_mean"] == 2.5 and got["std"] == 0
    assert got["p50"] == got["p95"] == got["p99"] == 2.5
    assert got["spatial_std"] == 0 and got["min_channel_std"] == 0
    assert got["frac_near_zero"] == 0 and got["nonfinite"] == 0


def test_low_freq_ratio_of_constant_with_larger_block():
    # H = 20, W = 40 -> W_r = 21; corner ceil(20/8) x ceil(21/8) = 3 x 3.
    got = as_dict(activation_stats(torch.ones(1, 1, 20, 40)))
    assert got["low_freq_ratio"] == pytest.approx(20 * 21 / 9)


def test_random_tensor_matches_numpy():
    g = torch.Generator().manual_seed(0)
    t = torch.randn(3, 4, 16, 10, generator=g)
    t[0, 1, :3] = 0.0  # some exact zeros for frac_near_zero
    assert_stats(activation_stats(t), numpy_stats(t.numpy()))


def test_dead_channel_among_live_ones():
    g = torch.Generator().manual_seed(1)
    t = torch.randn(2, 3, 8, 8, generator=g)
    t[:, 1] = 0.7  # channel 1 constant in every sample
    got = as_dict(activation_stats(t))
    map_std = t.numpy().astype(np.float64).std(axis=(2, 3))
    assert got["min_channel_std"] == 0
    assert got["spatial_std"] == pytest.approx(map_std.sum() / 6, rel=1e-5)  # 4 live maps of 6
    assert got["spatial_std"] > 0


def test_complex_input_uses_magnitude():
    g = torch.Generator().manual_seed(2)
    r = torch.rand(2, 2, 8, 8, generator=g) + 0.1
    phase = torch.rand(2, 2, 8, 8, generator=g) * 6.28
    z = torch.polar(r, phase)
    assert z.dtype == torch.complex64
    torch.testing.assert_close(activation_stats(z), activation_stats(r), rtol=1e-5, atol=1e-6)
    assert_stats(activation_stats(z), numpy_stats(np.abs(z.numpy())))


def test_near_zero_threshold():
    t = torch.tensor([0.0, 1e-7, -1e-5, 1e-3]).reshape(1, 1, 2, 2)
    assert as_dict(activation_stats(t))["frac_near_zero"] == pytest.approx(0.5)
    assert as_dict(activation_stats(t, near_zero=1e-4))["frac_near_zero"] == pytest.approx(0.75)


def test_nonfinite_counted_and_excluded():
    g = torch.Generator().manual_seed(3)
    t = torch.randn(2, 2, 6, 6, generator=g, dtype=torch.float64)
    t[0, 0, 1, 2] = float("nan")
    t[1, 1, 0, 0] = float("inf")
    t[1, 0, 5, 5] = -float("inf")
    a = t.numpy()
    fin = a[np.isfinite(a)]
    got = as_dict(activation_stats(t))
    assert got["nonfinite"] == 3
    for name, value in {
        "mean": fin.mean(),
        "std": fin.std(),
        "abs_mean": np.abs(fin).mean(),
        "p50": np.quantile(np.abs(fin), 0.5),
        "p99": np.quantile(np.abs(fin), 0.99),
    }.items():
        assert got[name] == pytest.approx(value, rel=1e-5), name
    map_std = np.nanstd(np.where(np.isfinite(a), a, np.nan), axis=(2, 3))
    assert got["spatial_std"] == pytest.approx(map_std.mean(), rel=1e-5)
    assert got["min_channel_std"] == pytest.approx(map_std.mean(axis=0).min(), rel=1e-5)
    assert math.isfinite(got["low_freq_ratio"])


def test_all_nonfinite_gives_nan_and_count():
    got = as_dict(activation_stats(torch.full((1, 2, 4, 4), float("nan"))))
    assert got["nonfinite"] == 32
    assert all(math.isnan(v) for k, v in got.items() if k != "nonfinite")


def test_lower_rank_tensors_have_no_spatial_stats():
    """(BATCH, C), (BATCH,) and scalars: the spatial statistics are absent (not computed), never NaN."""
    t = torch.tensor([[1.0, -2.0, 3.0], [0.0, 5.0, -6.0]])
    out = activation_stats(t)
    assert out.shape == (len(GLOBAL_STATS),) and activation_stat_names(2) == GLOBAL_STATS
    got = dict(zip(GLOBAL_STATS, out.tolist()))
    assert got["mean"] == pytest.approx(1 / 6) and got["abs_mean"] == pytest.approx(17 / 6)
    assert got["std"] == pytest.approx(np.std([1, -2, 3, 0, 5, -6]))
    assert got["p50"] == pytest.approx(np.quantile([1, 2, 3, 0, 5, 6], 0.5)) and got["nonfinite"] == 0
    assert got["frac_near_zero"] == pytest.approx(1 / 6)
    assert not set(SPATIAL_STATS) & set(GLOBAL_STATS) and set(SPATIAL_STATS) | set(GLOBAL_STATS) == set(
        ACTIVATION_STATS
    )
    for x in (torch.randn(5), torch.tensor(2.0)):
        assert activation_stats(x).shape == (len(GLOBAL_STATS),)
    assert (
        set(absent_stats((4, 3))) == set(SPATIAL_STATS) and "(BATCH, C) (4, 3)" in absent_stats((4, 3))["spatial_std"]
    )
    assert set(absent_stats(())) == set(SPATIAL_STATS)
    assert absent_stats((4, 3, 7)) == {} and activation_stat_names(3) == ACTIVATION_STATS
    assert stat_set(2) == "global" and stat_set(5) == "stats" and STAT_SETS[stat_set(4)] == ACTIVATION_STATS


def numpy_stats_nd(a: np.ndarray, near_zero: float = 1e-6) -> dict[str, float]:
    """Independent reference for finite (BATCH, C, *S) arrays of any spatial rank (complex by magnitude)."""
    a = np.abs(a).astype(np.float64) if np.iscomplexobj(a) else a.astype(np.float64)
    mag, space = np.abs(a), tuple(range(2, a.ndim))
    map_std = a.std(axis=space)  # (BATCH, C), ddof=0
    power = np.abs(np.fft.rfftn(mag, axes=space, norm="ortho")) ** 2
    corner = (slice(None),) * 2 + tuple(slice(0, math.ceil(power.shape[d] / 8)) for d in space)
    return {
        "mean": a.mean(),
        "std": a.std(),
        "abs_mean": mag.mean(),
        "p50": np.quantile(mag, 0.5),
        "p95": np.quantile(mag, 0.95),
        "p99": np.quantile(mag, 0.99),
        "frac_near_zero": (mag <= near_zero).mean(),
        "spatial_std": map_std.mean(),
        "min_channel_std": map_std.mean(axis=0).min(),
        "low_freq_ratio": power[corner].mean() / power.mean(),
        "nonfinite": 0.0,
    }


@pytest.mark.parametrize("shape", [(3, 4, 50), (2, 3, 16, 10), (2, 2, 6, 8, 10), (2, 3, 1)], ids=str)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.complex64], ids=str)
def test_every_spatial_rank_matches_numpy(shape, dtype):
    g = torch.Generator().manual_seed(len(shape))
    t = torch.randn(*shape, generator=g, dtype=dtype)
    t.reshape(-1)[:3] = 0  # exact zeros for frac_near_zero
    got = activation_stats(t)
    assert got.shape == (len(ACTIVATION_STATS),)
    assert_stats(got, numpy_stats_nd(t.numpy()), rtol=1e-4)
    if dtype.is_complex:  # every statistic of a complex activation is that of its magnitude
        torch.testing.assert_close(got, activation_stats(t.abs()))


def test_numpy_reference_of_any_rank_agrees_with_the_2d_one():
    a = np.random.default_rng(0).normal(size=(2, 3, 9, 12))
    for name, value in numpy_stats(a).items():
        assert numpy_stats_nd(a)[name] == pytest.approx(value, rel=1e-12), name


def test_constant_field_low_freq_ratio_per_rank():
    """A constant field puts all power at DC: ratio = half-spectrum size / corner size, per rank."""
    one_d = as_dict(activation_stats(torch.full((2, 3, 64), 1.5)))  # N_r = 33, corner ceil(33/8) = 5
    assert one_d["low_freq_ratio"] == pytest.approx(33 / 5)
    three_d = as_dict(activation_stats(torch.full((1, 2, 8, 12, 10), -2.0)))  # (8, 12, 6), corner (1, 2, 1)
    assert three_d["low_freq_ratio"] == pytest.approx(8 * 12 * 6 / 2)
    for got in (one_d, three_d):
        assert got["spatial_std"] == 0 and got["min_channel_std"] == 0


def test_quantiles_on_large_tensor_use_deterministic_subsample(monkeypatch):
    monkeypatch.setattr(stats, "QUANTILE_MAX_NUMEL", 1000)
    t = torch.rand(4, 1, 50, 50, generator=torch.Generator().manual_seed(4))  # 10 000 elements
    first, second = activation_stats(t), activation_stats(t)
    torch.testing.assert_close(first, second, rtol=0, atol=0)
    sub = np.abs(t.numpy().reshape(-1)[::11])  # stride ceil(10000/1000) | 1
    for name, q in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99)):
        assert first[IDX[name]].item() == pytest.approx(np.quantile(sub, q), rel=1e-5)


def test_stats_do_not_track_gradients_or_keep_input():
    x = torch.randn(1, 2, 4, 4, requires_grad=True)
    out = activation_stats(x * 2)
    assert not out.requires_grad and out.grad_fn is None


def test_branch_ratio_known_values():
    s = torch.full((1, 2, 4, 4), 3.0)
    loc = torch.full((1, 2, 4, 4), -1.5)
    assert branch_ratio(s, loc).item() == pytest.approx(2.0)
    z = torch.complex(torch.full((1, 1, 2, 2), 3.0), torch.full((1, 1, 2, 2), 4.0))
    ratio = branch_ratio(z, torch.ones(1, 1, 2, 2))
    assert ratio.ndim == 0 and ratio.item() == pytest.approx(5.0)


# --------------------------------------------------------------------------- parameters


def tiny_mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))


def test_grad_norms_linear_by_module_and_tensor():
    model = tiny_mlp()
    model(torch.randn(5, 3)).square().sum().backward()
    names, norms = grad_norms(model)
    assert names == ["0", "2"] and norms.dtype == torch.float32
    for i, name in enumerate(names):
        layer = model[int(name)]
        manual = math.sqrt(
            (layer.weight.grad.numpy().astype(np.float64) ** 2).sum()
            + (layer.bias.grad.numpy().astype(np.float64) ** 2).sum()
        )
        assert norms[i].item() == pytest.approx(manual, rel=1e-5)
    tnames, tnorms = grad_norms(model, by="tensor")
    assert tnames == ["0.weight", "0.bias", "2.weight", "2.bias"]
    assert tnorms[1].item() == pytest.approx(np.linalg.norm(model[0].bias.grad.numpy()), rel=1e-5)


def test_grad_norms_nan_where_all_grads_none_and_partial_none_ignored():
    model = tiny_mlp()
    model(torch.randn(5, 3)).sum().backward()
    model[2].zero_grad(set_to_none=True)
    model[0].bias.grad = None
    names, norms = grad_norms(model)
    assert math.isnan(norms[1].item())
    assert norms[0].item() == pytest.approx(np.linalg.norm(model[0].weight.grad.numpy()), rel=1e-5)
    assert math.isnan(grad_norms(model, by="tensor")[1][1].item())


def test_grad_and_weight_norms_on_hybrid_uno_with_complex_weights():
    torch.manual_seed(0)
    model = HybridUNO(width=4, blocks=2, modes=4, size=16, block="stable")
    model(torch.randn(2, 1, 16, 16)).abs().mean().backward()
    names, norms = grad_norms(model)
    assert "encoder.0.spectral" in names and "encoder.0" in names and "encoder.0.spectral.weights" not in names
    weights = list(model.encoder[0].spectral.weights)
    assert len(weights) == 2 and all(w.is_complex() for w in weights)
    manual = math.sqrt(sum((np.abs(w.grad.numpy().astype(np.complex128)) ** 2).sum() for w in weights))
    assert norms[names.index("encoder.0.spectral")].item() == pytest.approx(manual, rel=1e-5)
    gamma_grad = model.encoder[0].layerscale.grad.numpy()  # the block's only direct parameter
    assert norms[names.index("encoder.0")].item() == pytest.approx(np.linalg.norm(gamma_grad), rel=1e-5)
    wnames, wn = weight_norms(model)
    assert wnames == names
    manual_w = math.sqrt(sum((np.abs(w.detach().numpy().astype(np.complex128)) ** 2).sum() for w in weights))
    assert wn[wnames.index("encoder.0.spectral")].item() == pytest.approx(manual_w, rel=1e-5)
    tnames, tn = weight_norms(model, by="tensor")
    assert tnames == [n for n, _ in model.named_parameters()]
    assert tn[tnames.index("encoder.0.spectral.weights.1")].item() == pytest.approx(
        np.linalg.norm(weights[1].detach().numpy()), rel=1e-5
    )


def test_shared_parameter_counted_once():
    lin = nn.Linear(2, 2)
    model = nn.Sequential(lin, lin)
    names, norms = weight_norms(model, by="tensor")
    assert names == ["0.weight", "0.bias"]
    assert weight_norms(model)[0] == ["0"]


def test_update_ratios_known_change():
    model = tiny_mlp()
    before = snapshot_weights(model)
    assert before[0] is not model[0].weight and torch.equal(before[0], model[0].weight)
    with torch.no_grad():
        model[0].weight += 0.5  # 12 entries change by 0.5 -> ||dW|| = sqrt(3)
    names, ratios = update_ratios(model, before)
    w, b = before[0].numpy().astype(np.float64), before[1].numpy().astype(np.float64)
    expected = math.sqrt(12 * 0.25) / math.sqrt((w**2).sum() + (b**2).sum())
    assert ratios[names.index("0")].item() == pytest.approx(expected, rel=1e-5)
    assert ratios[names.index("2")].item() == 0
    tnames, tratios = update_ratios(model, before, by="tensor")
    assert tratios[0].item() == pytest.approx(math.sqrt(3) / np.linalg.norm(w), rel=1e-5)


def test_update_ratios_rejects_mismatched_snapshot():
    model = tiny_mlp()
    with pytest.raises(ValueError, match="snapshot has 3 tensors"):
        update_ratios(model, snapshot_weights(model)[:3])
    bad = snapshot_weights(model)
    bad[0] = torch.zeros(2, 2)
    with pytest.raises(ValueError, match="0.weight"):
        update_ratios(model, bad)


def test_unknown_grouping_rejected():
    with pytest.raises(ValueError, match="valid groupings: module, tensor"):
        grad_norms(tiny_mlp(), by="layer")


def test_scale_params_stable_block_hand_set():
    model = HybridUNO(width=4, blocks=2, modes=4, size=16, block="stable")
    with torch.no_grad():
        model.encoder[0].layerscale.copy_(torch.tensor([0.1, -0.4, 0.2, 0.3]))
        model.encoder[0].norm.weight.copy_(torch.tensor([0.09, -0.05, 1.0, 2.0]))
        model.encoder[0].norm.bias.copy_(torch.tensor([1.0, 2.0, 3.0, -2.0]))
    names, values = scale_params(model)
    got = dict(zip(names, values.tolist()))
    assert got["encoder.0/layerscale_mean"] == pytest.approx(0.05)
    assert got["encoder.0/layerscale_abs_max"] == pytest.approx(0.4)
    assert got["encoder.0.norm/weight_mean"] == pytest.approx(0.76)
    assert got["encoder.0.norm/weight_abs_min"] == pytest.approx(0.05)
    assert got["encoder.0.norm/bias_mean"] == pytest.approx(1.0)
    assert got["bottleneck/layerscale_mean"] == pytest.approx(1e-3)
    blocks = ("encoder.0", "encoder.1", "bottleneck")
    assert len(names) == 5 * len(blocks)


def test_scale_params_empty_for_control_arm():
    names, values = scale_params(HybridUNO(width=4, blocks=2, modes=4, size=16))
    assert names == [] and values.shape == (0,)


# --------------------------------------------------------------------------- to_host


def test_to_host_values_shapes_and_single_transfer(count_transfers):
    calls = count_transfers()
    named = {
        "a": torch.arange(6.0).reshape(2, 3),
        "b": torch.tensor(2.5),
        "c": torch.tensor([True, False]),
        "d": torch.empty(0),
        "e": torch.tensor([7], dtype=torch.int64),
    }
    host = to_host(named)
    assert calls == {"cpu": 1, "item": 0, "tolist": 0}
    assert list(host) == list(named)
    np.testing.assert_array_equal(host["a"], np.arange(6.0).reshape(2, 3))
    assert host["b"].shape == () and float(host["b"]) == 2.5
    np.testing.assert_array_equal(host["c"], [1.0, 0.0])
    assert host["d"].shape == (0,) and host["e"].dtype == np.float64 and host["e"][0] == 7


def test_to_host_rejects_complex_and_non_tensors():
    with pytest.raises(ValueError, match="complex"):
        to_host({"z": torch.ones(2, dtype=torch.complex64)})
    with pytest.raises(TypeError, match="not a torch.Tensor"):
        to_host({"x": 1.0})
    assert to_host({}) == {}


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_stats_without_host_sync():
    model = HybridUNO(width=4, blocks=2, modes=4, size=16, block="stable").cuda()
    x = torch.randn(2, 1, 16, 16, device="cuda")
    model(x).abs().mean().backward()
    before = snapshot_weights(model)
    t = torch.randn(2, 3, 8, 8, device="cuda")
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        a = activation_stats(t)
        z = activation_stats(torch.polar(t.abs(), t))
        results = [
            a,
            z,
            grad_norms(model)[1],
            weight_norms(model)[1],
            update_ratios(model, before)[1],
            scale_params(model)[1],
            branch_ratio(t, t + 1),
        ]
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert all(r.device.type == "cuda" for r in results)
    torch.testing.assert_close(a.cpu(), activation_stats(t.cpu()), rtol=1e-4, atol=1e-5)


def test_snapshot_buffer_reuse_and_inplace_update_ratios():
    from fnodiag.diagnostics.stats import snapshot_weights, update_ratios

    lin = torch.nn.Linear(3, 2)
    snap = snapshot_weights(lin)
    with torch.no_grad():
        lin.weight.add_(1.0)
    names, fresh = update_ratios(lin, snap)
    _, inplace = update_ratios(lin, snap, inplace=True)
    torch.testing.assert_close(inplace, fresh)
    again = snapshot_weights(lin, out=snap)
    assert again is snap and all(torch.equal(a, p) for a, p in zip(again, lin.parameters()))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_stats_of_every_rank_without_host_sync():
    shapes = [(4, 3), (2, 3, 64), (2, 3, 8, 8), (2, 2, 6, 8, 10)]
    tensors = [torch.randn(*s, device="cuda") for s in shapes]
    tensors.append(torch.polar(tensors[-1].abs(), tensors[-1]))  # complex 3-D field
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        results = [activation_stats(t) for t in tensors]
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert [r.shape[0] for r in results] == [len(GLOBAL_STATS)] + [len(ACTIVATION_STATS)] * 4
    for got, t in zip(results, tensors):
        torch.testing.assert_close(got.cpu(), activation_stats(t.cpu()), rtol=1e-4, atol=1e-5, equal_nan=True)
