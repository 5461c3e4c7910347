"""Spectral (Fourier) convolution of FNO layers, in two weight layouts.

A spectral convolution multiplies the low-frequency part of a feature map's 2-D real FFT by
learned complex channel-mixing matrices, one per kept Fourier mode, and transforms back.

Two layouts are offered (``SPECTRAL_LAYOUTS``):

``"symmetric"`` (default)
    The standard FNO layout. Both low-frequency row blocks of the ``rfft2`` spectrum are kept —
    rows ``[:m_h]`` (non-negative row frequencies) and rows ``[-m_h:]`` (negative ones) — each
    with its own weight tensor. The weights are sized to the feature map the layer is built
    for, ``m_h = min(modes, size // 2)`` and ``m_w = min(modes, size // 2 + 1)``, so the two row
    blocks never overlap and every weight takes part in the forward pass (no dead weights).

``"reference"``
    A faithful reproduction of the generator of the reference investigation (PtychoPINN's
    ``_FallbackSpectralConv2d``, brief §1.2): one weight of the full ``modes x modes`` footprint,
    applied to rows ``[:m_h]`` and columns ``[:m_w]`` only, with ``m_h = min(modes, H)`` and
    ``m_w = min(modes, W // 2 + 1)`` computed from the input. Negative row frequencies are
    dropped (the layer is orientation-biased) and, on maps smaller than the footprint, the unused
    part of the weight never receives a gradient. Those dead weights are what make the reference
    generator count 17 202 402 parameters; keeping them is the point of this layout.

Both layouts: complex weights initialised as ``randn(complex) / sqrt(C_in)`` (real and
imaginary parts each with standard deviation ``1 / sqrt(2 * C_in)``), ``rfft2`` / ``irfft2``
with the explicit ``"backward"`` normalisation (unscaled forward transform, ``1 / (H * W)`` on
the inverse), no bias, and the transforms are always computed in float32 (autocast disabled).
"""

from __future__ import annotations

import math

import torch
from torch import nn

SPECTRAL_LAYOUTS = ("symmetric", "reference")
FFT_NORM = "backward"


def _check_layout(layout: str) -> None:
    if layout not in SPECTRAL_LAYOUTS:
        raise ValueError(f"unknown spectral layout {layout!r}; valid layouts: {', '.join(SPECTRAL_LAYOUTS)}")


def kept_modes(modes: int, height: int, width: int, layout: str = "symmetric") -> tuple[int, int]:
    """Number of Fourier rows and columns a layout keeps on an ``height x width`` map.

    Parameters
    ----------
    modes : int
        Requested modes per axis (``m``).
    height, width : int
        Spatial size ``(H, W)`` of the feature map.
    layout : {"symmetric", "reference"}
        Weight layout, see the module docstring.

    Returns
    -------
    (m_h, m_w) : tuple of int
        Rows per row block and columns of the ``rfft2`` half-spectrum that are kept. The
        symmetric layout keeps two row blocks of ``m_h`` rows each, the reference layout one.
    """
    _check_layout(layout)
    m_w = min(modes, width // 2 + 1)
    if layout == "reference":
        return min(modes, height), m_w
    return min(modes, height // 2), m_w


class SpectralConv2d(nn.Module):
    """2-D spectral convolution: channel mixing on the low Fourier modes, no bias.

    Parameters
    ----------
    in_channels, out_channels : int
        Channels ``C_in`` and ``C_out``.
    modes : int
        Requested Fourier modes per axis (``m``); fewer are kept on small maps.
    size : int
        Side ``N`` of the square feature map the layer will see. The symmetric layout sizes its
        weights from it and refuses any other size; the reference layout allocates the full
        ``m x m`` footprint regardless and, like the original, accepts any input size.
    layout : {"symmetric", "reference"}
        Weight layout, see the module docstring.

    Attributes
    ----------
    weights : nn.ParameterList
        Complex64 weights, ``(C_in, C_out, m_h, m_w)`` each. Symmetric: ``weights[0]`` for the
        non-negative row block, ``weights[1]`` for the negative one. Reference: a single
        ``(C_in, C_out, m, m)`` weight.
    modes_kept : tuple of int
        ``(m_h, m_w)`` used at the construction ``size``.
    """

    def __init__(
        self, in_channels: int, out_channels: int, modes: int, *, size: int, layout: str = "symmetric"
    ) -> None:
        super().__init__()
        _check_layout(layout)
        for name, value in (
            ("in_channels", in_channels),
            ("out_channels", out_channels),
            ("modes", modes),
            ("size", size),
        ):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"SpectralConv2d: {name}={value!r} must be an integer >= 1")
        if layout == "symmetric" and size < 2:
            raise ValueError(
                f"SpectralConv2d: the symmetric layout needs a feature map of at least 2x2, got size={size}"
            )
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.modes = modes
        self.size = size
        self.layout = layout
        self.modes_kept = kept_modes(modes, size, size, layout)

        scale = 1.0 / math.sqrt(in_channels)
        if layout == "reference":
            shapes = [(in_channels, out_channels, modes, modes)]
        else:
            m_h, m_w = self.modes_kept
            shapes = [(in_channels, out_channels, m_h, m_w)] * 2
        # torch.randn on a complex dtype draws real and imaginary parts with variance 1/2 each.
        self.weights = nn.ParameterList(
            nn.Parameter(torch.randn(*shape, dtype=torch.complex64) * scale) for shape in shapes
        )

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, modes={self.modes}, size={self.size}, "
            f"layout={self.layout!r}, modes_kept={self.modes_kept}"
        )

    def _blocks(self, height: int, width: int) -> list[tuple[slice, int, torch.Tensor]]:
        """``(row slice, m_w, weight)`` for every kept block of the half-spectrum."""
        m_h, m_w = kept_modes(self.modes, height, width, self.layout)
        if self.layout == "reference":
            return [(slice(0, m_h), m_w, self.weights[0][:, :, :m_h, :m_w])]
        return [(slice(0, m_h), m_w, self.weights[0]), (slice(height - m_h, height), m_w, self.weights[1])]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the spectral convolution.

        1. ``X = rfft2(x)`` (norm ``"backward"``): ``(BATCH, C_in, H, W // 2 + 1) complex64``.
        2. For each kept block: ``Y[b, o, k, l] = sum_c X[b, c, k, l] * W[c, o, k, l]``.
        3. Every other mode of ``Y`` is zero; ``y = irfft2(Y, s=(H, W))``.

        Parameters
        ----------
        x : torch.Tensor
            ``(BATCH, C_in, H, W)`` float32 (other real dtypes are computed in float32 and cast
            back).

        Returns
        -------
        torch.Tensor
            ``(BATCH, C_out, H, W)``, same dtype as ``x``.
        """
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"SpectralConv2d expects (BATCH, {self.in_channels}, H, W), got {tuple(x.shape)}")
        batch, _, height, width = x.shape
        if self.layout == "symmetric" and (height, width) != (self.size, self.size):
            raise ValueError(
                f"SpectralConv2d (symmetric layout) was built for {self.size}x{self.size} "
                f"feature maps, got {height}x{width}; build it with size={height}"
            )
        with torch.autocast(device_type=x.device.type, enabled=False):
            spectrum = torch.fft.rfft2(x.float(), norm=FFT_NORM)
            out = spectrum.new_zeros(batch, self.out_channels, height, width // 2 + 1)
            for rows, m_w, weight in self._blocks(height, width):
                out[:, :, rows, :m_w] = torch.einsum("bixy,ioxy->boxy", spectrum[:, :, rows, :m_w], weight)
            y = torch.fft.irfft2(out, s=(height, width), norm=FFT_NORM)
        return y.to(x.dtype)
