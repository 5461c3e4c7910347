"""Capture per-layer activation statistics from a saved checkpoint (``fnodiag capture``).

Accepts a Lightning checkpoint of a run, a run's generator-only ``model.pt``, or a bare generator
state dict. Files are read with weights-only unpickling (arbitrary Python objects are refused,
never executed); the generator's own keys are selected explicitly; loading is strict, and a
mismatch names the missing / unexpected keys and the likely cause. The report keeps the reference
script's schema (``summary`` + ``layers: {"<module>/<stat>": [one value per forward call]}``) so old
reports compare, plus a richer ``per_layer`` and ``params`` section.
"""
from __future__ import annotations

import json
import pickle
import zipfile
from pathlib import Path

import numpy as np
import torch

from fnodiag.config import ConfigError, RunConfig
from fnodiag.diagnostics.hooks import ActivationRecorder
from fnodiag.diagnostics.stats import scale_params, to_host, weight_norms
from fnodiag.models import build_model, count_parameters
from fnodiag.runs import atomic_write_text

PREFIXES = ("generator.", "model.generator.")  # fnodiag's system; the reference's Lightning module


class CaptureError(ConfigError):
    """A checkpoint or input that cannot be captured; the message names the problem and the fix."""


def read_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict | None, str]:
    """Load a checkpoint file safely and return ``(generator_state, config_dict | None, kind)``.

    ``kind`` is ``"lightning"`` (a dict with ``state_dict``), ``"state_dict"`` (a generator-only
    state dict, e.g. a run's ``model.pt``). Keys of the generator are selected by the prefixes
    ``generator.`` (fnodiag) or ``model.generator.`` (the reference); other modules' keys (the
    forward model's probe, the reference's duplicate ``autoencoder``) are left out.
    """
    p = Path(path)
    if not p.is_file():
        raise CaptureError(f"checkpoint {str(p)!r} does not exist")
    if p.stat().st_size == 0:
        raise CaptureError(f"checkpoint {str(p)!r} is empty (0 bytes); pass a saved .ckpt or model.pt")
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "global" in str(exc).lower():  # weights-only unpickler met a class or function reference
            raise CaptureError(f"refused {str(p)!r}: it carries Python objects that weights-only loading does not "
                               "allow, and it was not executed; pass a checkpoint of tensors") from None
        raise CaptureError(f"{str(p)!r} is not a readable PyTorch checkpoint (bad pickle data); "
                           "it may be truncated or another kind of file") from None
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CaptureError(f"{str(p)!r} is not a readable PyTorch checkpoint ({reason}); it may be truncated") from None
    config = None
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        kind, state = "lightning", obj["state_dict"]
        config = (obj.get("hyper_parameters") or {}).get("config")
    elif isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        kind, state = "state_dict", obj
    else:
        raise CaptureError(f"{str(p)!r} holds no state dict (found {type(obj).__name__}); pass a Lightning "
                           "checkpoint, a run's model.pt or a generator state_dict()")
    for prefix in PREFIXES:
        selected = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        if selected:
            return selected, config, kind
    return dict(state), config, kind


def find_run_config(path: str | Path) -> tuple[dict | None, str | None]:
    """``config.json`` of the run a checkpoint belongs to (beside it, or one folder up)."""
    p = Path(path).resolve()
    for folder in (p.parent, p.parent.parent):
        cfg = folder / "config.json"
        if cfg.is_file():
            return json.loads(cfg.read_text()), str(cfg)
    return None, None


def load_generator(path: str | Path, overrides: dict | None = None, *, N: int | None = None):
    """Build the generator a checkpoint holds and load its weights strictly.

    Parameters
    ----------
    path : checkpoint file
    overrides : dict, optional
        ``{"model.arch": ..., "model.layerscale_init": ...}`` applied over the saved configuration
        (or over the defaults when the checkpoint has none).
    N : int, optional
        Input size; used when no configuration is saved with the checkpoint.

    Returns
    -------
    (generator, RunConfig, info dict)
    """
    state, config, kind = read_checkpoint(path)
    source = "checkpoint hyper_parameters" if config else None
    if config is None:
        config, source = find_run_config(path)
    cfg = RunConfig.from_dict(config) if config else RunConfig()
    extra = {"data.N": N} if (config is None and N) else {}
    cfg = cfg.override({**extra, **(overrides or {})})
    cfg.model.validate()
    generator = build_model(cfg.model, cfg.data.N)
    _load_strict(generator, state, cfg, path)
    info = {"checkpoint": str(path), "checkpoint_kind": kind, "config_source": source or "flags/defaults"}
    return generator, cfg, info


def _load_strict(generator, state, cfg: RunConfig, path) -> None:
    expected = generator.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shape = sorted(k for k in set(expected) & set(state) if tuple(expected[k].shape) != tuple(state[k].shape))
    if not (missing or unexpected or shape):
        generator.load_state_dict(state, strict=True)
        return
    parts = []
    if missing:
        parts.append(f"missing {len(missing)} key(s) e.g. {', '.join(missing[:3])}")
    if unexpected:
        parts.append(f"unexpected {len(unexpected)} key(s) e.g. {', '.join(unexpected[:3])}")
    if shape:
        k = shape[0]
        parts.append(f"{len(shape)} shape mismatch(es) e.g. {k} {tuple(state[k].shape)} vs {tuple(expected[k].shape)}")
    cause = _likely_cause(set(state), set(expected), missing + unexpected, shape)
    raise CaptureError(f"checkpoint {str(path)!r} does not fit {cfg.model.arch} (blocks {cfg.model.blocks}, width "
                       f"{cfg.model.width}, modes {cfg.model.modes}, layout {cfg.model.spectral_layout}, N "
                       f"{cfg.data.N}): {'; '.join(parts)}; likely cause: {cause}")


def _level(key: str) -> str:
    """The U-NO level a key belongs to: ``encoder.2``, ``up.0``, ... or ``lifter``, ``head``."""
    parts = key.split(".")
    return ".".join(parts[:2]) if parts[0] in ("encoder", "down", "up", "decoder") else parts[0]


def _likely_cause(state_keys: set, model_keys: set, differing: list, shape: list) -> str:
    if {_level(k) for k in state_keys} != {_level(k) for k in model_keys}:
        return "depth (the checkpoint has other encoder/decoder levels); pass --blocks"
    if any("layerscale" in k or ".norm." in k for k in differing):
        return "architecture (stable/prenorm blocks vs hybrid); pass --architecture"
    if any("spectral" in k for k in shape + differing):
        return "modes, N or spectral layout; pass --modes / --N / --spectral-layout"
    if shape:
        return "width; pass --width"
    return "a different generator; check --architecture, --blocks and --width"


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
def capture(generator: torch.nn.Module, x: np.ndarray, *, batch_size: int, device: str = "cpu",
            targets: list[str] | None = None) -> dict:
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
            generator(torch.from_numpy(x[i:i + batch_size]).to(device))
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
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    path = out / name
    atomic_write_text(path, json.dumps(report, indent=1, sort_keys=True) + "\n")
    return path


def summary(generator, cfg: RunConfig, info: dict, x: np.ndarray, batch_size: int, device: str) -> dict:
    """The report's ``summary`` (the reference's keys first)."""
    return {"architecture": cfg.model.arch, "n_samples": int(len(x)), "batch_size": batch_size,
            "channels": int(x.shape[1]), "N": int(x.shape[-1]), "block_class": getattr(generator, "block_class", None),
            "channel_schedule": list(getattr(generator, "channel_schedule", [])),
            "parameters": count_parameters(generator), "device": device, **info}
