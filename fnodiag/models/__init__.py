"""Generator models: spectral convolution, residual blocks, hybrid U-NO generators.

``MODELS`` maps an architecture name to a builder ``(ModelConfig, N) -> nn.Module``;
:func:`build_model` is the entry point used by training. ``SPECTRAL_LAYOUTS`` lists the
spectral weight layouts (``"symmetric"`` default, ``"reference"`` faithful reproduction).
"""

from fnodiag.models.blocks import (
    BLOCKS,
    ControlBlock,
    DecoderStage,
    PreNormBlock,
    SpatialLifter,
    StableBlock,
    get_block,
)
from fnodiag.models.spectral import FFT_NORM, SPECTRAL_LAYOUTS, SpectralConv2d, kept_modes
from fnodiag.models.unet import MODELS, HybridUNO, build_model, count_parameters

__all__ = [
    "BLOCKS",
    "FFT_NORM",
    "MODELS",
    "SPECTRAL_LAYOUTS",
    "ControlBlock",
    "DecoderStage",
    "HybridUNO",
    "PreNormBlock",
    "SpatialLifter",
    "SpectralConv2d",
    "StableBlock",
    "build_model",
    "count_parameters",
    "get_block",
    "kept_modes",
]
