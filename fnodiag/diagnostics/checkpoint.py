"""Read checkpoints in any form and build the generator they hold (``fnodiag capture``, ``export-checkpoint``).

Accepts a Lightning checkpoint, a Lightning module's state dict (a run's ``model.pt``: fnodiag's
``generator.*``, or the reference project's ``model.generator.*`` with its ``model.autoencoder.*``
duplicate, forward-model and scaler tensors) or a bare generator state dict, in fnodiag's names or
the reference's (:mod:`fnodiag.models.reference_layout`). Files are read with weights-only
unpickling (arbitrary Python objects are refused, never executed); the generator's own keys are
selected explicitly; loading is strict, and a mismatch names the missing / unexpected keys and the
likely cause (naming, depth, architecture, spectral layout, width, modes, channel cap).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from fnodiag.config import RunConfig
from fnodiag.diagnostics.safe_load import (  # noqa: F401  (re-exported: where callers look for them)
    ARCHIVE_SLACK,
    MAX_INFLATION,
    SAFE_TORCH_FUNCTIONS,
    CaptureError,
    check_archive,
    load_weights_only,
)
from fnodiag.models import build_model
from fnodiag.models.reference_layout import (
    MARKER,
    from_reference_name,
    from_reference_state,
    infer_model,
    is_reference_state,
)

PREFIXES = ("generator.", "model.generator.")  # fnodiag's system; the reference's Lightning module
# flag that sets each inferred ModelConfig field, for contradiction messages
_FLAG = {
    "arch": "--architecture",
    "spectral_layout": "--spectral-layout",
    "blocks": "--blocks",
    "width": "--width",
    "modes": "--modes",
    "channel_cap": "--channel-cap",
    "in_channels": "model.in_channels",
}


def _generator_prefixes(state: dict) -> list[str]:
    """Prefixes under which a whole hybrid generator sits (``""``, ``generator.``, ``model.autoencoder.``...).

    fnodiag's own prefixes and the bare form come first, then any ``*generator.``, then the rest
    (the reference's ``model.autoencoder.`` duplicate), shorter before longer.
    """
    found = [k[: -len(MARKER)] for k in state if k == MARKER or k.endswith("." + MARKER)]
    rank = {p: (0 if p in ("", *PREFIXES) else 1 if p.endswith("generator.") else 2, len(p)) for p in found}
    return sorted(found, key=rank.__getitem__)


#: keys under which a training script's checkpoint dict keeps the model's state dict (after Lightning's)
WRAPPED = ("model_state_dict", "model")


def read_state(path: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """Read a checkpoint safely and find its state dict, whatever wrapper it comes in (no model assumed).

    A Lightning ``.ckpt`` (the dict under ``state_dict``), a training script's dict (under
    ``model_state_dict`` or ``model``) or a bare ``state_dict()``. Entries that are not tensors
    (neuraloperator's ``_metadata`` of constructor settings) are left out and named in ``ignored``.
    Read by :func:`fnodiag.diagnostics.safe_load.load_weights_only` (nothing of the file is executed).

    Returns
    -------
    state : dict of str to Tensor
        Every tensor of the state dict, under its full key.
    info : dict
        ``kind`` (``"lightning"`` / ``"wrapped"`` / ``"state_dict"``), ``config`` (a saved fnodiag
        RunConfig dict or None), ``hyper_parameters``, ``metadata`` ({key: value} of the state
        dict's entries that are not tensors), ``ignored`` ({key: why}) and, for a Lightning file,
        ``epoch`` / ``global_step``.

    Raises
    ------
    CaptureError
        Unreadable or refused file, or no dict of tensors in it.
    """
    p = Path(path)
    obj = load_weights_only(p)
    out: dict = {"config": None, "hyper_parameters": None, "ignored": {}}
    inner = next((k for k in WRAPPED if isinstance(obj, dict) and _tensor_dict(obj.get(k))), None)
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        out["kind"], state = "lightning", obj["state_dict"]
        hp = obj.get("hyper_parameters")
        out["hyper_parameters"] = hp if isinstance(hp, dict) else None
        out["config"] = (out["hyper_parameters"] or {}).get("config")
        out.update({k: obj[k] for k in ("epoch", "global_step") if isinstance(obj.get(k), int)})
    elif inner is not None:
        out["kind"], state = "wrapped", obj[inner]
        out["ignored"].update({k: f"beside the state dict under {inner!r}" for k in obj if k != inner})
    elif _tensor_dict(obj):
        out["kind"], state = "state_dict", obj
    else:
        raise CaptureError(
            f"{str(p)!r} holds no state dict (found {type(obj).__name__}); pass a Lightning "
            "checkpoint, a run's model.pt or a model's state_dict()"
        )
    tensors = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    out["metadata"] = {k: v for k, v in state.items() if k not in tensors}
    for key, value in out["metadata"].items():
        out["ignored"][key] = f"not a tensor ({type(value).__name__}: settings kept with the weights)"
    return tensors, out


def _tensor_dict(obj) -> bool:
    """A dict holding tensors whose other entries are metadata (keys starting with ``_``)."""
    return (
        isinstance(obj, dict)
        and any(isinstance(v, torch.Tensor) for v in obj.values())
        and all(isinstance(v, torch.Tensor) or (isinstance(k, str) and k.startswith("_")) for k, v in obj.items())
    )


def open_checkpoint(path: str | Path) -> dict:
    """Read a checkpoint safely and pick out its generator, whatever wrapper it comes in.

    Accepts a Lightning ``.ckpt`` (the dict under ``state_dict``), a Lightning module's state dict
    (fnodiag's ``generator.*``; the reference's ``model.generator.*`` with the same generator again
    under ``model.autoencoder.*`` and the forward model's ``alpha`` / ``beta`` and scaler tensors)
    or a bare generator ``state_dict()``, in fnodiag's names or the reference's (any form
    :func:`read_state` reads). Files are read with weights-only unpickling (Python objects are
    refused, never executed).

    Returns
    -------
    dict
        ``state`` (generator keys, prefix stripped), ``config`` (a saved fnodiag RunConfig dict or
        None), ``kind`` (``"lightning"`` / ``"wrapped"`` / ``"state_dict"``), ``prefix`` (of the
        generator keys), ``ignored`` ({key or ``"prefix*"``: why}), ``hyper_parameters`` and, for a
        Lightning file, ``epoch`` / ``global_step``.

    Raises
    ------
    CaptureError
        Unreadable file, no state dict, or a duplicate generator whose tensors differ.
    """
    p = Path(path)
    state, out = read_state(p)
    prefixes = _generator_prefixes(state)
    if not prefixes:
        out.update(state=dict(state), prefix="")
        return out
    primary, *others = prefixes
    gen = {k[len(primary) :]: v for k, v in state.items() if k.startswith(primary)}
    taken = {primary + k for k in gen}
    for other in others:
        dup = {k[len(other) :]: v for k, v in state.items() if k.startswith(other)}
        differing = sorted(set(gen) ^ set(dup)) or [
            k
            for k in gen
            if not (gen[k].shape == dup[k].shape and gen[k].dtype == dup[k].dtype and torch.equal(gen[k], dup[k]))
        ]
        if differing:
            raise CaptureError(
                f"{str(p)!r} holds two different generators: {other}{differing[0]} differs from "
                f"{primary}{differing[0]}; a duplicate must be the same module (pass a bare state dict)"
            )
        out["ignored"][f"{other}*"] = f"duplicate of {primary}* ({len(dup)} tensors, checked equal)"
        taken |= {other + k for k in dup}
    for key in state:
        if key not in taken:
            out["ignored"].setdefault(key, "not part of the generator")
    out.update(state=gen, prefix=primary)
    return out


def read_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict | None, str]:
    """``(generator_state, config_dict | None, kind)`` of a checkpoint; see :func:`open_checkpoint`."""
    ck = open_checkpoint(path)
    return ck["state"], ck["config"], ck["kind"]


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

    A checkpoint in the reference project's names (:mod:`fnodiag.models.reference_layout`) needs
    no size flags: architecture, depth, width, modes and channel cap are read from its names and
    shapes, and a flag that contradicts them is an error naming both values. Its weights are
    renamed through ``NAME_MAP`` into a ``spectral_layout="reference"`` generator.

    Parameters
    ----------
    path : checkpoint file (any form :func:`open_checkpoint` reads)
    overrides : dict, optional
        ``{"model.arch": ..., "model.layerscale_init": ...}`` applied over the saved configuration
        (or over the defaults when the checkpoint has none).
    N : int, optional
        Input size; used when no configuration is saved with the checkpoint.

    Returns
    -------
    (generator, RunConfig, info dict)
        ``info`` holds ``checkpoint``, ``checkpoint_kind``, ``config_source``, ``layout`` and,
        when any, ``ignored_keys`` ({key or ``"prefix*"``: why it was left out}).
    """
    ck = open_checkpoint(path)
    state, config, overrides = ck["state"], ck["config"], dict(overrides or {})
    info = {"checkpoint": str(path), "checkpoint_kind": ck["kind"], "layout": "fnodiag"}
    info.update({k: ck[k] for k in ("epoch", "global_step") if k in ck})
    if is_reference_state(state):
        cfg = _reference_config(state, ck, overrides, N)
        state = from_reference_state(state)
        info.update(
            layout="reference (renamed by fnodiag.models.reference_layout.NAME_MAP)",
            config_source="inferred from the checkpoint's names and shapes",
        )
    else:
        source = "checkpoint hyper_parameters" if config else None
        if config is None:
            config, source = find_run_config(path)
        cfg = RunConfig.from_dict(config) if config else RunConfig()
        extra = {"data.N": N} if (config is None and N) else {}
        cfg = cfg.override({**extra, **overrides})
        info["config_source"] = source or "flags/defaults"
    cfg.model.validate()
    generator = build_model(cfg.model, cfg.data.N)
    _load_strict(generator, state, cfg, path)
    if ck["ignored"]:
        info["ignored_keys"] = ck["ignored"]
    return generator, cfg, info


def _reference_config(state: dict, ck: dict, overrides: dict, N: int | None) -> RunConfig:
    """RunConfig of a reference-layout generator: inferred sizes, checked against the flags."""
    try:
        inferred = infer_model(state)
    except ValueError as exc:
        raise CaptureError(str(exc)) from None
    for field, flag in _FLAG.items():
        given = overrides.get(f"model.{field}")
        if given is not None and given != inferred[field]:
            raise CaptureError(
                f"{flag} {given} contradicts the checkpoint, which holds a reference-layout "
                f"{inferred['arch']} with {field} {inferred[field]} (channels "
                f"{inferred['channel_schedule']}); drop {flag} or pass another checkpoint"
            )
    hp_model = (ck.get("hyper_parameters") or {}).get("model_config") or {}
    transform = hp_model.get("fno_input_transform") if isinstance(hp_model, dict) else None
    if transform not in (None, "none"):
        raise CaptureError(
            f"the checkpoint's generator applies input_transform {transform!r} before its lifter; "
            "fnodiag's generators have none, so its forward would differ (only 'none' loads)"
        )
    hp_n = ((ck.get("hyper_parameters") or {}).get("data_config") or {}).get("N")
    size = overrides.pop("data.N", None) or N or (hp_n if isinstance(hp_n, int) else None)
    model = {f"model.{k}": v for k, v in inferred.items() if k in _FLAG}
    return RunConfig().override({**({"data.N": size} if size else {}), **overrides, **model})


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
    cause = likely_cause(state, expected)
    raise CaptureError(
        f"checkpoint {str(path)!r} does not fit {cfg.model.arch} (blocks {cfg.model.blocks}, width "
        f"{cfg.model.width}, modes {cfg.model.modes}, layout {cfg.model.spectral_layout}, N "
        f"{cfg.data.N}): {'; '.join(parts)}; likely cause: {cause}"
    )


def _count(keys, pattern: str) -> int:
    return len({m.group(1) for k in keys if (m := re.match(pattern, k))})


def _dim(state: dict, key: str, axis: int) -> int | None:
    t = state.get(key)
    return int(t.shape[axis]) if t is not None and t.ndim >= 2 else None


def likely_cause(state: dict, expected: dict) -> str:
    """Name the first real difference between a checkpoint and a built generator.

    Checked in order: naming (the same network in the other vocabulary), another kind of model (no
    encoder blocks: ``--model``), depth (encoder levels),
    architecture (norm / layerscale keys), spectral layout (one or two weight tensors), width
    (lifter output), input channels, modes (spectral weight footprint), and the channel cap.
    """
    s, e = set(state), set(expected)
    if is_reference_state(state) and not is_reference_state(expected):
        renamed = {from_reference_name(k) or k: v for k, v in state.items()}
        if set(renamed) == e:
            return "naming only (the same network under the reference project's names)"
        return "reference names, and " + likely_cause(renamed, expected)
    depth_s, depth_e = _count(s, r"encoder\.(\d+)\."), _count(e, r"encoder\.(\d+)\.")
    if depth_s == 0 and depth_e:  # no U-NO encoder at all: no --blocks value would fit it
        example = ", ".join(sorted(s)[:2])
        return (
            f"not a fnodiag generator (no encoder blocks; its keys are e.g. {example}); for another model "
            "pass --model IMPORT:CALLABLE (with --model-kwargs JSON and --input FILE)"
        )
    if depth_s != depth_e:
        return f"depth (the checkpoint has {depth_s} encoder blocks, the model {depth_e}); pass --blocks {depth_s}"
    norm_s, norm_e = ({k for k in keys if "layerscale" in k or ".norm." in k} for keys in (s, e))
    if bool(norm_s) != bool(norm_e):
        have = "has" if norm_s else "has no"
        return (
            f"architecture (the checkpoint {have} norm/layerscale keys: stable/prenorm blocks vs hybrid); "
            "pass --architecture"
        )
    two_s, two_e = ("encoder.0.spectral.weights.1" in keys for keys in (s, e))
    if two_s != two_e:
        layout = "symmetric" if two_s else "reference"
        return f"spectral layout (the checkpoint's is {layout}); pass --spectral-layout {layout}"
    for key, axis, what, flag in (
        ("lifter.conv1.weight", 0, "width", "--width"),
        ("lifter.conv1.weight", 1, "input channels", "--N / gridsize"),
        ("encoder.0.spectral.weights.0", -1, "modes", "--modes (or --N)"),
    ):
        a, b = _dim(state, key, axis), _dim(expected, key, axis)
        if a is not None and b is not None and a != b:
            return f"{what} (the checkpoint has {a}, the model {b}); pass {flag}" + (
                f" {a}" if what != "input channels" else ""
            )
    if any(tuple(state[k].shape) != tuple(expected[k].shape) for k in s & e):
        return "channel cap (deeper levels have other channel counts); pass --channel-cap"
    return "a different generator; check --architecture, --blocks and --width"


def reference_dataset(path: str | Path, N: int, in_channels: int, split: str = "test") -> Path | None:
    """The reference arm's own dataset for a checkpoint in its output folder, if it is there.

    The reference writes ``<out>/datasets/N{N}/gs{gridsize}/{train,test}.npz`` beside
    ``<out>/runs/pinn_<arch>/model.pt`` and ``<out>/checkpoints/*.ckpt`` (brief §3.5, §7.3).

    Returns
    -------
    Path or None
        The NPZ (``diffraction`` ``(n, N, N, C)``), or None when no such file exists.
    """
    p = Path(path).resolve()
    gridsize = round(in_channels**0.5)
    for out in (p.parent.parent.parent, p.parent.parent, p.parent):
        candidate = out / "datasets" / f"N{N}" / f"gs{gridsize}" / f"{split}.npz"
        if candidate.is_file():
            return candidate
    return None
