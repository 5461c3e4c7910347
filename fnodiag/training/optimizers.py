"""Optimizer registry: name -> factory building a torch optimizer from an ``OptimConfig``.

One parameter group holds every parameter (as in the reference, brief §5.1); what the optimizer
really holds is read back from ``optimizer.param_groups`` into the run's effective configuration.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch

from fnodiag.config import OptimConfig, check_choice
from fnodiag.runs import jsonable


def _adam(params: Iterable[torch.nn.Parameter], cfg: OptimConfig) -> torch.optim.Optimizer:
    """Adam with coupled L2 weight decay."""
    return torch.optim.Adam(params, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), weight_decay=cfg.weight_decay)


def _adamw(params: Iterable[torch.nn.Parameter], cfg: OptimConfig) -> torch.optim.Optimizer:
    """AdamW with decoupled weight decay."""
    return torch.optim.AdamW(params, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), weight_decay=cfg.weight_decay)


def _sgd(params: Iterable[torch.nn.Parameter], cfg: OptimConfig) -> torch.optim.Optimizer:
    """SGD with momentum; Nesterov defaults to ``momentum > 0`` when not set."""
    nesterov = cfg.momentum > 0 if cfg.nesterov is None else cfg.nesterov
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, nesterov=nesterov, weight_decay=cfg.weight_decay)


OPTIMIZERS: dict[str, Callable[[Iterable[torch.nn.Parameter], OptimConfig], torch.optim.Optimizer]] = {
    "adam": _adam,
    "adamw": _adamw,
    "sgd": _sgd,
}


def build_optimizer(params: Iterable[torch.nn.Parameter], cfg: OptimConfig) -> torch.optim.Optimizer:
    """Build the optimizer named by ``cfg.name`` after validating ``cfg``.

    Raises
    ------
    ValueError
        Unknown name (lists the valid ones) or an out-of-range hyperparameter (names the field).
    """
    cfg.validate()
    check_choice("optim", "name", cfg.name, OPTIMIZERS)
    return OPTIMIZERS[cfg.name](params, cfg)


def optimizer_class(name: str) -> str:
    """The torch class the registry builds for ``name`` (``"adamw"`` -> ``"AdamW"``), read from a built one."""
    check_choice("optim", "name", name, OPTIMIZERS)
    return type(OPTIMIZERS[name]([torch.nn.Parameter(torch.zeros(1))], OptimConfig(name=name))).__name__


def describe_optimizer(optimizer: torch.optim.Optimizer) -> dict:
    """What an optimizer really holds: its class and every param-group hyperparameter.

    Returns
    -------
    dict
        ``{"class": "Adam", "param_groups": [{"lr": ..., "betas": [...], ...}, ...]}`` with JSON-safe
        values (tuples become lists, tensors become floats) and the parameter count of each group.
    """
    groups = []
    for group in optimizer.param_groups:
        entry = {}
        for key, value in group.items():
            if key == "params":
                entry["n_tensors"] = len(value)
                entry["n_parameters"] = int(sum(p.numel() for p in value))
                continue
            entry[key] = jsonable(value)
        groups.append(entry)
    return {"class": type(optimizer).__name__, "module": type(optimizer).__module__, "param_groups": groups}
