"""Hybrid U-NO generators (brief §1.3-§1.4) and the ``MODELS`` registry.

A hybrid U-NO has a spectral encoder (residual spectral blocks, learned 2x downsampling), a
spectral bottleneck, a plain CNN decoder with concatenation skips, and a 1x1 head emitting the
real and imaginary parts of the complex object patch. The three registered architectures differ
only in the residual block used in the encoder and bottleneck:

==================  =====================  ==================================
``MODELS`` key      block                  reference name
==================  =====================  ==================================
``hybrid``          ``ControlBlock``       ``HybridUNOGenerator`` (control)
``stable_hybrid``   ``StableBlock``        ``StableHybridUNOGenerator``
``prenorm_hybrid``  ``PreNormBlock``       (new; brief §11.8)
==================  =====================  ==================================

Module paths (stable, used by hooks and state dicts): ``lifter`` (``conv1``, ``act``,
``conv2``), ``encoder.{i}`` (blocks, with ``spectral``, ``local``, ``act`` and for normalised
blocks ``norm``), ``down.{i}``, ``bottleneck``, ``up.{i}``, ``decoder.{i}`` (``conv1``,
``act``, ``conv2``), ``head``.
"""

from __future__ import annotations

import torch
from torch import nn

from fnodiag.models.blocks import DecoderStage, SpatialLifter, get_block
from fnodiag.models.spectral import SPECTRAL_LAYOUTS


class HybridUNO(nn.Module):
    """Hybrid U-NO generator: spectral encoder, CNN decoder, concatenation skips.

    Parameters
    ----------
    in_channels : int
        Input channels ``C`` (``gridsize**2``); the head emits ``2 C`` channels.
    width : int
        Channels after the lifter (first encoder level).
    blocks : int
        Encoder levels ``n``; the input is downsampled ``n - 1`` times.
    modes : int
        Fourier modes of the encoder blocks; the bottleneck uses ``max(1, modes // 2)``.
    size : int
        Side ``N`` of the square input; must be divisible by ``2**(blocks - 1)``.
    layout : {"symmetric", "reference"}
        Spectral weight layout of every block.
    channel_cap : int or None
        If set, the encoder channel count doubles per level up to this cap.
    block : {"control", "stable", "prenorm"}
        Residual block of the encoder and bottleneck (``BLOCKS`` key).
    layerscale_init : float
        Initial ``gamma`` of normalised blocks.

    Attributes
    ----------
    channel_schedule : list of int
        Encoder channels per level followed by the bottleneck channels.
    block_class : str
        Class name of the residual block.
    """

    def __init__(
        self,
        in_channels: int = 1,
        width: int = 32,
        blocks: int = 4,
        modes: int = 12,
        *,
        size: int = 64,
        layout: str = "symmetric",
        channel_cap: int | None = None,
        block: str = "control",
        layerscale_init: float = 1e-3,
    ) -> None:
        super().__init__()
        for name, value in (
            ("in_channels", in_channels),
            ("width", width),
            ("blocks", blocks),
            ("modes", modes),
            ("size", size),
        ):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"HybridUNO: {name}={value!r} must be an integer >= 1")
        factor = 2 ** (blocks - 1)
        if size % factor:
            raise ValueError(
                f"HybridUNO: input size {size} must be divisible by 2**(blocks-1) = {factor} for blocks={blocks}"
            )
        if layout not in SPECTRAL_LAYOUTS:
            raise ValueError(f"unknown spectral layout {layout!r}; valid layouts: {', '.join(SPECTRAL_LAYOUTS)}")
        if channel_cap is not None and (not isinstance(channel_cap, int) or channel_cap < width):
            raise ValueError(f"HybridUNO: channel_cap={channel_cap!r} must be an integer >= width ({width}) or None")
        block_cls = get_block(block)
        self.in_channels = in_channels
        self.size = size
        self.layout = layout
        self.block_class = block_cls.__name__

        def make_block(ch: int, m: int, s: int) -> nn.Module:
            return block_cls(ch, m, size=s, layout=layout, layerscale_init=layerscale_init)

        self.lifter = SpatialLifter(in_channels, width)
        encoder_channels: list[int] = []
        self.encoder = nn.ModuleList()
        self.down = nn.ModuleList()
        ch, s = width, size
        for i in range(blocks):
            encoder_channels.append(ch)
            self.encoder.append(make_block(ch, modes, s))
            if i < blocks - 1:
                nxt = 2 * ch if channel_cap is None else min(2 * ch, channel_cap)
                self.down.append(nn.Conv2d(ch, nxt, kernel_size=2, stride=2))
                ch, s = nxt, s // 2
        self.bottleneck = make_block(ch, max(1, modes // 2), s)
        self.channel_schedule = encoder_channels + [ch]

        self.up = nn.ModuleList()
        self.decoder = nn.ModuleList()
        for skip_ch in reversed(encoder_channels[:-1]):
            self.up.append(nn.ConvTranspose2d(ch, skip_ch, kernel_size=2, stride=2))
            self.decoder.append(DecoderStage(2 * skip_ch, skip_ch))
            ch = skip_ch
        self.head = nn.Conv2d(width, 2 * in_channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstruct complex object patches from diffraction amplitudes.

        1. Lift: ``(BATCH, C, N, N) -> (BATCH, width, N, N)``.
        2. Encoder level ``i``: residual block at ``N / 2**i``; below the last level save the
           skip and downsample with a stride-2 conv (channels ``channel_schedule[i + 1]``).
        3. Bottleneck block at the coarsest size with ``modes // 2`` modes.
        4. Decoder stage ``j``: transposed conv up to the matching skip's size and channels,
           concatenate ``[up, skip]`` on the channel axis, ``Conv3x3 -> GELU -> Conv3x3``.
        5. Head: 1x1 conv to ``2 C`` channels ``[real_0..real_{C-1}, imag_0..imag_{C-1}]``,
           combined in float32 into a complex tensor.

        Parameters
        ----------
        x : torch.Tensor
            ``(BATCH, C, N, N)`` float32 diffraction amplitudes.

        Returns
        -------
        torch.Tensor
            ``(BATCH, C, N, N)`` complex64 object patches (unbounded real and imaginary parts).
        """
        if x.ndim != 4 or x.shape[1] != self.in_channels or x.shape[-2:] != (self.size, self.size):
            raise ValueError(
                f"HybridUNO expects (BATCH, {self.in_channels}, {self.size}, {self.size}), got {tuple(x.shape)}"
            )
        h = self.lifter(x)
        skips = []
        for i, block in enumerate(self.encoder):
            h = block(h)
            if i < len(self.down):
                skips.append(h)
                h = self.down[i](h)
        h = self.bottleneck(h)
        for up, stage in zip(self.up, self.decoder):
            h = stage(torch.cat([up(h), skips.pop()], dim=1))
        out = self.head(h).float()
        c = self.in_channels
        return torch.complex(out[:, :c], out[:, c:])


def _builder(block: str):
    def build(cfg, N: int) -> HybridUNO:
        return HybridUNO(
            cfg.in_channels,
            cfg.width,
            cfg.blocks,
            cfg.modes,
            size=N,
            layout=cfg.spectral_layout,
            channel_cap=cfg.channel_cap,
            block=block,
            layerscale_init=cfg.layerscale_init,
        )

    build.__name__ = f"build_{block}_hybrid"
    build.__doc__ = f"Build a :class:`HybridUNO` with ``block={block!r}`` from a ModelConfig at input size N."
    return build


MODELS = {"hybrid": _builder("control"), "stable_hybrid": _builder("stable"), "prenorm_hybrid": _builder("prenorm")}


def build_model(cfg, N: int) -> nn.Module:
    """Build the generator described by a ``ModelConfig`` for ``(BATCH, C, N, N)`` inputs.

    Parameters
    ----------
    cfg : fnodiag.config.ModelConfig
        Architecture (``cfg.arch``, a ``MODELS`` key), spectral layout, depth, width, modes,
        channel cap, layerscale init and input channels.
    N : int
        Input patch side.

    Returns
    -------
    nn.Module
        The generator; ``(BATCH, C, N, N) float32 -> (BATCH, C, N, N) complex64``.

    Raises
    ------
    ValueError
        Unknown ``cfg.arch`` (the message lists ``MODELS``), unknown layout, or an ``N`` not
        divisible by ``2**(blocks - 1)``.
    """
    if cfg.arch not in MODELS:
        raise ValueError(f"unknown model architecture {cfg.arch!r}; valid architectures: {', '.join(MODELS)}")
    return MODELS[cfg.arch](cfg, N)


def count_parameters(model: nn.Module) -> int:
    """Number of parameter elements (``numel``; a complex weight counts as one, as in PyTorch)."""
    return sum(p.numel() for p in model.parameters())
