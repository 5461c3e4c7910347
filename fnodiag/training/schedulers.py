"""Learning-rate schedule registry; every schedule is stepped once per epoch by Lightning.

The reference project built a WarmupCosine schedule that never stepped (brief §5.4); here the
schedules are handed to Lightning with ``interval="epoch"`` under automatic optimization, and the
realised learning rate is recorded every step, so a test can compare it with the formulas below.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from fnodiag.config import ScheduleConfig, check_choice

WARMUP_START_FACTOR = 0.1


def warmup_cosine_factor(epoch: int, *, warmup_epochs: int, total_epochs: int, min_lr_ratio: float) -> float:
    """LR multiplier of the warmup-cosine schedule at a 0-based epoch (brief §5.3).

    Linear warmup from ``0.1`` to ``1`` over ``warmup_epochs`` epochs, then cosine from ``1`` down
    to ``min_lr_ratio`` over the remaining ``max(1, total_epochs - warmup_epochs)`` epochs.
    """
    if epoch < warmup_epochs:
        return WARMUP_START_FACTOR + (1.0 - WARMUP_START_FACTOR) * epoch / warmup_epochs
    span = max(1, total_epochs - warmup_epochs)
    progress = min(epoch - warmup_epochs, span) / span
    return min_lr_ratio + 0.5 * (1.0 - min_lr_ratio) * (1.0 + math.cos(math.pi * progress))


class WarmupCosineLR(torch.optim.lr_scheduler.LambdaLR):
    """Linear warmup then cosine decay, one step per epoch (see :func:`warmup_cosine_factor`)."""

    def __init__(self, optimizer, *, warmup_epochs: int, total_epochs: int, min_lr_ratio: float):
        self.warmup_epochs, self.total_epochs, self.min_lr_ratio = warmup_epochs, total_epochs, min_lr_ratio
        super().__init__(
            optimizer,
            lambda e: warmup_cosine_factor(
                e, warmup_epochs=warmup_epochs, total_epochs=total_epochs, min_lr_ratio=min_lr_ratio
            ),
        )


def _constant(opt, cfg: ScheduleConfig, total_epochs: int):
    return None


def _warmup_cosine(opt, cfg: ScheduleConfig, total_epochs: int):
    return WarmupCosineLR(
        opt, warmup_epochs=cfg.warmup_epochs, total_epochs=total_epochs, min_lr_ratio=cfg.min_lr_ratio
    )


def _exponential(opt, cfg: ScheduleConfig, total_epochs: int):
    return torch.optim.lr_scheduler.ExponentialLR(opt, gamma=cfg.gamma)


class StepLR(torch.optim.lr_scheduler.StepLR):
    """torch's ``StepLR`` that also steps the weight decay: ``wd_gamma`` per ``step_size`` epochs.

    At epoch ``e`` every parameter group's ``weight_decay`` is its value when the schedule was built
    times ``wd_gamma ** (e // step_size)``, beside the LR's ``gamma ** (e // step_size)``; with
    ``wd_gamma = 1`` (the default) this is torch's ``StepLR``. The base weight decays are part of
    ``state_dict``, so a resumed run continues the same formula. Its purpose: with AdamW, a step that
    makes ``lr x weight_decay`` about 1 leaves every weight at ``(1 - lr wd) w - lr m/sqrt(v)``,
    of order ``lr`` whatever the gradients: a run that learned is driven into a collapse on purpose.
    """

    def __init__(self, optimizer, step_size: int, gamma: float = 0.1, wd_gamma: float = 1.0):
        # set before torch's constructor, which takes the first step
        self.wd_gamma = float(wd_gamma)
        self.base_weight_decays = [float(g.get("weight_decay", 0.0)) for g in optimizer.param_groups]
        super().__init__(optimizer, step_size=step_size, gamma=gamma)

    def step(self, epoch=None):
        """Step the LR as torch's ``StepLR``, then set each group's weight decay for the new epoch."""
        super().step(epoch)
        factor = self.wd_gamma ** (self.last_epoch // self.step_size)
        for group, base in zip(self.optimizer.param_groups, self.base_weight_decays):
            if "weight_decay" in group:
                group["weight_decay"] = base * factor


def _step(opt, cfg: ScheduleConfig, total_epochs: int):
    """LR x ``step_gamma`` (> 1 raises it) and weight decay x ``step_wd_gamma`` every ``step_size`` epochs."""
    return StepLR(opt, step_size=cfg.step_size, gamma=cfg.step_gamma, wd_gamma=cfg.step_wd_gamma)


def _plateau(opt, cfg: ScheduleConfig, total_epochs: int):
    return torch.optim.lr_scheduler.ReduceLROnPlateau(
        opt,
        mode="min",
        factor=cfg.plateau_factor,
        patience=cfg.plateau_patience,
        min_lr=cfg.plateau_min_lr,
        threshold=0.0,
    )


SCHEDULERS: dict[str, Callable] = {
    "constant": _constant,
    "warmup_cosine": _warmup_cosine,
    "exponential": _exponential,
    "plateau": _plateau,
    "step": _step,
}

MONITOR = "val/loss"


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: ScheduleConfig, total_epochs: int) -> dict | None:
    """Lightning ``lr_scheduler`` config dict for ``cfg`` (None for a constant LR)."""
    cfg.validate()
    check_choice("schedule", "name", cfg.name, SCHEDULERS)
    scheduler = SCHEDULERS[cfg.name](optimizer, cfg, total_epochs)
    if scheduler is None:
        return None
    entry = {"scheduler": scheduler, "interval": "epoch", "frequency": 1, "name": cfg.name}
    if cfg.name == "plateau":
        entry["monitor"] = MONITOR
    return entry


def expected_lr(cfg: ScheduleConfig, base_lr: float, epoch: int, total_epochs: int) -> float | None:
    """Closed-form LR of epoch ``epoch`` for schedules that have one (None for plateau).

    A frozen schedule keeps its construction-time value, the LR of epoch 0, throughout.
    """
    if cfg.frozen:
        epoch = 0
    if cfg.name == "constant":
        return base_lr
    if cfg.name == "warmup_cosine":
        return base_lr * warmup_cosine_factor(
            epoch, warmup_epochs=cfg.warmup_epochs, total_epochs=total_epochs, min_lr_ratio=cfg.min_lr_ratio
        )
    if cfg.name == "exponential":
        return base_lr * cfg.gamma**epoch
    if cfg.name == "step":
        return base_lr * cfg.step_gamma ** (epoch // cfg.step_size)
    return None


def expected_weight_decay(cfg: ScheduleConfig, base_weight_decay: float, epoch: int) -> float:
    """Closed-form weight decay of epoch ``epoch``: stepped by ``step_wd_gamma`` under ``step``, else constant."""
    if cfg.name != "step" or cfg.frozen:
        return base_weight_decay
    return base_weight_decay * cfg.step_wd_gamma ** (epoch // cfg.step_size)


def describe_scheduler(entry: dict | None) -> dict:
    """Class and settings of a live Lightning scheduler config (for the effective configuration)."""
    if entry is None:
        return {"class": None, "interval": None}
    sch = entry["scheduler"] if isinstance(entry, dict) else entry.scheduler
    get = entry.get if isinstance(entry, dict) else (lambda k, d=None: getattr(entry, k, d))
    settings = {k: v for k, v in vars(sch).items() if isinstance(v, (int, float, str, bool)) and not k.startswith("_")}
    return {
        "class": type(sch).__name__,
        "interval": get("interval"),
        "frequency": get("frequency"),
        "monitor": get("monitor"),
        **settings,
    }
