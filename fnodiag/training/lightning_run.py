"""The run folder of any LightningModule trained with ``fnodiag.LiveCapture``: what fnodiag's own recorder writes.

:class:`LightningRunWriter` is the part of :class:`~fnodiag.LiveCapture` that owns a run folder
(rank 0 only). It writes, in the store format of fnodiag's own runs:

* ``config.json`` = ``{"lightning": {"module", "hparams"}}``: not a ``RunConfig`` (the model is not
  one of fnodiag's generators); :meth:`fnodiag.runs.RunDir.read_origin` reports ``kind = "lightning"``;
* ``effective_config.json`` at train start, read from the live Trainer and optimizers: optimizer
  class and param groups, scheduler, clipping, the watched module's class and parameter count,
  the capture settings, seed, device, precision, versions;
* per optimizer step (one host transfer): ``train/loss`` (the ``training_step`` output, a tensor or
  its ``"loss"`` entry), ``lr`` (first param group of the first optimizer; ``lr/<i>.<j>`` for the
  others), ``grad/norm_preclip`` (global L2 norm of the LightningModule's gradients in
  ``on_before_optimizer_step``, before Lightning clips), ``grad/norm_postclip`` (after the step)
  and ``grad/clipped``;
* per epoch: ``history.json`` (``train_loss``, ``val_loss``, ``lr``) and every scalar of
  ``trainer.callback_metrics`` as ``epoch/<name>``;
* ``status.json``: running (heartbeat), then finished / failed / interrupted.
"""

from __future__ import annotations

import os
import time

import torch
from lightning.fabric.utilities.rank_zero import rank_zero_only

from fnodiag.runs import Heartbeat, RunDir, RunStore, jsonable
from fnodiag.runs.names import EPOCH, GRAD_CLIPPED, GRAD_NORM_POST, GRAD_NORM_PRE, LR, TRAIN_LOSS
from fnodiag.training.clipping import global_grad_norm

STATUS_EVERY_S = 2.0
HISTORY_KEYS = ("train_loss", "val_loss", "lr")


def _loss_key(metrics, part: str) -> str | None:
    """First metric name holding ``part`` and "loss" (the reference's history rule), else None."""
    return next((k for k in metrics if part in k.lower() and "loss" in k.lower()), None)


class LightningRunWriter:
    """Writes a foreign LightningModule's run folder (see the module docstring).

    Parameters
    ----------
    run : RunDir
        Must not exist yet or be empty; checked here (on rank 0), created at fit start.

    Raises
    ------
    FileExistsError
        The folder already holds files (nothing there is touched).
    """

    def __init__(self, run: RunDir):
        rank0 = rank_zero_only.rank == 0  # DDP re-runs the script on other ranks after rank 0 made the folder
        if rank0 and run.path.exists() and (not run.path.is_dir() or any(run.path.iterdir())):
            raise FileExistsError(
                f"LiveCapture run folder {str(run.path)!r} already exists and is not empty; "
                "choose a new folder for this run"
            )
        self.run = run
        self.store: RunStore | None = None
        self.history: dict[str, list] = {k: [] for k in HISTORY_KEYS}
        self._module = None
        self._pre = None
        self._lrs: dict[str, float] = {}
        self._last_status = 0.0
        self.heartbeat = Heartbeat(lambda **f: self.run.write_status("running", **f))  # as fnodiag's own runs

    def open(self, pl_module) -> RunStore:
        """Create the folder, write ``config.json`` and open the store (rank 0, fit start)."""
        self._module = pl_module
        cls = type(pl_module)
        self.run.checkpoints_dir.mkdir(parents=True, exist_ok=True)
        self.run.write_json(
            "config.json",
            {
                "lightning": {
                    "module": f"{cls.__module__}.{cls.__qualname__}",
                    "hparams": jsonable(dict(getattr(pl_module, "hparams", {}))),
                }
            },
        )
        self.store = self.run.open_store()
        return self.store

    def start(self, trainer, pl_module, watched, capture: dict) -> None:
        """``effective_config.json`` from the live Trainer, and status running."""
        from fnodiag.training.describe import versions
        from fnodiag.training.optimizers import describe_optimizer
        from fnodiag.training.schedulers import describe_scheduler

        schedulers = trainer.lr_scheduler_configs
        algo = trainer.gradient_clip_algorithm
        effective = {
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
            "capture": capture,
            "versions": versions(),
        }
        self.run.write_json("effective_config.json", effective)
        self.heartbeat.beat(step=0, epoch=0, message="training started")

    def batch_start(self, trainer) -> None:
        self._pre = None
        self._lrs = {}
        for i, opt in enumerate(trainer.optimizers):
            for j, group in enumerate(opt.param_groups):
                self._lrs[LR if (i, j) == (0, 0) else f"{LR}/{i}.{j}"] = float(group["lr"])

    def _grads(self) -> list[torch.Tensor]:
        return [p for p in self._module.parameters() if p.grad is not None]

    def before_step(self, watched) -> None:
        """Global gradient norm before clipping (a device tensor; no host sync here)."""
        if self.store is None:
            return
        params = self._grads()
        self._pre = global_grad_norm(params) if params else None

    def batch_end(self, trainer, outputs, watched) -> None:
        """The step's scalars in one host transfer."""
        if self.store is None:
            return
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        values = {}
        if isinstance(loss, torch.Tensor):
            values[TRAIN_LOSS] = loss.detach().float().reshape(())
        if self._pre is not None:
            params = self._grads()
            values[GRAD_NORM_PRE] = self._pre
            values[GRAD_NORM_POST] = global_grad_norm(params) if params else self._pre
        step = trainer.global_step - 1  # the optimizer step just taken, 0-based
        scalars = dict(self._lrs)
        if values:
            device = next(iter(values.values())).device
            host = torch.stack([v.to(device).float() for v in values.values()]).tolist()
            scalars.update(zip(values, host))
            if GRAD_NORM_PRE in scalars:
                pre, post = scalars[GRAD_NORM_PRE], scalars[GRAD_NORM_POST]
                scalars[GRAD_CLIPPED] = float(post < pre * (1 - 1e-6))
        if step < 0 or not scalars:
            return
        self.store.log_scalars(step, trainer.current_epoch, scalars)
        now = time.monotonic()
        if now - self._last_status > STATUS_EVERY_S:
            self._last_status = now
            self.heartbeat.beat(step=step, epoch=trainer.current_epoch, message="")

    def epoch_end(self, trainer) -> None:
        """``history.json``, ``epoch/<metric>`` scalars, status."""
        if self.store is None:
            return
        metrics = {
            k: float(v) for k, v in trainer.callback_metrics.items() if isinstance(v, torch.Tensor) and v.numel() == 1
        }
        train_key = _loss_key(metrics, "train") or ("loss" if "loss" in metrics else None)
        val_key = _loss_key(metrics, "val")
        epoch = {
            "train_loss": metrics.get(train_key, float("nan")),
            "val_loss": metrics.get(val_key, float("nan")),
            "lr": self._lrs.get(LR, float("nan")),
        }
        for key, value in epoch.items():
            self.history[key].append(value)
        step = max(trainer.global_step - 1, 0)
        self.store.log_scalars(
            step,
            trainer.current_epoch,
            {**{f"{EPOCH}{k}": v for k, v in metrics.items()}, **{f"{EPOCH}{k}": v for k, v in epoch.items()}},
            scope="epoch",
        )
        self.store.flush()
        self.run.write_history(self.history)
        self.heartbeat.beat(
            step=trainer.global_step, epoch=trainer.current_epoch + 1, message=f"epoch {trainer.current_epoch + 1} done"
        )

    def finish(self, trainer, state: str, message: str) -> None:
        self.heartbeat.stop()  # before the final state, so no heartbeat overwrites it
        if self.store is None:
            return
        self.store.flush()
        self.run.write_status(state, step=trainer.global_step, epoch=trainer.current_epoch, message=message)

    def close(self) -> None:
        self.heartbeat.stop()
        if self.store is not None:
            self.store.close()
            self.store = None
