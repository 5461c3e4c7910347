"""What really trains, read back from live objects for ``effective_config.json``: library versions,
clipping as the Trainer and the system apply it, the generator, the best-checkpoint criterion.

(The optimizer and the schedule are described beside their registries,
:func:`fnodiag.training.optimizers.describe_optimizer` and
:func:`fnodiag.training.schedulers.describe_scheduler`; live capture by the recorder, which owns it.)
"""

from __future__ import annotations

import platform

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from fnodiag.models import count_parameters


def versions() -> dict:
    """Versions of the libraries that decide what trains."""
    from importlib.metadata import version  # the installed fnodiag (not `import fnodiag`: no import circle)

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "lightning": L.__version__,
        "numpy": np.__version__,
        "fnodiag": version("fnodiag"),
    }


def describe_clipping(trainer, system) -> dict:
    """Clip algorithm and value as the Trainer and the system really apply them."""
    if system.cfg.clip.algorithm == "agc":
        return {
            "algorithm": "agc",
            "value": system.cfg.clip.value,
            "applied_by": "fnodiag.training.clipping.adaptive_clip_",
        }
    if not trainer.gradient_clip_val:
        return {"algorithm": "none", "value": None, "applied_by": None}
    algo = trainer.gradient_clip_algorithm
    algo = getattr(algo, "value", algo)
    return {
        "algorithm": algo,
        "value": float(trainer.gradient_clip_val),
        "applied_by": f"fnodiag.training.clipping.clip_{algo}_ with Trainer.gradient_clip_val",
    }


def describe_generator(generator: torch.nn.Module) -> dict:
    """Class, block class, channel schedule and parameter count of the generator that trains."""
    layouts = sorted({m.layout for m in generator.modules() if hasattr(m, "layout") and isinstance(m.layout, str)})
    modes = [m.modes for m in generator.modules() if hasattr(m, "modes_kept")]
    scales = [
        m.layerscale for m in generator.modules() if isinstance(getattr(m, "layerscale", None), torch.nn.Parameter)
    ]
    return {
        "class": type(generator).__name__,
        "block_class": getattr(generator, "block_class", None),
        "channels": list(getattr(generator, "channel_schedule", [])),
        "parameters": count_parameters(generator),
        "spectral_layout": layouts[0] if len(layouts) == 1 else layouts,
        "modes": max(modes) if modes else None,  # the bottleneck keeps modes // 2
        "layerscale_init": float(scales[0].detach().flatten()[0]) if scales else None,
    }  # γ before the first step


def describe_best_checkpoint(trainer) -> dict:
    """The criterion the live checkpoint callback chooses ``best.ckpt`` by (``monitor``, ``mode``)."""
    cb = next((c for c in trainer.callbacks if isinstance(c, ModelCheckpoint) and c.monitor), None)
    if cb is None:
        return {"monitor": None, "mode": None}
    return {"monitor": cb.monitor, "mode": cb.mode, "filename": cb.filename}
