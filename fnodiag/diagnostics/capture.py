"""Capture per-layer activation statistics from a saved checkpoint (``fnodiag capture``).

:func:`capture_checkpoint` is the one orchestration every caller uses (``fnodiag capture``, a
sweep's post-run capture, ``fnodiag import``, the dashboard's Checkpoint view): load the generator,
find its input patches, run :func:`capture` and build the report with its ``summary``. The
checkpoint is read and its generator built by :mod:`fnodiag.diagnostics.checkpoint` (any of
the forms it accepts, fnodiag's names or the reference project's; the names below are re-exported
here). The report keeps the reference script's schema (``summary`` + ``layers: {"<module>/<stat>":
[one value per forward call]}``) so old reports compare, plus a richer ``per_layer`` and ``params``
section. Importing this module imports torch, never Lightning (the dashboard captures through it).
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
    reference_dataset,
)
from fnodiag.diagnostics.devices import check_device
from fnodiag.diagnostics.foreign import load_model, read_model_inputs
from fnodiag.diagnostics.hooks import ActivationRecorder, ProbeError, choose_targets
from fnodiag.diagnostics.stats import scale_params, to_host, weight_norms
from fnodiag.files import no_file, write_json
from fnodiag.models import count_parameters
from fnodiag.ptycho.simulate import GridLinesData, cached_dataset, dataset_key, load_or_simulate
from fnodiag.runs import RunDir, ensure_writable_dir


class DatasetMissing(FileNotFoundError):
    """The dataset a capture needs is not in its cache and simulating it was not allowed.

    ``path`` is the dataset folder that is missing (``<cache>/<dataset key>``).
    """

    def __init__(self, message: str, path: Path):
        super().__init__(message)
        self.path = path


def read_inputs(npz: str | Path) -> np.ndarray:
    """Diffraction amplitudes from an NPZ: ``(n, N, N)`` or channel-last ``(n, N, N, C)`` → ``(n, C, N, N)``."""
    p = Path(npz)
    if not p.is_file():
        raise CaptureError(no_file(p, "--input"))
    try:
        loaded = np.load(p, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            raise CaptureError(
                f"--input {str(p)!r} is one array, not an NPZ with a 'diffraction' array; "
                "for anyone's model pass --model IMPORT:CALLABLE"
            )
        with loaded as f:
            if "diffraction" not in f:
                raise CaptureError(f"--input {str(p)!r} has no 'diffraction' array (found: {', '.join(f.files)})")
            x = np.asarray(f["diffraction"], dtype=np.float32)
    except CaptureError:
        raise
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
    x : (N_SAMPLE, C, S...) float32 (or complex64), S any spatial shape
    batch_size : int

    Returns
    -------
    dict with ``layers`` ({"<module>/<stat>": [value per batch]}), ``per_layer``
    ({module: {stat: mean over batches}}), ``params`` ({"<module>/<stat>": value}) and ``targets``
    (:meth:`~fnodiag.diagnostics.targets.TargetPlan.describe` of the layers chosen by
    :func:`~fnodiag.diagnostics.targets.choose_targets` on the first batch, unless given).
    """
    generator = generator.to(device).eval()
    layers: dict[str, list[float]] = {}
    try:  # the one choice of layers: fnodiag's U-NO layout, else one traced pass of the first batch
        plan = choose_targets(generator, torch.from_numpy(x[:batch_size]).to(device), targets)
    except ProbeError as exc:
        raise CaptureError(f"the model refused the input patches of shape {tuple(x.shape[1:])}: {exc}") from None
    with ActivationRecorder(generator, plan) as recorder:
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
    return {"layers": layers, "per_layer": per_layer, "params": params, "targets": plan.describe()}


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


def foreign_summary(model, spec: str, kwargs: dict, info: dict, x: np.ndarray, batch_size: int, device: str, plan):
    """The ``summary`` of a ``--model`` capture: the callable, its keywords, the input and the layers chosen."""
    return {
        "architecture": spec,
        "model": spec,
        "model_kwargs": dict(kwargs),
        "model_class": f"{type(model).__module__}.{type(model).__qualname__}",
        "n_samples": int(len(x)),
        "batch_size": batch_size,
        "channels": int(x.shape[1]),
        "input_shape": [int(n) for n in x.shape[1:]],
        "parameters": count_parameters(model),
        "device": device,
        "layer_order": list(plan["targets"]),  # forward order (the report's JSON keys are sorted)
        "targets_rule": plan["rule"],
        "left_out": plan["left_out"],
        **info,
    }


def summary_lines(s: dict) -> list[str]:
    """Human-readable lines of a report's ``summary`` (what ``fnodiag capture`` prints)."""
    kind = s.get("checkpoint_kind")
    step = f", epoch {s['epoch']}, global step {s['global_step']}" if "global_step" in s else ""
    lines = [f"checkpoint: {s.get('checkpoint')} ({kind}{step}); names: {s.get('layout')}"]
    if "model" in s:
        prefix = f"; weights under {s['prefix']!r}" if s.get("prefix") else ""
        lines.append(
            f"model: {s['model']}(**{s.get('model_kwargs')}) -> {s.get('model_class')}, "
            f"{s.get('parameters', 0):,} parameters{prefix}"
        )
    else:
        lines.append(
            f"generator: {s.get('architecture')} ({s.get('block_class')}), blocks {s.get('blocks')}, width "
            f"{s.get('width')}, modes {s.get('modes')}, {s.get('spectral_layout')} spectral layout, channels "
            f"{s.get('channel_schedule')}, "
            f"{s.get('parameters', 0):,} parameters; config: {s.get('config_source')}"
        )
    for key, why in (s.get("ignored_keys") or {}).items():
        lines.append(f"ignored: {key}: {why}")
    size = "x".join(map(str, s["input_shape"])) if "input_shape" in s else f"{s.get('N')}x{s.get('N')}"
    lines.append(
        f"input: {s.get('input')} -> {s.get('n_samples')} sample(s) of {size}, "
        f"batch {s.get('batch_size')}" + (f"; layer names: {s['layer_names']}" if "layer_names" in s else "")
    )
    for layer, why in (s.get("left_out") or {}).items():
        lines.append(f"not watched: {layer}: {why}")
    return lines


def capture_checkpoint(
    checkpoint: str | Path,
    *,
    inputs: str | Path | np.ndarray | None = None,
    overrides: dict | None = None,
    split: str = "test",
    max_samples: int,
    batch_size: int,
    device: str = "cpu",
    cache_dir: str | Path | None = None,
    simulate: bool = True,
    model: str | None = None,
    model_kwargs: dict | None = None,
) -> dict:
    """Capture one checkpoint: load its generator, find its input patches, run :func:`capture`, add the summary.

    With ``model`` (``"IMPORT:CALLABLE"``, anyone's model: :mod:`fnodiag.diagnostics.foreign`) the
    model is ``CALLABLE(**model_kwargs)``, the checkpoint's state dict is found under the prefix
    its keys sit at and loaded strictly, the layers are those
    :func:`~fnodiag.diagnostics.targets.choose_targets` traces on the first batch, and ``inputs``
    is required: ``(n, C, *S)`` samples as they are (a ``.npy`` / ``.npz`` / ``.pt`` file,
    :func:`~fnodiag.diagnostics.foreign.read_model_inputs`, or an array).

    The input patches are, first found:

    1. ``inputs``: an NPZ file (:func:`read_inputs`) or an array;
    2. for a checkpoint in the reference project's names, its arm folder's own ``split``
       (:func:`fnodiag.diagnostics.checkpoint.reference_dataset`);
    3. the ``split`` of the run's dataset (its configuration's ``data``) in ``cache_dir``, else in the
       cache the run trained on (:meth:`fnodiag.runs.RunDir.dataset_cache`, for a checkpoint inside
       a run folder), else in ``./datasets``; simulated and cached there when missing and
       ``simulate``, else :class:`DatasetMissing` (nothing is written).

    Parameters
    ----------
    checkpoint : path
        A ``.ckpt``, ``model.pt`` or generator state dict (any form :func:`open_checkpoint` reads).
    inputs : path or (N_SAMPLE, C, N, N) float32, optional
    overrides : dict, optional
        ``{"model.arch": ..., "data.N": ...}`` over the checkpoint's saved configuration.
    split : {"test", "train"}
    max_samples, batch_size : int
        The first ``max_samples`` patches, ``batch_size`` per forward call.
    device : str
    cache_dir : path, optional
    simulate : bool
        Whether a missing dataset may be simulated (and written into the cache).

    Returns
    -------
    dict
        ``summary`` (:func:`summary`; ``input`` names the patches used), ``layers``, ``per_layer``
        and ``params`` (:func:`capture`).

    Raises
    ------
    CaptureError
        Unreadable checkpoint or input, or patches that do not fit the generator.
    DatasetMissing
        No patches were given or found and ``simulate`` is False.
    """
    device = str(check_device(device))  # before anything is loaded (a ConfigError names --device)
    if model is not None:
        return _capture_foreign(checkpoint, model, model_kwargs or {}, inputs, max_samples, batch_size, device)
    if model_kwargs:
        raise CaptureError("--model-kwargs needs --model IMPORT:CALLABLE (the model they build)")
    x = label = None
    if isinstance(inputs, (str, Path)):
        x, label = read_inputs(inputs), str(inputs)
    elif inputs is not None:
        x, label = np.asarray(inputs, dtype=np.float32), "given array"
        if x.ndim != 4:
            raise CaptureError(f"input patches must be (n, C, N, N), got shape {x.shape}")
    generator, cfg, info = load_generator(checkpoint, overrides, N=None if x is None else x.shape[-1])
    own = info["layout"] == "fnodiag"  # else a reference-project checkpoint: never write into its folders
    if x is None and not own:
        found = reference_dataset(checkpoint, cfg.data.N, cfg.model.in_channels, split)
        if found is not None:
            x, label = read_inputs(found), f"{found} (the reference run's own {split} split)"
    if x is None:
        data = _run_dataset(checkpoint, cfg, own=own, cache_dir=cache_dir, simulate=simulate)
        x, label = getattr(data, split).diffraction[:, None], f"dataset {data.key} ({split} split)"
    info["input"] = label
    if x.shape[-1] != cfg.data.N:
        raise CaptureError(
            f"input patches are {x.shape[-1]}x{x.shape[-1]} but the generator was built for N={cfg.data.N}; "
            "pass --N or matching --input"
        )
    if x.shape[1] != cfg.model.in_channels:
        raise CaptureError(
            f"input has {x.shape[1]} channel(s) but the generator takes {cfg.model.in_channels} "
            "(gridsize**2); pass an --input of matching gridsize"
        )
    x = np.ascontiguousarray(x[:max_samples], dtype=np.float32)
    report = capture(generator, x, batch_size=batch_size, device=device)
    report.pop("targets")  # a generator's layers are its U-NO layout (default_targets)
    return {"summary": summary(generator, cfg, info, x, batch_size, device), **report}


def _capture_foreign(checkpoint, spec: str, kwargs: dict, inputs, max_samples: int, batch_size: int, device: str):
    """:func:`capture_checkpoint` of anyone's model (``model=``)."""
    if inputs is None:
        raise CaptureError(f"--model {spec} needs --input FILE: (n, C, ...) samples the model takes (.npy/.npz/.pt)")
    if isinstance(inputs, (str, Path)):
        x, label = read_model_inputs(inputs), str(inputs)
    else:
        x, label = np.asarray(inputs), "given array"
        if x.ndim < 2:
            raise CaptureError(f"input samples must be (n, C, ...), got shape {x.shape}")
        x = x.astype(np.complex64 if np.iscomplexobj(x) else np.float32)
    model, info = load_model(checkpoint, spec, kwargs)
    info["input"] = label
    x = np.ascontiguousarray(x[:max_samples])
    report = capture(model, x, batch_size=batch_size, device=device)
    plan = report.pop("targets")
    return {"summary": foreign_summary(model, spec, kwargs, info, x, batch_size, device, plan), **report}


def _run_dataset(checkpoint, cfg: RunConfig, *, own: bool, cache_dir, simulate: bool) -> GridLinesData:
    """The dataset of ``cfg.data`` from the cache :func:`capture_checkpoint` names (simulated if allowed)."""
    if cache_dir is None:
        ckpt = Path(checkpoint).resolve()
        run_root = ckpt.parent.parent if ckpt.parent.name == "checkpoints" else ckpt.parent
        beside = own and (run_root / "config.json").is_file()
        cache_dir = RunDir(run_root).dataset_cache() if beside else "datasets"
    if simulate:
        return load_or_simulate(cfg.data, ensure_writable_dir(cache_dir, "dataset cache folder"))
    data = cached_dataset(cfg.data, cache_dir)  # reads only: nothing is simulated or written
    if data is None:
        where = Path(cache_dir) / dataset_key(cfg.data)
        raise DatasetMissing(f"the dataset {str(where)!r} is missing and simulating it is off", where)
    return data
