"""The reference project's state-dict layout and its one name map onto fnodiag's generator.

The reference generators (PtychoPINN ``HybridUNOGenerator`` / ``StableHybridUNOGenerator``,
brief §1.3-§1.4 and §6.1b) compute exactly what fnodiag's :class:`~fnodiag.models.HybridUNO`
computes with ``spectral_layout="reference"`` and ``block="control"`` / ``"stable"``; only the
names differ. ``NAME_MAP`` is the single table between the two vocabularies, used to load
reference checkpoints, to export fnodiag generators, and to rename capture reports. Each row maps
a leading run of dotted name segments (``{i}`` is a level index); the first matching row wins and
the rest of the name is kept:

=====================================  ==========================================  ===========================
fnodiag name                           reference name                              what
=====================================  ==========================================  ===========================
``lifter``                             ``lifter``                                  ``conv1``, ``act``, ``conv2``
``encoder.{i}.spectral.weights.0``     ``encoder_blocks.{i}.spectral.weights``     ``(C, C, m, m)`` complex64
``encoder.{i}.local``                  ``encoder_blocks.{i}.local_conv``           conv 3x3
``encoder.{i}``                        ``encoder_blocks.{i}``                      block (``norm``, ``layerscale``)
``bottleneck.spectral.weights.0``      ``bottleneck.spectral.weights``             ``m // 2`` modes
``bottleneck.local``                   ``bottleneck.local_conv``                   conv 3x3
``bottleneck``                         ``bottleneck``                              block
``down.{i}``                           ``downsample.{i}``                          conv 2x2 stride 2
``up.{i}``                             ``upsample.{i}``                            ConvTranspose 2x2
``decoder.{i}.conv1``                  ``decoder_blocks.{i}.0``                    conv 3x3
``decoder.{i}.act``                    ``decoder_blocks.{i}.1``                    GELU
``decoder.{i}.conv2``                  ``decoder_blocks.{i}.2``                    conv 3x3
``decoder.{i}``                        ``decoder_blocks.{i}``                      decoder stage
``head``                               ``output_proj``                             conv 1x1, ``2 C`` outputs
``output``                             ``output``                                  the generator's output
=====================================  ==========================================  ===========================

Sizes are read from a reference state dict (:func:`infer_model`): ``width`` from the lifter,
``in_channels`` (``gridsize**2``) from the lifter's input, ``blocks`` from the number of
``encoder_blocks``, ``modes`` from the spectral weight, the channel schedule (and so a channel
cap) from the local convs, and the architecture from ``layerscale``: present means
``stable_hybrid``, absent ``hybrid``. The reference has no pre-norm block, and the symmetric
spectral layout (two weight tensors, ± row frequencies) has no reference counterpart: neither can
be written in the reference layout.
"""

from __future__ import annotations

import re

import torch

# (fnodiag, reference); order matters: the first row whose segments lead a name maps it.
NAME_MAP: tuple[tuple[str, str], ...] = (
    ("lifter", "lifter"),
    ("encoder.{i}.spectral.weights.0", "encoder_blocks.{i}.spectral.weights"),
    ("encoder.{i}.local", "encoder_blocks.{i}.local_conv"),
    ("encoder.{i}", "encoder_blocks.{i}"),
    ("bottleneck.spectral.weights.0", "bottleneck.spectral.weights"),
    ("bottleneck.local", "bottleneck.local_conv"),
    ("bottleneck", "bottleneck"),
    ("down.{i}", "downsample.{i}"),
    ("up.{i}", "upsample.{i}"),
    ("decoder.{i}.conv1", "decoder_blocks.{i}.0"),
    ("decoder.{i}.act", "decoder_blocks.{i}.1"),
    ("decoder.{i}.conv2", "decoder_blocks.{i}.2"),
    ("decoder.{i}", "decoder_blocks.{i}"),
    ("head", "output_proj"),
    ("output", "output"),
)
MARKER = "lifter.conv1.weight"  # every hybrid generator, in both vocabularies, has this key


def _compile(template: str) -> re.Pattern:
    pattern = re.escape(template).replace(re.escape("{i}"), r"(?P<i>\d+)")
    return re.compile(rf"{pattern}(?=\.|$)")


_RULES = [(_compile(f), f, _compile(r), r) for f, r in NAME_MAP]


def _rename(name: str, to_reference: bool) -> str | None:
    for f_re, f, r_re, r in _RULES:
        src, dst = (f_re, r) if to_reference else (r_re, f)
        m = src.match(name)
        if m:
            head = dst.replace("{i}", m.group("i")) if "{i}" in dst else dst
            return head + name[m.end() :]
    return None


def to_reference_name(name: str) -> str | None:
    """fnodiag module path or state-dict key -> the reference's (None when no row maps it)."""
    return _rename(name, True)


def from_reference_name(name: str) -> str | None:
    """Reference module path or state-dict key -> fnodiag's (None when no row maps it)."""
    return _rename(name, False)


def is_reference_state(state: dict) -> bool:
    """Whether a generator state dict uses the reference's names (``encoder_blocks.``, ``output_proj.``)."""
    return MARKER in state and any(k.startswith(("encoder_blocks.", "output_proj.")) for k in state)


def _levels(state: dict, prefix: str) -> list[int]:
    found = {int(m.group(1)) for k in state if (m := re.match(rf"{re.escape(prefix)}\.(\d+)\.", k))}
    return sorted(found)


def infer_model(state: dict[str, torch.Tensor]) -> dict:
    """Architecture and sizes of a reference-layout generator state dict, from names and shapes.

    Parameters
    ----------
    state : dict
        Bare reference generator keys (``lifter.conv1.weight``, ``encoder_blocks.{i}.*``, ...).

    Returns
    -------
    dict
        ``{"arch", "spectral_layout", "blocks", "width", "modes", "channel_cap", "in_channels"}``
        (ModelConfig field names) plus ``"channel_schedule"`` (encoder channels, then the
        bottleneck's).

    Raises
    ------
    ValueError
        A state dict that is not a consistent reference hybrid generator (message names the key).
    """

    def need(key: str) -> torch.Tensor:
        if key not in state:
            raise ValueError(f"reference-layout checkpoint lacks {key!r}; it is not a complete hybrid U-NO generator")
        return state[key]

    lifter = need("lifter.conv1.weight")
    width, in_channels = int(lifter.shape[0]), int(lifter.shape[1])
    levels = _levels(state, "encoder_blocks")
    if not levels:
        raise ValueError(
            "reference-layout checkpoint has no encoder_blocks.*: it is not a hybrid / stable_hybrid "
            "U-NO (e.g. the cascaded 'fno' generator, which fnodiag does not build)"
        )
    if levels != list(range(len(levels))):
        raise ValueError(f"reference-layout checkpoint has encoder_blocks {levels}; expected 0..n-1")
    blocks = len(levels)
    spectral = need("encoder_blocks.0.spectral.weights")
    if spectral.ndim != 4 or not spectral.is_complex():
        raise ValueError(
            f"encoder_blocks.0.spectral.weights is {tuple(spectral.shape)} {spectral.dtype}; the "
            "reference layout has one (C, C, m, m) complex tensor per block"
        )
    modes = int(spectral.shape[-1])
    for i in levels[1:]:
        m = int(need(f"encoder_blocks.{i}.spectral.weights").shape[-1])
        if m != modes:
            raise ValueError(f"encoder_blocks.{i} has {m} spectral modes but encoder_blocks.0 has {modes}")
    bottleneck_modes = int(need("bottleneck.spectral.weights").shape[-1])
    if bottleneck_modes != max(1, modes // 2):
        raise ValueError(
            f"bottleneck has {bottleneck_modes} spectral modes; a reference generator with {modes} "
            f"modes has {max(1, modes // 2)} (modes // 2)"
        )
    schedule = [int(need(f"encoder_blocks.{i}.local_conv.weight").shape[0]) for i in levels]
    schedule.append(int(need("bottleneck.local_conv.weight").shape[0]))
    if schedule[0] != width:
        raise ValueError(f"encoder_blocks.0 has {schedule[0]} channels but the lifter emits {width}")
    doubling = [width * 2**i for i in range(blocks)]
    cap = None
    if schedule[:blocks] != doubling:  # max_hidden_channels: doubling up to a cap
        cap = max(schedule[:blocks])
        if [min(c, cap) for c in doubling] != schedule[:blocks]:
            raise ValueError(f"encoder channel schedule {schedule[:blocks]} is neither doubling nor capped doubling")
    stable = "encoder_blocks.0.layerscale" in state
    return {
        "arch": "stable_hybrid" if stable else "hybrid",
        "spectral_layout": "reference",
        "blocks": blocks,
        "width": width,
        "modes": modes,
        "channel_cap": cap,
        "in_channels": in_channels,
        "channel_schedule": schedule,
    }


def from_reference_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a reference generator state dict to fnodiag's keys (tensors shared, not copied).

    Raises
    ------
    ValueError
        A key no ``NAME_MAP`` row maps (the message names it).
    """
    out = {}
    for key, value in state.items():
        new = from_reference_name(key)
        if new is None:
            raise ValueError(f"reference-layout key {key!r} is not in fnodiag's name map (NAME_MAP)")
        out[new] = value
    return out


def to_reference_state(generator) -> dict[str, torch.Tensor]:
    """A fnodiag generator's weights as a reference-layout state dict (bare ``state_dict()`` keys).

    Parameters
    ----------
    generator : fnodiag.models.HybridUNO
        Built with ``layout="reference"`` and the ``control`` or ``stable`` block.

    Returns
    -------
    dict
        Reference keys -> detached CPU tensors; ``HybridUNOGenerator.load_state_dict`` takes it.

    Raises
    ------
    ValueError
        A generator that the reference layout cannot represent exactly (the message says why).
    """
    layout = getattr(generator, "layout", None)
    if layout != "reference":
        raise ValueError(
            f"this generator uses the {layout!r} spectral layout (two weight tensors per block, "
            "± row frequencies), which the reference's one (C, C, m, m) tensor over non-negative rows "
            "cannot represent; only generators trained with --spectral-layout reference export exactly"
        )
    block = getattr(generator, "block_class", None)
    if block not in ("ControlBlock", "StableBlock"):
        raise ValueError(
            f"this generator's blocks are {block}; the reference has only PtychoBlock (hybrid) and "
            "StablePtychoBlock (stable_hybrid), so it cannot be exported exactly"
        )
    out = {}
    for key, value in generator.state_dict().items():
        new = to_reference_name(key)
        if new is None:
            raise ValueError(f"generator key {key!r} is not in the reference name map (NAME_MAP)")
        out[new] = value.detach().cpu().clone()
    return out


def rename_report(report: dict) -> dict:
    """A capture report with every ``"<layer>/<stat>"`` and per-layer name in the reference's vocabulary.

    Names no ``NAME_MAP`` row maps are kept as they are. ``summary`` gets ``"layer_names":
    "reference"``.
    """

    def name(layer: str) -> str:
        return to_reference_name(layer) or layer

    def keyed(d: dict) -> dict:
        out = {}
        for key, value in d.items():
            layer, sep, stat = key.rpartition("/")
            out[f"{name(layer)}/{stat}" if sep else name(key)] = value
        return out

    out = dict(report)
    for section in ("layers", "params"):
        if section in out:
            out[section] = keyed(out[section])
    if "per_layer" in out:
        out["per_layer"] = {name(k): v for k, v in out["per_layer"].items()}
    if "summary" in out:
        out["summary"] = {**out["summary"], "layer_names": "reference"}
    return out
