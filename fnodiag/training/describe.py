"""What really trains, read back from live objects for ``effective_config.json``: clipping as the Trainer
and the system apply it, the generator, the best-checkpoint criterion, a foreign LightningModule's run.

(The optimizer and the schedule are described beside their registries,
:func:`fnodiag.training.optimizers.describe_optimizer` and
:func:`fnodiag.training.schedulers.describe_scheduler`; live capture by the capture core; library
versions by the run writer, :func:`fnodiag.runs.writer.versions`, for every run.)
"""

from __future__ import annotations

import os

import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from fnodiag.models import count_parameters
from fnodiag.training.optimizers import describe_optimizer
from fnodiag.training.schedulers import describe_scheduler


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


def describe_lightning(trainer, pl_module, watched: torch.nn.Module) -> dict:
    """What a foreign LightningModule's run really trains with, read from the live Trainer and optimizers.

    Returns
    -------
    dict
        ``kind`` ("lightning"), ``optimizer`` (class and param groups of the first), ``optimizers``
        (how many), ``scheduler``, ``grad_clip``, ``generator`` (the watched module's class, the
        LightningModule's class, parameter count), ``automatic_optimization``, ``seed``, ``device``,
        ``precision``, ``accelerator``, ``strategy``, ``world_size``, ``max_epochs``, ``max_steps``,
        ``steps_per_epoch``.
    """
    schedulers = trainer.lr_scheduler_configs
    algo = trainer.gradient_clip_algorithm
    return {
        "kind": "lightning",
        "optimizer": describe_optimizer(trainer.optimizers[0]) if trainer.optimizers else None,
        "optimizers": len(trainer.optimizers),
        "scheduler": describe_scheduler(schedulers[0] if schedulers else None),
        "grad_clip": {
            "algorithm": getattr(algo, "value", algo) if trainer.gradient_clip_val else "none",
            "value": trainer.gradient_clip_val,
            "applied_by": "lightning" if trainer.gradient_clip_val else None,
        },
        "generator": {
            "class": type(watched).__name__,
            "module": type(pl_module).__name__,
            "parameters": int(sum(p.numel() for p in watched.parameters())),
        },
        "automatic_optimization": bool(pl_module.automatic_optimization),
        "seed": int(os.environ.get("PL_GLOBAL_SEED", -1)),
        "device": str(pl_module.device),
        "precision": trainer.precision,
        "accelerator": type(trainer.accelerator).__name__,
        "strategy": type(trainer.strategy).__name__,
        "world_size": trainer.world_size,
        "max_epochs": trainer.max_epochs,
        "max_steps": trainer.max_steps,
        "steps_per_epoch": trainer.num_training_batches,
    }
