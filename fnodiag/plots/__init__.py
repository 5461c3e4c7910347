"""HoloViews plot builders from run records, shared by the dashboard and the notebooks.

``layers`` (per-layer heatmaps and lines, loss and SSIM curves, arm tables), ``frames``
(reconstruction frames), ``compare`` (arms side by side, ratio maps), ``spectra`` (layer x band energy
maps, band energies over steps, energy above the kept modes, spectral-weight modes). ``from fnodiag import
plots`` gives the public builders of all four.
"""

from fnodiag.plots.compare import layer_values, ratio_heatmap, ratio_limits
from fnodiag.plots.frames import CMAPS, frame_images, frame_strip, is_flat, shared_range, strip_indices
from fnodiag.plots.layers import (
    ARM_COLUMNS,
    HEATMAP_COLUMNS,
    LOG_LABEL_JS,
    LOG_TICKS_JS,
    PALETTE,
    arms_frame,
    arms_table,
    bin_steps,
    collapse_marks,
    color_limits,
    downsample_steps,
    heatmap_frame,
    layer_bars,
    layer_heatmap,
    layer_lines,
    layer_ticks,
    log_ticks,
    loss_curves,
    onset_lines,
    pick_layers,
    scalar_curves,
    side_by_side,
    ssim_bars,
    ssim_curves,
    with_onsets,
)
from fnodiag.plots.spectra import above_lines, band_frame, band_heatmap, band_lines, mode_heatmap

__all__ = [
    "ARM_COLUMNS",
    "above_lines",
    "band_frame",
    "band_heatmap",
    "band_lines",
    "mode_heatmap",
    "CMAPS",
    "HEATMAP_COLUMNS",
    "LOG_LABEL_JS",
    "LOG_TICKS_JS",
    "PALETTE",
    "arms_frame",
    "arms_table",
    "bin_steps",
    "collapse_marks",
    "color_limits",
    "downsample_steps",
    "frame_images",
    "frame_strip",
    "heatmap_frame",
    "is_flat",
    "layer_bars",
    "layer_heatmap",
    "layer_lines",
    "layer_ticks",
    "layer_values",
    "log_ticks",
    "loss_curves",
    "onset_lines",
    "pick_layers",
    "ratio_heatmap",
    "ratio_limits",
    "scalar_curves",
    "shared_range",
    "side_by_side",
    "ssim_bars",
    "ssim_curves",
    "strip_indices",
    "with_onsets",
]
