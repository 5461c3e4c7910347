"""Building blocks of the U-NO generators: residual spectral blocks, lifter and decoder stage.

Every residual block has the same constructor, ``Block(channels, modes, *, size, layout,
layerscale_init)``, keeps its shape ``(BATCH, C, N, N) -> (BATCH, C, N, N)`` and names its
submodules the same way so that diagnostics hooks can find the branches:

``spectral``
    :class:`~fnodiag.models.spectral.SpectralConv2d` ``C -> C`` (the global branch).
``local``
    ``Conv2d(C, C, 3, padding=1)`` with bias (the local branch).
``act``
    ``GELU``.
``norm`` (stable and pre-norm blocks)
    ``InstanceNorm2d(C, affine=True, eps=1e-5)``: per-sample, per-channel spatial statistics,
    also in eval mode (no running statistics).
``layerscale`` (stable and pre-norm blocks, a parameter)
    Per-channel residual scale ``gamma``, shape ``(C,)``, initialised to ``layerscale_init``.

The three variants (``BLOCKS``), with ``S`` the spectral and ``L`` the local branch:

=========  ==========================================  ====================================
key        update                                      origin
=========  ==========================================  ====================================
control    ``y = x + GELU(S(x) + L(x))``               reference ``PtychoBlock``
stable     ``y = x + gamma * IN(GELU(S(x) + L(x)))``   reference ``StablePtychoBlock``
prenorm    ``y = x + gamma * GELU(S(n) + L(n))``,      true pre-norm variant (brief §11.8)
           ``n = IN(x)``
=========  ==========================================  ====================================
"""

from __future__ import annotations

import torch
from torch import nn

from fnodiag.models.spectral import SpectralConv2d

NORM_EPS = 1e-5


class _SpectralResidualBlock(nn.Module):
    """Shared constructor: the two branches, the activation, and optionally norm + layerscale."""

    uses_norm = False

    def __init__(
        self, channels: int, modes: int, *, size: int, layout: str = "symmetric", layerscale_init: float = 1e-3
    ) -> None:
        super().__init__()
        self.channels = channels
        self.spectral = SpectralConv2d(channels, channels, modes, size=size, layout=layout)
        self.local = nn.Conv2d(channels, channels, kernel_size=3, padding=1, bias=True)
        self.act = nn.GELU()
        if self.uses_norm:
            self.norm = nn.InstanceNorm2d(channels, affine=True, eps=NORM_EPS)
            self.layerscale = nn.Parameter(torch.full((channels,), float(layerscale_init)))

    def branches(self, x: torch.Tensor) -> torch.Tensor:
        """``GELU(S(x) + L(x))``: ``(BATCH, C, N, N) float32 -> (BATCH, C, N, N) float32``."""
        return self.act(self.spectral(x) + self.local(x))

    def _scale(self, u: torch.Tensor) -> torch.Tensor:
        return self.layerscale.view(1, -1, 1, 1) * u


class ControlBlock(_SpectralResidualBlock):
    """Control (reference ``PtychoBlock``): ``y = x + GELU(S(x) + L(x))``, no normalisation.

    Parameters
    ----------
    channels : int
        Channels ``C`` (input = output).
    modes : int
        Fourier modes of the spectral branch.
    size : int
        Side ``N`` of the feature maps the block sees.
    layout : {"symmetric", "reference"}
        Spectral weight layout.
    layerscale_init : float
        Accepted for a uniform block constructor; unused (the control block has no layerscale).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(BATCH, C, N, N) float32 -> (BATCH, C, N, N) float32``.

        1. ``u = GELU(S(x) + L(x))``.
        2. ``y = x + u``.
        """
        return x + self.branches(x)


class StableBlock(_SpectralResidualBlock):
    """Stable arm (reference ``StablePtychoBlock``, "norm-last"): ``y = x + gamma * IN(GELU(S(x) + L(x)))``.

    The update has zero spatial mean and unit spatial variance per sample and channel before
    the affine norm parameters and ``gamma``; with ``gamma = 1e-3`` the block starts near the
    identity. Adds ``3 C`` parameters (norm weight and bias, ``gamma``) over :class:`ControlBlock`.

    Parameters
    ----------
    channels, modes, size, layout
        As :class:`ControlBlock`.
    layerscale_init : float
        Initial value of every entry of ``layerscale`` (default 1e-3).
    """

    uses_norm = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(BATCH, C, N, N) float32 -> (BATCH, C, N, N) float32``.

        1. ``u = GELU(S(x) + L(x))``.
        2. ``u = InstanceNorm(u)`` (affine).
        3. ``y = x + gamma * u``, ``gamma`` broadcast over ``(BATCH, ., N, N)``.
        """
        return x + self._scale(self.norm(self.branches(x)))


class PreNormBlock(_SpectralResidualBlock):
    """True pre-norm variant: ``y = x + gamma * GELU(S(n) + L(n))`` with ``n = IN(x)``.

    The residual stream itself is never normalised; both branches see the instance-normalised
    input, so the update is invariant to a positive per-channel affine change of ``x``.

    Parameters
    ----------
    channels, modes, size, layout
        As :class:`ControlBlock`.
    layerscale_init : float
        Initial value of every entry of ``layerscale`` (default 1e-3).
    """

    uses_norm = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(BATCH, C, N, N) float32 -> (BATCH, C, N, N) float32``.

        1. ``n = InstanceNorm(x)`` (affine).
        2. ``u = GELU(S(n) + L(n))``.
        3. ``y = x + gamma * u``.
        """
        return x + self._scale(self.branches(self.norm(x)))


BLOCKS: dict[str, type[nn.Module]] = {"control": ControlBlock, "stable": StableBlock, "prenorm": PreNormBlock}


def get_block(name: str) -> type[nn.Module]:
    """The block class registered under ``name`` (ValueError listing the keys otherwise)."""
    if name not in BLOCKS:
        raise ValueError(f"unknown block {name!r}; valid blocks: {', '.join(BLOCKS)}")
    return BLOCKS[name]


class SpatialLifter(nn.Module):
    """Lift the input to the working width: ``Conv3x3 -> GELU -> Conv3x3`` (submodules ``conv1``, ``act``, ``conv2``).

    Parameters
    ----------
    in_channels : int
        Input channels ``C_in``.
    width : int
        Hidden and output channels.
    """

    def __init__(self, in_channels: int, width: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, kernel_size=3, padding=1)
        self.act = nn.GELU()
        self.conv2 = nn.Conv2d(width, width, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(BATCH, C_in, N, N) float32 -> (BATCH, width, N, N) float32``."""
        return self.conv2(self.act(self.conv1(x)))


class DecoderStage(nn.Module):
    """CNN decoder stage after an upsample + skip concatenation: ``Conv3x3 -> GELU -> Conv3x3``.

    No residual, no normalisation and no activation after the second conv (brief §1.3, step 4).

    Parameters
    ----------
    in_channels : int
        Channels of the concatenation (``2 * skip_channels`` in the U-NO).
    out_channels : int
        Output channels (``skip_channels``).
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1)
        self.act = nn.GELU()
        self.conv2 = nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(BATCH, C_in, N, N) float32 -> (BATCH, C_out, N, N) float32``."""
        return self.conv2(self.act(self.conv1(x)))
