"""The run recorder: a thin Lightning callback that records what really trains into the run directory and its store.

``RunRecorder`` writes, on rank 0 only:

* ``effective_config.json`` at train start, read from the live Trainer, optimizer, scheduler
  and generator (never from the requested configuration);
* per step to the store: the learning rate in effect, the loss, the global gradient norm before
  and after clipping, whether the step was clipped (one device-to-host transfer per step) and the
  step's batch size (``train/batch_size``: a kept partial batch shows as one smaller step per epoch);
* per epoch: ``history.json`` (train/val loss, lr, clip fraction, ...), epoch scalars, status;
* the final status: finished, diverged (with the step), failed or interrupted;
* while running, a heartbeat: the ``running`` status rewritten every few seconds from a thread
  (:class:`~fnodiag.runs.Heartbeat`), so a reader can tell a dead process from a live one.

The per-step values come from the system's explicit per-step record,
:class:`fnodiag.training.step_record.StepRecord` (``pl_module.step_record``), read once per step.
"""

from __future__ import annotations

import os
import time

import numpy as np
from lightning.pytorch.callbacks import Callback

from fnodiag.config import reference_quirks
from fnodiag.runs import Heartbeat, RunDir, RunStore
from fnodiag.runs.names import BATCH_SIZE, EPOCH, GRAD_CLIPPED, GRAD_NORM_POST, GRAD_NORM_PRE, LR, TRAIN_LOSS
from fnodiag.training.data import describe_loader
from fnodiag.training.describe import describe_best_checkpoint, describe_clipping, describe_generator, versions
from fnodiag.training.live_capture import LiveCapture
from fnodiag.training.live_frames import describe_frames
from fnodiag.training.optimizers import describe_optimizer
from fnodiag.training.schedulers import MONITOR, describe_scheduler

STATUS_EVERY_S = 2.0
HISTORY_KEYS = (
    "train_loss",
    "val_loss",
    "val_amp_ssim",
    "val_phase_ssim",
    "val_amp_mae",
    "lr",
    "clip_fraction",
    "grad_norm_preclip_median",
    "epoch_time_s",
)


def describe_capture(trainer) -> dict:
    """Live capture as the attached callback really runs it (period 0: no capture callback)."""
    live = next((cb for cb in trainer.callbacks if isinstance(cb, LiveCapture)), None)
    if live is None:
        return {"every": 0}
    return {"every": live.every, "probe_batch": int(live.probe_batch.shape[0]), "targets": live.targets or "default"}


class RunRecorder(Callback):
    """Writes the run's effective configuration, per-step scalars, history and status.

    Parameters
    ----------
    run : RunDir
    store : RunStore
        Disabled on ranks other than 0 (every call a no-op).
    data_info : dict
        Dataset key and sizes, copied into the effective configuration.
    history : dict, optional
        Per-epoch series to continue (a run resumed from a checkpoint).
    """

    def __init__(self, run: RunDir, store: RunStore, data_info: dict, history: dict | None = None):
        self.run, self.store, self.data_info = run, store, data_info
        self.history: dict[str, list] = {k: list((history or {}).get(k, [])) for k in HISTORY_KEYS}
        self._epoch_rows: list[list[float]] = []
        self._lr = float("nan")
        self._epoch_lr = float("nan")
        self._last_status = 0.0
        self._epoch_start = 0.0
        self.heartbeat = Heartbeat(lambda **f: run.write_status("running", **f))

    # -- start ----------------------------------------------------------------------------
    def on_train_start(self, trainer, pl_module):
        if not trainer.is_global_zero:
            return
        schedulers = trainer.lr_scheduler_configs
        frozen = pl_module.frozen_scheduler
        scheduler = describe_scheduler(schedulers[0] if schedulers else frozen)
        if frozen is not None:  # built (its construction-time LR applied) but never given to Lightning
            scheduler.update(interval=None, frequency=None, stepped_by=None)
        else:
            scheduler["stepped_by"] = "lightning" if schedulers else None
        effective = {
            "optimizer": describe_optimizer(trainer.optimizers[0]),
            "scheduler": {"name": pl_module.cfg.schedule.name, "frozen": frozen is not None, **scheduler},
            "forward_gain": pl_module.forward_model.gain,
            "reference_quirks": reference_quirks(pl_module.cfg),
            "grad_clip": describe_clipping(trainer, pl_module),
            "generator": describe_generator(pl_module.generator),
            "loss": {"name": pl_module.cfg.train.loss, "function": pl_module.loss_fn.__name__},
            "seed": int(os.environ.get("PL_GLOBAL_SEED", -1)),
            "device": str(pl_module.device),
            "accelerator": type(trainer.accelerator).__name__,
            "strategy": type(trainer.strategy).__name__,
            "world_size": trainer.world_size,
            "num_devices": trainer.num_devices,
            "precision": trainer.precision,
            "max_epochs": trainer.max_epochs,
            "batch_size": trainer.train_dataloader.batch_size if trainer.train_dataloader is not None else None,
            "infer_batch_size": getattr(trainer.val_dataloaders, "batch_size", None),
            "num_workers": getattr(trainer.train_dataloader, "num_workers", None),
            "capture": describe_capture(trainer),
            "frames": describe_frames(trainer),
            "steps_per_epoch": trainer.num_training_batches,
            "train_loader": describe_loader(trainer.train_dataloader) if trainer.train_dataloader is not None else None,
            "val_loader": (
                {"batching": pl_module.cfg.train.val_batching, **describe_loader(trainer.val_dataloaders)}
                if trainer.val_dataloaders is not None
                else None
            ),
            "best_checkpoint": describe_best_checkpoint(trainer),
            "data": self.data_info,
            "versions": versions(),
        }
        self.run.write_json("effective_config.json", effective)
        self.heartbeat.beat(step=trainer.global_step, epoch=trainer.current_epoch, message="training started")

    # -- steps ----------------------------------------------------------------------------
    def on_train_epoch_start(self, trainer, pl_module):
        self._epoch_rows = []
        self._epoch_start = time.perf_counter()
        self._epoch_lr = trainer.optimizers[0].param_groups[0]["lr"]

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._lr = trainer.optimizers[0].param_groups[0]["lr"]

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        record = pl_module.step_record  # fnodiag.training.step_record: filled by the system during the step
        if not record.complete() or not trainer.is_global_zero:
            return
        loss, pre, post = record.to_host()
        clipped = float(post < pre * (1 - 1e-6))
        step = trainer.global_step - 1  # the optimizer step just taken, 0-based
        self.store.log_scalars(
            step,
            trainer.current_epoch,
            {
                TRAIN_LOSS: loss,
                LR: self._lr,
                GRAD_NORM_PRE: pre,
                GRAD_NORM_POST: post,
                GRAD_CLIPPED: clipped,
                BATCH_SIZE: float(len(batch)),
            },
        )
        self._epoch_rows.append([pre, clipped])
        now = time.monotonic()
        if now - self._last_status > STATUS_EVERY_S:
            self._last_status = now
            self.heartbeat.beat(step=step, epoch=trainer.current_epoch, message="")

    # -- epochs ---------------------------------------------------------------------------
    def on_train_epoch_end(self, trainer, pl_module):
        if not trainer.is_global_zero:
            return
        metrics = trainer.callback_metrics
        rows = np.asarray(self._epoch_rows, dtype=float).reshape(-1, 2)
        epoch_values = {
            "train_loss": _scalar(metrics.get("train/loss")),
            "val_loss": _scalar(metrics.get(MONITOR)),
            "val_amp_ssim": _scalar(metrics.get("val/amp_ssim")),
            "val_phase_ssim": _scalar(metrics.get("val/phase_ssim")),
            "val_amp_mae": _scalar(metrics.get("val/amp_mae")),
            "lr": self._epoch_lr,
            "clip_fraction": float(rows[:, 1].mean()) if len(rows) else float("nan"),
            "grad_norm_preclip_median": float(np.median(rows[:, 0])) if len(rows) else float("nan"),
            "epoch_time_s": time.perf_counter() - self._epoch_start,
        }
        for key, value in epoch_values.items():
            self.history[key].append(value)
        self.store.log_scalars(
            trainer.global_step - 1,
            trainer.current_epoch,
            {f"{EPOCH}{k}": v for k, v in epoch_values.items()},
            scope="epoch",
        )
        self.store.flush()
        self.run.write_history(self.history)
        self.heartbeat.beat(
            step=trainer.global_step,
            epoch=trainer.current_epoch + 1,
            message=f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs} done",
        )

    # -- end ------------------------------------------------------------------------------
    def on_fit_end(self, trainer, pl_module):
        self.heartbeat.stop()
        self.store.flush()
        if not trainer.is_global_zero:
            return
        if pl_module.diverged:
            d = pl_module.diverged
            self.run.write_status(
                "diverged",
                step=d["step"],
                epoch=d["epoch"],
                message=f"non-finite loss ({d['loss']}) at step {d['step']}; kept the last good checkpoint",
            )
        else:
            self.run.write_status(
                "finished", step=trainer.global_step, epoch=trainer.current_epoch, message="training finished"
            )

    def teardown(self, trainer, pl_module, stage):
        self.heartbeat.stop()  # whatever ended the fit, no heartbeat outlives it

    def on_exception(self, trainer, pl_module, exception):
        self.heartbeat.stop()
        self.store.flush()
        if not trainer.is_global_zero:
            return
        state = "interrupted" if isinstance(exception, KeyboardInterrupt) else "failed"
        self.run.write_status(
            state,
            step=trainer.global_step,
            epoch=trainer.current_epoch,
            message=f"{type(exception).__name__}: {exception}"[:500],
        )


def _scalar(value) -> float:
    return float(value) if value is not None else float("nan")
