"""Spectral statistics: band energies, energy above the kept modes and per-mode weight magnitudes.

Known signals (sums of sinusoids at chosen frequencies) land in the bands the definition says; every
value is pinned against an independent numpy computation (full ``fftn`` in float64, bands decided in
exact rational arithmetic); the kept-mode specs are checked against what real spectral convolutions
(fnodiag's and neuraloperator's) let through.
"""

from __future__ import annotations

import math
from fractions import Fraction
from itertools import product

import numpy as np
import pytest
import torch

from fnodiag.diagnostics.spectra import (
    ABOVE_STAT,
    band_energy,
    band_stats,
    energy_above,
    kept_modes_of,
    mode_magnitudes,
    spectral_stats,
)
from fnodiag.models.spectral import SpectralConv2d


def np_band_energy(x: np.ndarray, n_bands: int = 8) -> np.ndarray:
    """Reference: full fftn power (float64), each bin's band from r^2 as an exact fraction."""
    x = np.nan_to_num(np.asarray(x), nan=0.0, posinf=0.0, neginf=0.0)
    shape = x.shape[2:]
    power = (np.abs(np.fft.fftn(x, axes=tuple(range(2, x.ndim)))) ** 2).sum(axis=(0, 1))
    out = np.zeros(n_bands)
    for idx in product(*[range(n) for n in shape]):
        k = [i if i <= (n - 1) // 2 else i - n for i, n in zip(idx, shape)]  # fftfreq * n
        r2 = sum(Fraction(2 * ki, n) ** 2 for ki, n in zip(k, shape))
        band = min(math.isqrt(math.floor(r2 * n_bands**2)), n_bands - 1)
        out[band] += power[idx]
    return out / out.sum() if out.sum() > 0 else out


def wave(shape, freqs, amplitude=1.0, complex_=False):
    """``amplitude * cos`` (or ``exp(i .)``) of integer frequency vector ``freqs`` on a grid of ``shape``."""
    grids = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    phase = 2 * np.pi * sum(k * g / n for k, g, n in zip(freqs, grids, shape))
    return amplitude * (np.exp(1j * phase) if complex_ else np.cos(phase))


def as_batch(signal, batch=2, channels=3):
    a = np.broadcast_to(signal, (batch, channels, *np.shape(signal))).copy()
    return torch.from_numpy(a.astype(np.complex64 if np.iscomplexobj(a) else np.float32))


# -- band_energy -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shape", "waves", "expected"),
    [
        ((64,), [((5,), 1.0), ((20,), 2.0)], {1: 0.2, 5: 0.8}),  # r = 5/32, 20/32
        ((32, 32), [((3, 4), 1.0), ((0, 14), 1.0)], {2: 0.5, 7: 0.5}),  # r = 5/16, 14/16
        ((32, 24), [((0, 0), 0.0), ((2, 3), 1.0)], {2: 1.0}),  # r = sqrt((2/16)^2 + (3/12)^2) = 0.28
        ((16, 16, 16), [((1, 1, 1), 1.0), ((7, 7, 7), 1.0)], {1: 0.5, 7: 0.5}),  # sqrt(3)/8; corner r > 1
    ],
)
@pytest.mark.parametrize("complex_", [False, True])
def test_sinusoids_land_in_their_bands(shape, waves, expected, complex_):
    x = sum(wave(shape, f, a, complex_) for f, a in waves)
    got = band_energy(as_batch(x)).numpy()
    want = np.zeros(8)
    for band, share in expected.items():
        want[band] = share
    assert got.dtype == np.float32 and got.shape == (8,)
    np.testing.assert_allclose(got, want, atol=1e-5)
    np.testing.assert_allclose(got, np_band_energy(as_batch(x).numpy()), atol=1e-5)


def test_a_constant_is_band_zero_and_zeros_give_zeros():
    np.testing.assert_allclose(band_energy(torch.full((2, 3, 7, 9), 0.4)).numpy(), np.eye(8)[0], atol=1e-6)
    z = band_energy(torch.zeros(1, 2, 8, 8))
    assert torch.equal(z, torch.zeros(8)) and not torch.isnan(z).any()
    assert torch.equal(energy_above(torch.zeros(1, 2, 8, 8), 2), torch.tensor(0.0))


@pytest.mark.parametrize("shape", [(2, 3, 10), (2, 3, 10, 10), (2, 3, 16, 16), (1, 2, 9, 12), (1, 2, 6, 8, 5)])
@pytest.mark.parametrize("n_bands", [8, 5])
def test_random_activations_match_numpy_and_rfft_equals_fft(shape, n_bands):
    rng = np.random.default_rng(sum(shape))
    real = rng.standard_normal(shape)
    got = band_energy(torch.from_numpy(real), n_bands).numpy()  # float64 kept, rfftn
    np.testing.assert_allclose(got, np_band_energy(real, n_bands), rtol=1e-5, atol=1e-7)
    as_complex = band_energy(torch.from_numpy(real.astype(np.complex128)), n_bands).numpy()  # fftn
    np.testing.assert_allclose(got, as_complex, rtol=1e-5, atol=1e-7)
    cplx = real + 1j * rng.standard_normal(shape)
    np.testing.assert_allclose(
        band_energy(torch.from_numpy(cplx), n_bands).numpy(), np_band_energy(cplx, n_bands), rtol=1e-5, atol=1e-7
    )


def test_non_finite_elements_count_as_zero_and_bad_input_is_refused():
    x = torch.ones(1, 1, 8, 8)
    x[0, 0, 0, 0] = float("nan")
    want = np_band_energy(np.nan_to_num(x.numpy()))
    np.testing.assert_allclose(band_energy(x).numpy(), want, atol=1e-6)
    with pytest.raises(ValueError, match="spatial axes"):
        band_energy(torch.ones(4, 3))
    with pytest.raises(ValueError, match="n_bands"):
        band_energy(torch.ones(1, 1, 4), 0)


# -- energy_above ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("freqs", "above"),
    [
        ((2, 3), 0.0),  # row 2 in [-4, 3], column 3 in [0, 3]
        ((-4, 2), 0.0),  # row -4 is kept ...
        ((4, 2), 1.0),  # ... row +4 is not (its mirror (-4, -2) is not on the half-spectrum either)
        ((1, 4), 1.0),  # column 4 > m - 1
        ((5, 1), 1.0),
    ],
)
def test_energy_above_of_real_2d_waves(freqs, above):
    x = as_batch(wave((32, 32), freqs))
    assert energy_above(x, 4).item() == pytest.approx(above, abs=1e-6)


def test_energy_above_mixes_and_follows_each_axis_convention():
    x = as_batch(wave((32, 32), (1, 1), 1.0) + wave((32, 32), (9, 2), 3.0))
    assert energy_above(x, 4).item() == pytest.approx(0.9, abs=1e-5)  # 9 / (1 + 9)
    assert energy_above(x, (10, 4)).item() == pytest.approx(0.0, abs=1e-6)
    assert energy_above(x, ((0, 8), 3)).item() == pytest.approx(0.9, abs=1e-5)  # row 9 outside [0, 8]
    assert energy_above(x, (slice(0, 9), 3)).item() == pytest.approx(0.9, abs=1e-5)  # rows 0..8 by index
    assert energy_above(x, (slice(0, 10), 3)).item() == pytest.approx(0.0, abs=1e-6)
    assert energy_above(x, (slice(23, 32), 3)).item() == pytest.approx(1.0, abs=1e-6)  # rows k = -9..-1
    line = as_batch(wave((64,), (6,)))
    assert energy_above(line, 6).item() == pytest.approx(1.0) and energy_above(line, 7).item() == pytest.approx(0.0)
    cube = as_batch(wave((8, 8, 8), (1, -2, 3)))
    assert energy_above(cube, 3).item() == pytest.approx(1.0, abs=1e-6)  # column 3 > 2
    assert energy_above(cube, (2, 3, 4)).item() == pytest.approx(0.0, abs=1e-6)


def test_energy_above_of_complex_input_uses_full_fft_axes():
    x = as_batch(wave((32,), (-4,), complex_=True))
    assert energy_above(x, 4).item() == pytest.approx(0.0, abs=1e-6)  # -4 in [-4, 3]
    x = as_batch(wave((32,), (4,), complex_=True))
    assert energy_above(x, 4).item() == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("complex_", [False, True])
def test_energy_above_matches_numpy(complex_):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 3, 12, 10)) + (1j * rng.standard_normal((2, 3, 12, 10)) if complex_ else 0)
    m = (3, 4)
    power = (np.abs(np.fft.fftn(x, axes=(2, 3))) ** 2).sum(axis=(0, 1))
    k0, k1 = np.meshgrid(np.fft.fftfreq(12, 1 / 12).round(), np.fft.fftfreq(10, 1 / 10).round(), indexing="ij")
    if complex_:
        kept = (k0 >= -3) & (k0 <= 2) & (k1 >= -4) & (k1 <= 3)
    else:  # rfft axis: half-spectrum columns 0..3; columns 1..3 stand for their mirrors (-k0, -k1) too
        rows = (k0 >= -3) & (k0 <= 2)
        mirror_rows = (-k0 >= -3) & (-k0 <= 2)
        kept = (rows & (k1 >= 0) & (k1 <= 3)) | (mirror_rows & (k1 >= -3) & (k1 <= -1))
    want = 1 - power[kept].sum() / power.sum()
    assert energy_above(torch.from_numpy(x), m).item() == pytest.approx(want, rel=1e-5)


def _identity_weights(conv_weights):
    with torch.no_grad():
        for w in conv_weights:
            w.zero_()
            for c in range(min(w.shape[0], w.shape[1])):
                w[c, c] = 1.0


def _no_column_zero(shape, seed):
    """Real signal with energy off the rfft's column 0 and Nyquist column (where irfft folds mirrors)."""
    spec = np.fft.rfft2(np.random.default_rng(seed).standard_normal(shape))
    spec[..., 0] = 0
    spec[..., -1] = 0
    return torch.from_numpy(np.fft.irfft2(spec, s=shape[-2:]).astype(np.float32))


@pytest.mark.parametrize(("layout", "modes"), [("symmetric", 4), ("reference", 4), ("reference", 12)])
def test_kept_modes_of_fnodiag_conv_is_what_it_lets_through(layout, modes):
    conv = SpectralConv2d(2, 2, modes, size=16, layout=layout)  # reference, 12: rows 0..11 = k 0..7, -8..-5
    _identity_weights(conv.weights)
    x = _no_column_zero((1, 2, 16, 16), 0)
    with torch.no_grad():
        passed = conv(x).square().sum() / x.square().sum()
    assert 0.05 < passed.item() < 0.95
    assert 1 - energy_above(x, kept_modes_of(conv)).item() == pytest.approx(passed.item(), rel=1e-4)


@pytest.mark.parametrize("n_modes", [(8, 6), (7, 5)])
def test_kept_modes_of_neuraloperator_conv_is_what_it_lets_through(n_modes):
    SpectralConv = pytest.importorskip("neuralop.layers.spectral_convolution").SpectralConv
    conv = SpectralConv(2, 2, n_modes)
    with torch.no_grad():
        conv.weight.tensor.zero_()
        for c in range(2):
            conv.weight.tensor[c, c] = 1.0
        conv.bias.zero_()
    x = _no_column_zero((1, 2, 16, 16), 1)
    with torch.no_grad():
        passed = conv(x).square().sum() / x.square().sum()
    assert 0.05 < passed.item() < 0.95
    assert 1 - energy_above(x, kept_modes_of(conv)).item() == pytest.approx(passed.item(), rel=1e-4)
    assert kept_modes_of(torch.nn.Conv2d(1, 1, 1)) is None


# -- mode magnitudes -------------------------------------------------------------------------------------


def np_shell_means(mag: np.ndarray, freqs, max_bands: int) -> np.ndarray:
    k = np.meshgrid(*[np.asarray(f) for f in freqs], indexing="ij")
    shell = np.array([math.isqrt(int(v)) for v in sum(g**2 for g in k).reshape(-1)])
    n_shells = shell.max() + 1
    nb = min(n_shells, max_bands)
    band = shell * nb // n_shells
    return np.array([mag.reshape(-1)[band == b].mean() for b in range(nb)])


def test_mode_magnitudes_of_a_known_fnodiag_weight():
    conv = SpectralConv2d(2, 3, 4, size=16)  # weights (2, 3, 4, 4): rows 0..3, then rows -4..-1
    rows = {0: np.arange(4), 1: np.arange(-4, 0)}
    with torch.no_grad():
        for b, w in enumerate(conv.weights):
            k0, k1 = np.meshgrid(rows[b], np.arange(4), indexing="ij")
            value = torch.from_numpy((1 + 10 * k0 + k1).astype(np.float32))
            w.copy_(value * torch.tensor(1j).to(torch.complex64) * torch.tensor([1.0, 3.0])[:, None, None, None])
    k0, k1 = np.meshgrid(np.arange(-4, 4), np.arange(4), indexing="ij")
    mag = np.abs(1 + 10 * k0 + k1) * 2.0  # mean over in-channels of 1x and 3x
    for max_bands in (8, 3):
        want = np_shell_means(mag, [np.arange(-4, 4), np.arange(4)], max_bands)
        got = mode_magnitudes(conv, max_bands=max_bands)
        assert got.dtype == torch.float32 and got.shape == (min(6, max_bands),)  # shells 0..5 (|(-4, 3)| = 5)
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-6)
        np.testing.assert_allclose(mode_magnitudes(conv.weights, max_bands=max_bands).numpy(), want, rtol=1e-6)
    bare = torch.ones(2, 2, 3) * torch.arange(3.0)  # a bare (C_in, C_out, M) tensor: frequencies 0..2
    np.testing.assert_allclose(mode_magnitudes(bare).numpy(), [0.0, 1.0, 2.0])


@pytest.mark.parametrize("factorization", [None, "cp"])
def test_mode_magnitudes_of_neuraloperator_weights(factorization):
    SpectralConv = pytest.importorskip("neuralop.layers.spectral_convolution").SpectralConv
    torch.manual_seed(0)
    kwargs = {"factorization": factorization, "rank": 0.5} if factorization else {}
    conv = SpectralConv(3, 2, (6, 8), **kwargs)
    dense = conv.weight.to_tensor().detach().numpy()  # (3, 2, 6, 5): centred rows -3..2, columns 0..4
    want = np_shell_means(np.abs(dense).mean(axis=(0, 1)), [np.arange(-3, 3), np.arange(5)], 8)
    np.testing.assert_allclose(mode_magnitudes(conv).numpy(), want, rtol=1e-5)


def test_nothing_leaves_the_device(count_transfers):
    x, conv = torch.randn(2, 3, 16, 16), SpectralConv2d(3, 3, 4, size=16)
    band_energy(x), energy_above(x, 4), mode_magnitudes(conv)  # warm the caches
    calls = count_transfers()
    stats = spectral_stats(x, kept_modes_of(conv))
    mode_magnitudes(conv)
    assert calls == {"cpu": 0, "item": 0, "tolist": 0}
    assert list(stats) == [*band_stats(), ABOVE_STAT]
