"""Capture per-layer activation statistics from a saved checkpoint (``fnodiag capture``).

The checkpoint is read and its generator built by :mod:`fnodiag.diagnostics.checkpoint` (any of
the forms it accepts, fnodiag's names or the reference project's; the names below are re-exported
here). The report keeps the reference script's schema (``summary`` + ``layers: {"<module>/<stat>":
[one value per forward call]}``) so old reports compare, plus a richer ``per_layer`` and ``params``
section.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import torch

from fnodiag.config import RunConfig
from fnodiag.diagnostics.checkpoint import (  # noqa: F401  (re-exported: the public capture API)
    PREFIXES,
    CaptureError,
    find_run_config,
    likely_cause,
    load_generator,
    open_checkpoint,
    read_checkpoint,
)
from fnodiag.diagnostics.hooks import ActivationRecorder
from fnodiag.diagnostics.stats import scale_params, to_host, weight_norms
from fnodiag.files import write_json
from fnodiag.models import count_parameters


def read_inputs(npz: str | Path) -> np.ndarray:
    """Diffraction amplitudes from an NPZ: ``(n, N, N)`` or channel-last ``(n, N, N, C)`` → ``(n, C, N, N)``."""
    p = Path(npz)
    if not p.is_file():
        raise CaptureError(f"--input {str(p)!r} does not exist")
    try:
        with np.load(p) as f:
            if "diffraction" not in f:
                raise CaptureError(f"--input {str(p)!r} has no 'diffraction' array (found: {', '.join(f.files)})")
            x = np.asarray(f["diffraction"], dtype=np.float32)
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise CaptureError(f"--input {str(p)!r} is not a readable NPZ ({exc})") from None
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4:
        x = np.moveaxis(x, -1, 1)
    else:
        raise CaptureError(f"--input diffraction must be (n, N, N) or (n, N, N, C), got shape {x.shape}")
    return x


@torch.no_grad()
def capture(
    generator: torch.nn.Module, x: np.ndarray, *, batch_size: int, device: str = "cpu", targets: list[str] | None = None
) -> dict:
    """Run ``generator`` in eval mode over ``x`` and gather per-layer statistics per forward call.

    Parameters
    ----------
    x : (N_SAMPLE, C, N, N) float32
    batch_size : int

    Returns
    -------
    dict with ``layers`` ({"<module>/<stat>": [value per batch]}), ``per_layer``
    ({module: {stat: mean over batches}}) and ``params`` ({"<module>/<stat>": value}).
    """
    generator = generator.to(device).eval()
    layers: dict[str, list[float]] = {}
    with ActivationRecorder(generator, targets) as recorder:
        for i in range(0, len(x), batch_size):
            generator(torch.from_numpy(x[i : i + batch_size]).to(device))
            for (layer, stat), value in recorder.collect().items():
                layers.setdefault(f"{layer}/{stat}", []).append(value)
    per_layer: dict[str, dict[str, float]] = {}
    for key, values in layers.items():
        layer, stat = key.rsplit("/", 1)
        per_layer.setdefault(layer, {})[stat] = float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")
    wnames, wnorms = weight_norms(generator)
    snames, svalues = scale_params(generator)
    host = to_host({"weight": wnorms, "scale": svalues})
    params = {f"{n}/weight_norm": v for n, v in zip(wnames, host["weight"])}
    params.update(dict(zip(snames, host["scale"])))
    return {"layers": layers, "per_layer": per_layer, "params": params}


def write_report(report: dict, output: str | Path, name: str) -> Path:
    """Write ``report`` as ``output/name`` atomically; returns the path."""
    return write_json(Path(output) / name, report, indent=1)


def summary(generator, cfg: RunConfig, info: dict, x: np.ndarray, batch_size: int, device: str) -> dict:
    """The report's ``summary`` (the reference's keys first)."""
    return {
        "architecture": cfg.model.arch,
        "n_samples": int(len(x)),
        "batch_size": batch_size,
        "channels": int(x.shape[1]),
        "N": int(x.shape[-1]),
        "block_class": getattr(generator, "block_class", None),
        "channel_schedule": list(getattr(generator, "channel_schedule", [])),
        "parameters": count_parameters(generator),
        "device": device,
        "blocks": cfg.model.blocks,
        "width": cfg.model.width,
        "modes": cfg.model.modes,
        "spectral_layout": cfg.model.spectral_layout,
        **info,
    }


def summary_lines(s: dict) -> list[str]:
    """Human-readable lines of a report's ``summary`` (what ``fnodiag capture`` prints)."""
    kind = s.get("checkpoint_kind")
    step = f", epoch {s['epoch']}, global step {s['global_step']}" if "global_step" in s else ""
    lines = [
        f"checkpoint: {s.get('checkpoint')} ({kind}{step}); names: {s.get('layout')}",
        f"generator: {s.get('architecture')} ({s.get('block_class')}), blocks {s.get('blocks')}, width "
        f"{s.get('width')}, modes {s.get('modes')}, {s.get('spectral_layout')} spectral layout, channels "
        f"{s.get('channel_schedule')}, "
        f"{s.get('parameters', 0):,} parameters; config: {s.get('config_source')}",
    ]
    for key, why in (s.get("ignored_keys") or {}).items():
        lines.append(f"ignored: {key}: {why}")
    lines.append(
        f"input: {s.get('input')} -> {s.get('n_samples')} sample(s) of {s.get('N')}x{s.get('N')}, "
        f"batch {s.get('batch_size')}" + (f"; layer names: {s['layer_names']}" if "layer_names" in s else "")
    )
    return lines
