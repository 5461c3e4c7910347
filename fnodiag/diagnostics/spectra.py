"""Spectral statistics: where an activation's energy sits across Fourier modes, and what a spectral layer keeps.

Pure torch functions of channel-first tensors of any spatial rank, ``(BATCH, C, N)``, ``(BATCH, C, H, W)``
or ``(BATCH, C, D, H, W)``, real or complex. Like :mod:`fnodiag.diagnostics.stats`, every function
returns tensors on the input's device and never synchronises with the host: a caller adds them to the
capture it brings over in one :func:`~fnodiag.diagnostics.stats.to_host` transfer.

Frequencies. An axis of length ``n`` has the integer frequencies ``k`` of ``fftfreq(n) * n``
(``0, 1, ..., -1``); its Nyquist frequency is ``n / 2``. An activation's power spectrum is ``|FFT|^2``
over the spatial axes, summed over batch and channels. Real input is transformed with ``rfftn`` and
each half-spectrum bin that stands for itself and its mirror ``-k`` (last-axis bins ``0 < k < n/2``)
counts twice, so the rfft and the full fft give the same energies. Non-finite elements enter as 0.

Bands (:func:`band_energy`). A bin's *normalised radial frequency* is
``r = sqrt(sum_a (k_a / (n_a / 2))^2)``: each axis measured against its own Nyquist frequency, so
``r`` runs from 0 (the mean) to 1 on an axis and to ``sqrt(d)`` in the corners of a ``d``-D grid.
Band ``b`` of ``n_bands`` holds ``b / n_bands <= r < (b + 1) / n_bands``; the corners ``r >= 1``
join the last band. (Boundaries are decided in float64 with a relative tolerance of 1e-9, so a bin
exactly on a boundary falls in the upper band.)

Kept modes (:func:`energy_above`). A spectral convolution that keeps ``m`` modes on an axis keeps
``-m <= k <= m - 1`` on a full-fft axis (rows ``[:m]`` and ``[-m:]``, the standard FNO layout and
fnodiag's ``"symmetric"`` one) and ``0 <= k <= m - 1`` on the rfft axis (the last axis of a real
input, whose mirror ``-k`` follows). An explicit ``(lo, hi)`` pair keeps ``lo <= k <= hi``, a ``slice``
those indices of the axis's spectrum (:func:`kept_modes_of` gives the right spec for fnodiag's and
neuraloperator's layers).

Statistic names (a contract with the run store and :mod:`fnodiag.diagnostics.findings`):
``band_stats(n)`` = ``("spectral_band_0", ...)``, :data:`ABOVE_STAT` = ``"spectral_above"``,
``mode_stats(n)`` = ``("mode_band_0", ...)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np
import torch
from torch import Tensor, nn

from fnodiag.models.spectral import SpectralConv2d

N_BANDS = 8
ABOVE_STAT = "spectral_above"
_TOL = 1e-9


def band_stats(n_bands: int = N_BANDS) -> tuple[str, ...]:
    """Store names of the :func:`band_energy` entries: ``("spectral_band_0", ..., "spectral_band_<n-1>")``."""
    return tuple(f"spectral_band_{b}" for b in range(n_bands))


def mode_stats(n_bands: int) -> tuple[str, ...]:
    """Store names of the :func:`mode_magnitudes` entries: ``("mode_band_0", ...)``."""
    return tuple(f"mode_band_{b}" for b in range(n_bands))


# --------------------------------------------------------------------------- spectra


def _freqs(n: int, half: bool) -> np.ndarray:
    """Integer frequencies of an axis of length ``n``: rfft bins ``0..n//2`` or fft bins ``fftfreq(n) * n``."""
    return np.arange(n // 2 + 1) if half else np.rint(np.fft.fftfreq(n) * n).astype(np.int64)


def _grid(shape: tuple[int, ...], half: bool) -> list[np.ndarray]:
    """Broadcastable integer frequency grids of a (half-)spectrum of a ``shape`` signal."""
    axes = [_freqs(n, half and a == len(shape) - 1) for a, n in enumerate(shape)]
    return np.meshgrid(*axes, indexing="ij", sparse=True)


def _mirror_weight(shape: tuple[int, ...], half: bool) -> np.ndarray:
    """How many full-spectrum bins each (half-)spectrum bin stands for: 2 for rfft bins ``0 < k < n/2``."""
    k = _grid(shape, half)
    w = np.ones(np.broadcast_shapes(*(g.shape for g in k)))
    if half:
        n = shape[-1]
        w = w * np.where((k[-1] > 0) & (2 * k[-1] < n), 2.0, 1.0)
    return w.reshape(-1)


@lru_cache(maxsize=16)
def _band_matrix(shape: tuple[int, ...], half: bool, n_bands: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    """``(BIN, BAND)`` weights: bin -> its band, times its mirror weight (built once per grid, then cached).

    ``4 * BIN * BAND`` bytes on the device for float32 (64 x 64 maps: 67 kB; a 128^3 grid: 34 MB).
    """
    k = _grid(shape, half)
    r = np.sqrt(sum((g / (n / 2.0)) ** 2 for g, n in zip(k, shape)))
    band = np.minimum(np.floor(r.reshape(-1) * n_bands * (1 + _TOL)), n_bands - 1).astype(np.int64)
    m = np.zeros((band.size, n_bands))
    m[np.arange(band.size), band] = _mirror_weight(shape, half)
    return torch.from_numpy(m).to(device=device, dtype=dtype)


def _axis_spec(m):
    """One axis's kept-mode spec in hashable form: ``int``, ``("freq", lo, hi)`` or ``("index", start, stop)``."""
    if isinstance(m, slice):
        if m.step not in (None, 1):
            raise ValueError(f"a kept-index slice must have step 1, got {m}")
        return ("index", m.start or 0, m.stop)
    if isinstance(m, (tuple, list)):
        lo, hi = (int(v) for v in m)
        return ("freq", lo, hi)
    if int(m) < 0:
        raise ValueError(f"modes must be >= 0 per axis, got {m}")
    return int(m)


def _axis_mask(n: int, rfft: bool, spec) -> np.ndarray:
    """Kept bins of one axis of length ``n`` (its rfft half when ``rfft``) under an :func:`_axis_spec`."""
    k = _freqs(n, rfft)
    if isinstance(spec, tuple) and spec[0] == "index":
        keep = np.zeros(len(k), dtype=bool)
        keep[slice(spec[1], spec[2])] = True
        return keep
    lo, hi = spec[1:] if isinstance(spec, tuple) else ((0, spec - 1) if rfft else (-spec, spec - 1))
    return (k >= lo) & (k <= hi)


@lru_cache(maxsize=16)
def _kept_weights(shape: tuple[int, ...], half: bool, spec: tuple, device: torch.device, dtype: torch.dtype):
    """``(BIN, 2)`` weights: column 0 every bin (mirror-weighted), column 1 only the kept bins."""
    keep = np.ones((1,) * len(shape), dtype=bool)
    for a, (n, m) in enumerate(zip(shape, spec)):
        mask = _axis_mask(n, half and a == len(shape) - 1, m)
        keep = keep & mask.reshape([-1 if b == a else 1 for b in range(len(shape))])
    w = _mirror_weight(shape, half)
    return torch.from_numpy(np.stack([w, w * keep.reshape(-1)], axis=1)).to(device=device, dtype=dtype)


def _power(x: Tensor, name: str) -> tuple[Tensor, tuple[int, ...], bool]:
    """``(BIN,)`` power of ``x`` summed over batch and channels, its spatial shape, and whether rfft was used."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} expects a torch.Tensor, got {type(x).__name__}")
    if x.ndim < 3:
        raise ValueError(
            f"{name} needs a channel-first activation with spatial axes (BATCH, C, N...), got shape {tuple(x.shape)}"
        )
    a = x.detach()
    if not (a.is_complex() or a.dtype == torch.float64):
        a = a.to(torch.complex64 if a.is_complex() else torch.float32)
    a = torch.where(torch.isfinite(a), a, torch.zeros((), dtype=a.dtype, device=a.device))
    dims = tuple(range(2, a.ndim))
    half = not a.is_complex()
    spec = torch.fft.rfftn(a, dim=dims) if half else torch.fft.fftn(a, dim=dims)
    power = spec.real.square() + spec.imag.square()
    return power.sum(dim=(0, 1)).reshape(-1), tuple(a.shape[2:]), half


def band_energy(x: Tensor, n_bands: int = N_BANDS) -> Tensor:
    """Share of an activation's energy in each radial frequency band (see the module docstring).

    Parameters
    ----------
    x : torch.Tensor
        ``(BATCH, C, *SPATIAL)`` with 1 to 3 (or more) spatial axes, real or complex; not modified.
    n_bands : int
        Number of bands ``B``; band ``b`` holds ``b / B <= r < (b + 1) / B``, the corners ``r >= 1``
        the last band.

    Returns
    -------
    torch.Tensor
        ``(B,)`` float32 on ``x.device``, summing to 1; all zeros for an all-zero activation. A
        constant activation has everything in band 0. No autograd, no host synchronisation.
    """
    if int(n_bands) < 1:
        raise ValueError(f"n_bands must be >= 1, got {n_bands}")
    with torch.no_grad():
        power, shape, half = _power(x, "band_energy")
        bands = power @ _band_matrix(shape, half, int(n_bands), power.device, power.dtype)
        total = bands.sum()
        return (bands / torch.where(total > 0, total, torch.ones_like(total))).to(torch.float32)


def energy_above(x: Tensor, modes) -> Tensor:
    """Share of an activation's energy in the frequencies a spectral convolution discards.

    Parameters
    ----------
    x : torch.Tensor
        ``(BATCH, C, *SPATIAL)`` real or complex: the input of the spectral convolution.
    modes : int or sequence
        Kept modes per spatial axis (one int for every axis): ``m`` keeps ``-m <= k <= m - 1`` on a
        full-fft axis and ``0 <= k <= m - 1`` on the rfft axis (the last axis of real input); a
        ``(lo, hi)`` pair keeps the frequencies ``lo <= k <= hi``; a ``slice`` keeps those indices of the
        axis's (r)fft output, as a layer slicing its spectrum does. ``m`` at least half the axis keeps all of it.

    Returns
    -------
    torch.Tensor
        0-d float32 on ``x.device`` in ``[0, 1]``: 1 - kept energy / total energy; 0 for an
        all-zero activation. No autograd, no host synchronisation.
    """
    with torch.no_grad():
        power, shape, half = _power(x, "energy_above")
        spec = tuple(modes) if isinstance(modes, Sequence) and not isinstance(modes, str) else (modes,) * len(shape)
        if len(spec) != len(shape):
            raise ValueError(f"energy_above: {len(spec)} mode counts for {len(shape)} spatial axes {shape}")
        spec = tuple(_axis_spec(m) for m in spec)
        total, kept = power @ _kept_weights(shape, half, spec, power.device, power.dtype)
        above = torch.where(total > 0, (total - kept) / torch.where(total > 0, total, 1.0), 0.0)
        return above.clamp(0.0, 1.0).to(torch.float32)


# --------------------------------------------------------------------------- spectral weights


def _is_neuralop_conv(module: nn.Module) -> bool:
    """Duck type of neuraloperator's ``SpectralConv`` (not imported: an optional package)."""
    return hasattr(module, "n_modes") and hasattr(module, "weight") and hasattr(module, "complex_data")


def _centred(n: int) -> list[int]:
    """Frequencies of a centred (fftshifted) mode axis of ``n`` entries: ``-(n // 2) .. n - n // 2 - 1``."""
    return list(range(-(n // 2), n - n // 2))


def kept_modes_of(module: nn.Module):
    """The :func:`energy_above` ``modes`` spec of a spectral convolution, or None for any other module.

    fnodiag's :class:`~fnodiag.models.spectral.SpectralConv2d`: its ``modes_kept`` ``(m_h, m_w)`` in the
    symmetric layout; ``(slice(0, m), m)`` in the reference layout (the first ``m`` rows of the spectrum,
    which hold negative frequencies only on maps smaller than ``2 m``). neuraloperator's
    ``SpectralConv``: each full-fft axis of ``K`` kept modes keeps its centred ``(-(K // 2), K - K // 2 - 1)``,
    the rfft axis of real data its first ``K`` (``n_modes[-1]`` as stored, already ``n // 2 + 1``).
    """
    if isinstance(module, SpectralConv2d):
        if module.layout == "reference":
            return (slice(0, module.modes), module.modes)
        return tuple(module.modes_kept)
    if _is_neuralop_conv(module):
        n_modes = [int(k) for k in module.n_modes]
        spec: list = [(_centred(k)[0], _centred(k)[-1]) for k in n_modes]
        if not module.complex_data:
            spec[-1] = n_modes[-1]
        return tuple(spec)
    return None


def spectral_weight(module_or_weight) -> tuple[Tensor, list[list[int]], int]:
    """A spectral-convolution weight as one dense tensor with the integer frequency of each mode index.

    Parameters
    ----------
    module_or_weight : nn.Module, nn.ParameterList, list, tensor or factorized tensor
        fnodiag's :class:`SpectralConv2d` (or its ``weights``: one block = rows ``0..m-1``; two blocks =
        the symmetric layout's non-negative then negative rows), neuraloperator's ``SpectralConv``
        (dense or factorized weight, ``weight.to_tensor()``; fftshifted axes centred, the rfft axis of
        real data ``0..K-1``), or a bare ``(C_in, C_out, *MODES)`` tensor (frequencies ``0..M-1``).

    Returns
    -------
    weight : torch.Tensor
        ``(C_in, C_out, *MODES)`` (``(C, *MODES)`` when separable), detached.
    freqs : list of list of int
        Frequency of each index of each mode axis.
    channel_axes : int
        Leading channel axes (2, or 1 for a separable neuraloperator weight).
    """
    obj = module_or_weight
    if isinstance(obj, SpectralConv2d):
        obj = obj.weights
    if isinstance(obj, nn.Module) and _is_neuralop_conv(obj):
        w = obj.weight.to_tensor() if hasattr(obj.weight, "to_tensor") else obj.weight
        w = w.detach()
        nch = 1 if getattr(obj, "separable", False) else 2
        freqs = [_centred(n) for n in w.shape[nch:]]
        if not obj.complex_data:
            freqs[-1] = list(range(w.shape[-1]))
        return w, freqs, nch
    if isinstance(obj, (nn.ParameterList, list, tuple)):
        blocks = [b.detach() for b in obj]
        if len(blocks) == 2:  # symmetric layout: rows 0..m-1, then rows -m..-1
            m = blocks[0].shape[2]
            w = torch.cat([blocks[1], blocks[0]], dim=2)
            return w, [list(range(-m, m)), *[list(range(n)) for n in w.shape[3:]]], 2
        if len(blocks) != 1:
            raise ValueError(f"spectral weights: expected 1 or 2 weight blocks, got {len(blocks)}")
        obj = blocks[0]
    w = obj.to_tensor() if hasattr(obj, "to_tensor") else obj
    if not isinstance(w, Tensor) or w.ndim < 3:
        raise TypeError(
            "mode_magnitudes expects a spectral convolution, its weights or a (C_in, C_out, *MODES) tensor, "
            f"got {type(module_or_weight).__name__}"
        )
    w = w.detach()
    return w, [list(range(n)) for n in w.shape[2:]], 2


@lru_cache(maxsize=64)
def _shell_matrix(freqs: tuple[tuple[int, ...], ...], max_bands: int, device: torch.device) -> Tensor:
    """``(MODE, BAND)`` 0/1 matrix: mode -> its band of integer radial shells."""
    k = np.meshgrid(*[np.asarray(f, dtype=np.float64) for f in freqs], indexing="ij")
    shell = np.floor(np.sqrt(sum(g**2 for g in k)) * (1 + _TOL)).astype(np.int64).reshape(-1)
    n_shells = int(shell.max()) + 1
    n_bands = min(n_shells, max_bands)
    band = shell * n_bands // n_shells
    m = np.zeros((shell.size, n_bands))
    m[np.arange(shell.size), band] = 1.0
    return torch.from_numpy(m).to(device=device, dtype=torch.float32)


def mode_magnitudes(weight, max_bands: int = N_BANDS) -> Tensor:
    """Mean weight magnitude per retained Fourier mode of a spectral convolution, in radial bands.

    Each mode's magnitude is the mean ``|w|`` over its input and output channels. Modes are grouped by
    their integer radial shell ``s = floor(|k|)`` (``k`` the mode's signed integer frequency vector,
    :func:`spectral_weight`); with ``S`` shells and ``B = min(S, max_bands)`` bands, band ``b`` holds
    the shells with ``floor(s * B / S) == b`` (one band per shell when ``S <= max_bands``), and its value
    is the mean magnitude of its modes. Every band holds at least one mode.

    Parameters
    ----------
    weight
        A spectral convolution or its weight, as accepted by :func:`spectral_weight`.
    max_bands : int
        Most bands returned.

    Returns
    -------
    torch.Tensor
        ``(B,)`` float32 on the weight's device, lowest frequencies first; no host synchronisation.
    """
    if int(max_bands) < 1:
        raise ValueError(f"max_bands must be >= 1, got {max_bands}")
    with torch.no_grad():
        w, freqs, nch = spectral_weight(weight)
        mag = w.abs().to(torch.float32).mean(dim=tuple(range(nch))).reshape(-1)  # (MODE,)
        m = _shell_matrix(tuple(tuple(f) for f in freqs), int(max_bands), mag.device)
        return (mag @ m) / m.sum(dim=0)


def spectral_stats(x: Tensor, modes=None, n_bands: int = N_BANDS) -> dict[str, Tensor]:
    """:func:`band_energy` (and :func:`energy_above` when ``modes`` is given) as ``{stat name: 0-d tensor}``."""
    out = dict(zip(band_stats(n_bands), band_energy(x, n_bands).unbind()))
    if modes is not None:
        out[ABOVE_STAT] = energy_above(x, modes)
    return out


__all__ = [
    "ABOVE_STAT",
    "N_BANDS",
    "band_energy",
    "band_stats",
    "energy_above",
    "kept_modes_of",
    "mode_magnitudes",
    "mode_stats",
    "spectral_stats",
    "spectral_weight",
]
