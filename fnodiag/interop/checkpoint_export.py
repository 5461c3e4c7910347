"""Write a generator's weights in another project's state-dict layout (``fnodiag export-checkpoint``).

Today one layout: ``"reference"``, a bare ``state_dict()`` of the reference project's
``HybridUNOGenerator`` / ``StableHybridUNOGenerator`` under the names of
:data:`fnodiag.models.reference_layout.NAME_MAP`, so results can go back to the reference code
(``generator.load_state_dict(torch.load(path))``) and to its analysis scripts. Only generators
built with ``spectral_layout="reference"`` and the control or stable block are representable
exactly; others are refused with the reason. The file is written atomically and an existing file
is never replaced unless asked (``force``).
"""

from __future__ import annotations

from pathlib import Path

import torch

from fnodiag.diagnostics.capture import CaptureError, load_generator
from fnodiag.files import atomic_write
from fnodiag.models import count_parameters
from fnodiag.models.reference_layout import to_reference_state

LAYOUTS = ("reference",)


def resolve_source(source: str | Path, weights: str = "best") -> Path:
    """The checkpoint file a source names: the file itself, or a run folder's ``checkpoints/<weights>.ckpt``.

    Raises
    ------
    CaptureError
        A missing source, or a folder without that checkpoint (the message lists what it has).
    """
    p = Path(source)
    if p.is_dir():
        ckpt = p / "checkpoints" / f"{weights}.ckpt"
        if ckpt.is_file():
            return ckpt
        found = sorted(x.name for x in (p / "checkpoints").glob("*.ckpt")) if (p / "checkpoints").is_dir() else []
        hint = f"it has {', '.join(found)}; pass --weights or the file" if found else "pass a checkpoint file instead"
        raise CaptureError(f"run folder {str(p)!r} has no checkpoints/{weights}.ckpt; {hint}")
    if not p.exists():
        raise CaptureError(f"export source {str(p)!r} does not exist; pass a run folder, a .ckpt or a model.pt")
    return p


def _atomic_save(obj, path: Path, force: bool) -> None:
    if path.is_dir():
        raise CaptureError(
            f"--output {str(path)!r} is a folder; pass a file name such as {str(path / 'generator.pt')!r}"
        )
    if path.exists() and not force:
        raise CaptureError(f"--output {str(path)!r} exists; pass --force to replace it or choose another name")
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda fh: torch.save(obj, fh))


def export_checkpoint(
    source: str | Path,
    output: str | Path,
    *,
    layout: str = "reference",
    weights: str = "best",
    overrides: dict | None = None,
    force: bool = False,
) -> dict:
    """Load a generator (any form ``fnodiag capture`` reads) and save it in ``layout``.

    Parameters
    ----------
    source : run folder, Lightning ``.ckpt``, ``model.pt`` or generator state dict file
    output : file to write
    layout : {"reference"}
        Target state-dict layout.
    weights : {"best", "last"}
        Checkpoint of a run folder.
    overrides : dict, optional
        ``{"model.arch": ..., "data.N": ...}`` for a bare state dict without a saved configuration.
    force : bool
        Replace an existing ``output``.

    Returns
    -------
    dict
        ``source``, ``output``, ``layout``, ``architecture``, ``blocks``, ``width``, ``modes``,
        ``parameters`` and ``tensors`` (keys written).

    Raises
    ------
    CaptureError
        Unknown layout, unreadable source, existing output, or a generator the layout cannot hold
        exactly (symmetric spectral layout, pre-norm blocks): the message says which and why.
    """
    if layout not in LAYOUTS:
        raise CaptureError(f"unknown --layout {layout!r}; valid layouts: {', '.join(LAYOUTS)}")
    path = resolve_source(source, weights)
    generator, cfg, _ = load_generator(path, overrides)
    try:
        state = to_reference_state(generator)
    except ValueError as exc:
        raise CaptureError(f"cannot export {str(path)!r}: {exc}") from None
    out = Path(output)
    _atomic_save(state, out, force)
    m = cfg.model
    return {
        "source": str(path),
        "output": str(out),
        "layout": layout,
        "architecture": m.arch,
        "blocks": m.blocks,
        "width": m.width,
        "modes": m.modes,
        "parameters": count_parameters(generator),
        "tensors": len(state),
    }
