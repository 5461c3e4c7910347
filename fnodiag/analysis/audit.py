"""The proof that the settings reached training: what a RunConfig must show in ``effective_config.json``.

The reference investigation trusted settings that never reached training (brief §11): Adam where
SGD was asked, a warmup-cosine schedule whose LR never moved, a clip that was asked and not
applied. :func:`expected_effective` says, field by field, what the run's effective configuration
must record for a :class:`~fnodiag.config.RunConfig` (paths like ``optimizer.class`` or
``optimizer.param_groups[0].momentum``); :func:`compare_effective` lists every field where the
record differs; :func:`lr_differences` compares the realised per-step LR with the schedule's
formula; :func:`config_differences` compares a run's ``config.json`` with what its sweep
definition and flags resolve to. The optimizer's expectation is its registry entry's
(:data:`fnodiag.training.optimizers.OPTIMIZERS`): the class name and every keyword argument the
entry gives torch, each compared with the live ``param_groups[i]`` that training recorded, so an
optimizer swapped or a hyperparameter lost on the way to the trainer is caught, and a registered
optimizer is audited with no table to update here. The other expectations are written from the
configuration with independent name tables (:data:`SCHEDULER_CLASSES`, ...), not by building the
training objects, so a factory that builds the wrong thing is caught. :func:`audit_run` applies
all of them to a run directory and returns warnings ``"<run>: <field> asked <value>, got <value>"``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import numpy as np
import torch

from fnodiag.config import RunConfig, val_batch_size
from fnodiag.models import build_model, count_parameters
from fnodiag.ptycho.simulate import dataset_key
from fnodiag.runs import StoreReader, jsonable
from fnodiag.runs.names import LR
from fnodiag.training.optimizers import OPTIMIZERS
from fnodiag.training.schedulers import expected_lr

SCHEDULER_CLASSES = {
    "constant": None,
    "warmup_cosine": "WarmupCosineLR",
    "exponential": "ExponentialLR",
    "plateau": "ReduceLROnPlateau",
    "step": "StepLR",
}
BLOCK_CLASSES = {"hybrid": "ControlBlock", "stable_hybrid": "StableBlock", "prenorm_hybrid": "PreNormBlock"}
GENERATOR_CLASS = "HybridUNO"
PRECISION_ALIASES = {"32": "32-true", "16": "16-mixed", "bf16": "bf16-mixed", "64": "64-true"}
ACCELERATOR_CLASSES = {
    "cpu": "CPUAccelerator",
    "gpu": "CUDAAccelerator",
    "cuda": "CUDAAccelerator",
    "mps": "MPSAccelerator",
}
MISSING = "(not recorded)"
LR_RTOL = 1e-6
RTOL = {"generator.layerscale_init": 1e-6}  # read back from a float32 parameter
# Fields that runs recorded before fnodiag wrote them lack: a missing one is not a difference.
RECORDED_LATER = (
    "generator.modes",
    "generator.layerscale_init",
    "val_loader.batch_size",
    "val_loader.drop_last",
    "train_loader.drop_last",
    "best_checkpoint.monitor",
    "best_checkpoint.mode",
    "frames.every",
)


@lru_cache(maxsize=64)
def generator_parameters(model_cfg, N: int) -> int:
    """Parameter count of the generator ``model_cfg`` builds at size N (built on the meta device: no memory)."""
    with torch.device("meta"):
        return count_parameters(build_model(model_cfg, N))


def expected_effective(cfg: RunConfig, *, n_groups: int = 1, resumed: bool = False) -> dict[str, Any]:
    """What ``effective_config.json`` must record for ``cfg``: ``{field path: value}``.

    Parameters
    ----------
    cfg : RunConfig
        What the run asked for (its ``config.json``).
    n_groups : int
        Optimizer parameter groups recorded (every group is checked).
    resumed : bool
        The run continued from a checkpoint: the start-of-training LR is then that of a later
        epoch, so ``param_groups[i].lr`` is left to :func:`lr_differences`.

    Returns
    -------
    dict
        Paths into the effective configuration (``a.b[0].c``) and the values they must hold.
        ``optimizer.param_groups[i].initial_lr`` is the base LR (read from ``lr`` when the
        record has no ``initial_lr``: a constant or plateau schedule).
    """
    o, s, t = cfg.optim, cfg.schedule, cfg.train
    frozen = s.frozen and s.name != "constant"  # a constant schedule has nothing to freeze
    spec = OPTIMIZERS.get(o.name)
    if spec is None:  # a run of an optimizer no longer registered: nothing to expect but its name
        exp: dict[str, Any] = {"optimizer.class": f"(unregistered optimizer {o.name!r})"}
        kwargs = {}
    else:
        exp = {"optimizer.class": spec.cls.__name__}
        kwargs = jsonable(spec.torch_kwargs(o))
    for i in range(max(1, n_groups)):
        g = f"optimizer.param_groups[{i}]"
        exp[f"{g}.initial_lr"] = o.lr
        start = expected_lr(s, o.lr, 0, t.epochs)
        if start is not None and not resumed:
            exp[f"{g}.lr"] = start
        exp.update({f"{g}.{key}": value for key, value in kwargs.items()})
    exp.update(
        {
            "scheduler.name": s.name,
            "scheduler.class": SCHEDULER_CLASSES[s.name],
            "scheduler.frozen": frozen,
            "scheduler.stepped_by": "lightning" if s.name != "constant" and not frozen else None,
            "scheduler.interval": "epoch" if s.name != "constant" and not frozen else None,
        }
    )
    if s.name == "warmup_cosine":
        exp.update(
            {
                "scheduler.warmup_epochs": s.warmup_epochs,
                "scheduler.min_lr_ratio": s.min_lr_ratio,
                "scheduler.total_epochs": t.epochs,
            }
        )
    elif s.name == "exponential":
        exp["scheduler.gamma"] = s.gamma
    elif s.name == "step":
        exp.update({"scheduler.step_size": s.step_size, "scheduler.gamma": s.step_gamma})
    elif s.name == "plateau":
        exp.update({"scheduler.factor": s.plateau_factor, "scheduler.patience": s.plateau_patience})
    exp.update(
        {
            "grad_clip.algorithm": cfg.clip.algorithm,
            "grad_clip.value": None if cfg.clip.algorithm == "none" else cfg.clip.value,
            "forward_gain": t.forward_gain,
            "generator.class": GENERATOR_CLASS,
            "generator.block_class": BLOCK_CLASSES.get(cfg.model.arch),
            "generator.parameters": generator_parameters(cfg.model, cfg.data.N),
            "generator.spectral_layout": cfg.model.spectral_layout,
            "generator.modes": cfg.model.modes,
            "generator.channels[0]": cfg.model.width,
            "seed": t.seed,
            "data.key": dataset_key(cfg.data),
            "data.N": cfg.data.N,
            "data.set_phi": cfg.data.set_phi,
            "precision": PRECISION_ALIASES.get(t.precision, t.precision),
            "loss.name": t.loss,
            "max_epochs": t.epochs,
            "batch_size": t.batch_size,
            # the live loaders: the validation batch follows train.val_batching (the training batch
            # under the batch gain); the train loader keeps its partial batch only when asked
            "infer_batch_size": val_batch_size(t),
            "val_loader.batch_size": val_batch_size(t),
            "val_loader.drop_last": False,
            "train_loader.drop_last": not t.keep_partial_batch,
            "best_checkpoint.monitor": "val/loss",
            "best_checkpoint.mode": "min",
            "num_workers": t.num_workers,
            "capture.every": t.capture_every,
            "frames.every": t.frame_every,
        }
    )
    if cfg.model.arch != "hybrid" and not resumed:  # the control block has no LayerScale
        exp["generator.layerscale_init"] = cfg.model.layerscale_init
    if t.accelerator in ACCELERATOR_CLASSES:
        exp["accelerator"] = ACCELERATOR_CLASSES[t.accelerator]
    if t.devices.isdigit():
        exp["num_devices"] = int(t.devices)
    return exp


def lookup(record: dict, path: str):
    """The value at ``path`` (``a.b[0].c``) of a nested record, or :data:`MISSING`."""
    node: Any = record
    for part in re.findall(r"[^.\[\]]+|\[\d+\]", path):
        if part.startswith("["):
            i = int(part[1:-1])
            if not isinstance(node, list) or i >= len(node):
                return MISSING
            node = node[i]
        elif isinstance(node, dict) and part in node:
            node = node[part]
        else:
            return MISSING
    return node


def same(asked, got, rtol: float = 1e-9) -> bool:
    """Equal, floats to a relative ``rtol`` (JSON keeps them exactly), lists elementwise."""
    if isinstance(asked, (list, tuple)) and isinstance(got, (list, tuple)):
        return len(asked) == len(got) and all(same(a, g, rtol) for a, g in zip(asked, got))
    if isinstance(asked, bool) or isinstance(got, bool):
        return asked is got or (isinstance(asked, bool) and isinstance(got, bool) and asked == got)
    if isinstance(asked, (int, float)) and isinstance(got, (int, float)):
        return math.isclose(asked, got, rel_tol=rtol, abs_tol=1e-15)
    return asked == got


def compare_effective(expected: dict[str, Any], effective: dict) -> list[dict]:
    """Every field of ``expected`` that ``effective`` records otherwise: ``[{field, asked, got}]``.

    The base LR is read from ``initial_lr`` and, when the record has none (no LR scheduler wraps
    the optimizer), from ``lr``.
    """
    out = []
    for path, asked in expected.items():
        got = lookup(effective, path)
        if got is MISSING and path.endswith(".initial_lr"):
            path, got = path[: -len("initial_lr")] + "lr", lookup(effective, path[: -len("initial_lr")] + "lr")
        if got is MISSING and path in RECORDED_LATER:
            continue
        if not same(asked, got, RTOL.get(path, 1e-9)):
            out.append({"field": path, "asked": asked, "got": got})
    return out


def lr_differences(
    cfg: RunConfig, epoch: Sequence[int], lr: Sequence[float], step: Sequence[int] | None = None
) -> dict | None:
    """The realised per-step LR against the schedule's formula; None when they agree (or no formula).

    Parameters
    ----------
    cfg : RunConfig
    epoch, lr : (STEP,) int / float
        The 0-based epoch and the LR in effect of every recorded optimizer step (the store's
        ``lr`` scalar); ``step`` (STEP,) int, optional, the steps for the message.

    Returns
    -------
    dict or None
        ``{"field": "lr per step", "asked", "got", "step", "epoch", "n_differ", "n_steps"}`` for the
        first differing step. The plateau schedule has no closed form and is not checked.
    """
    epoch, lr = np.asarray(epoch, dtype=int), np.asarray(lr, dtype=float)
    if not len(lr) or expected_lr(cfg.schedule, cfg.optim.lr, 0, cfg.train.epochs) is None:
        return None
    want = {e: expected_lr(cfg.schedule, cfg.optim.lr, int(e), cfg.train.epochs) for e in np.unique(epoch)}
    asked = np.array([want[e] for e in epoch], dtype=float)
    bad = ~np.isclose(lr, asked, rtol=LR_RTOL, atol=0.0)
    if not bad.any():
        return None
    i = int(np.argmax(bad))
    steps = np.arange(len(lr)) if step is None else np.asarray(step)
    return {
        "field": f"lr per step ({cfg.schedule.name}{', frozen' if cfg.schedule.frozen else ''})",
        "asked": float(asked[i]),
        "got": float(lr[i]),
        "step": int(steps[i]),
        "epoch": int(epoch[i]),
        "n_differ": int(bad.sum()),
        "n_steps": int(len(lr)),
    }


def config_differences(asked: RunConfig, recorded: RunConfig) -> list[dict]:
    """Fields of a run's ``config.json`` that differ from what its definition and flags resolve to."""
    a, r = asked.to_dict(), recorded.to_dict()
    return [
        {"field": f"config.json {sec}.{k}", "asked": v, "got": r[sec][k]}
        for sec in a
        for k, v in a[sec].items()
        if not same(v, r[sec][k])
    ]


def warning(run: str, diff: dict) -> str:
    """``"<run>: <field> asked <value>, got <value>"`` (plus where, for the per-step LR)."""
    text = f"{run}: {diff['field']} asked {diff['asked']!r}, got {diff['got']!r}"
    if "n_differ" in diff:
        text += f" at step {diff['step']} (epoch {diff['epoch']}); {diff['n_differ']} of {diff['n_steps']} steps differ"
    return text


def audit_run(run, asked: RunConfig | None = None, *, lr: bool = True) -> list[str]:
    """Warnings for one run directory: effective configuration, realised LR, config.json vs ``asked``.

    Parameters
    ----------
    run : fnodiag.runs.RunDir
    asked : RunConfig, optional
        What the run's sweep definition and flags resolve to; compared with ``config.json`` when
        given. The effective record and the LR are compared with ``config.json``.
    lr : bool
        Also compare the realised per-step LR, read from the run's store (False: the JSON records
        only, no store opened; the dashboard's list of many runs).

    Returns
    -------
    list of str
        Empty for a run that trained as asked, one that has no records yet, or one fnodiag did not
        train (imported from the reference, or any LightningModule's): nothing was asked of those.
    """
    if not run.config_path.is_file() or run.read_origin() is not None:
        return []
    recorded = run.read_config()
    name = run.path.name
    diffs = config_differences(asked, recorded) if asked is not None else []
    effective = run.read_json("effective_config.json", default={}) or {}
    if effective:
        groups = len((effective.get("optimizer") or {}).get("param_groups") or [None])
        expected = expected_effective(recorded, n_groups=groups, resumed="resumed_from" in effective)
        diffs += compare_effective(expected, effective)
    if lr and run.store_path.is_file():
        reader = StoreReader(run.store_path)
        try:
            rec = reader.scalars(LR, scope="step") if LR in reader.scalar_names() else None
        finally:
            reader.close()
        if rec is not None and len(rec):
            realised = lr_differences(recorded, rec.epoch, rec.value, rec.step)
            diffs += [realised] if realised else []
    return [warning(name, d) for d in diffs]
