"""``fnodiag export RUN --tensorboard DIR``: a run's store as TensorBoard event files.

Everything the run store holds goes out, read through :class:`fnodiag.runs.StoreReader`:

- each scalar as tag ``scalars/<name>`` (``scalars/train/loss``, ``scalars/lr``,
  ``scalars/epoch/val_loss``, ...) at its logged step, with its logged wall time;
- each per-layer statistic as tag ``<source>/<stat>/<layer>`` (``activation/spatial_std/encoder.0``,
  ``grad/norm/head``, ``param/weight_norm/lifter.conv1``) at its logged step.

Event files land in ``DIR/<run folder name>/`` (TensorBoard shows each subfolder as a run, so several
exported runs compare side by side); an existing folder keeps its files (a new event file is added
beside them). The writer is ``torch.utils.tensorboard.SummaryWriter`` (needs the ``tensorboard``
package: ``pip install 'fnodiag[tensorboard]'``).
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

from fnodiag.runs import RunDir, StoreReader

__all__ = ["export_tensorboard", "scalar_tag", "layer_tag"]


def scalar_tag(name: str) -> str:
    """TensorBoard tag of a store scalar: ``scalars/<name>``."""
    return f"scalars/{name}"


def layer_tag(source: str, stat: str, layer: str) -> str:
    """TensorBoard tag of a per-layer statistic: ``<source>/<stat>/<layer>``."""
    return f"{source}/{stat}/{layer}"


def _writable_folder(path: Path) -> Path:
    """``path`` created if needed and checked writable (a probe file), else a one-line ValueError."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".fnodiag-write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise ValueError(
            f"--tensorboard folder {str(path)!r} is not writable ({exc.strerror or exc}); "
            "choose a folder you can write to"
        ) from None
    return path


def export_tensorboard(run: str | Path, out: str | Path) -> dict:
    """Write the store of ``run`` as TensorBoard event files under ``out/<run name>/``.

    Parameters
    ----------
    run : a run folder (holding ``run.sqlite``)
    out : the TensorBoard log folder (created if missing)

    Returns
    -------
    dict with ``folder`` (the written folder), ``scalars`` and ``layer_values`` (values written), ``tags``.

    Raises
    ------
    FileNotFoundError
        ``run`` is not a run folder with a store.
    ValueError
        ``out`` cannot be written, or the tensorboard package is missing.
    """
    rd = RunDir(run)
    if not rd.path.is_dir():
        raise FileNotFoundError(
            f"run folder {str(rd.path)!r} does not exist; give a run directory "
            "(the --out/<name> of fnodiag train, or a sweep's <arm>-s<seed>)"
        )
    if not rd.store_path.is_file():
        raise FileNotFoundError(
            f"{str(rd.path)!r} holds no run store (run.sqlite); give a run directory of fnodiag train / sweep / import"
        )
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ValueError(
            "exporting to TensorBoard needs the tensorboard package: pip install 'fnodiag[tensorboard]'"
        ) from None
    folder = _writable_folder(Path(out).expanduser()) / rd.path.resolve().name
    _writable_folder(folder)
    tags: set[str] = set()
    n_scalars = n_layers = 0
    with StoreReader(rd.store_path) as reader:
        writer = SummaryWriter(log_dir=str(folder))
        try:
            s = reader.scalars()
            for name, step, value, wall in zip(s.name, s.step.tolist(), s.value.tolist(), s.wall.tolist()):
                tag = scalar_tag(name)
                writer.add_scalar(tag, value, int(step), walltime=wall if math.isfinite(wall) else None)
                tags.add(tag)
            n_scalars = len(s)
            now = time.time()
            r = reader.layer_stats()  # every source (activation, grad, param, ...), in write order
            for source, stat, layer, step, value in zip(r.source, r.stat, r.layer, r.step.tolist(), r.value.tolist()):
                tag = layer_tag(source, stat, layer)
                writer.add_scalar(tag, value, int(step), walltime=now)
                tags.add(tag)
            n_layers = len(r)
        finally:
            writer.close()
    return {"folder": folder, "scalars": n_scalars, "layer_values": n_layers, "tags": sorted(tags)}
