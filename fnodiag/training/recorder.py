"""The run recorder: a thin Lightning callback that records what really trains into the run directory and its store.

``RunRecorder`` drives the run writer (:class:`fnodiag.runs.writer.RunWriter`, the one every run
uses) on rank 0 only:

* ``effective_config.json`` at train start, read from the live Trainer, optimizer, scheduler
  and generator (never from the requested configuration);
* per step: the learning rate in effect, the loss, the global gradient norm before and after
  clipping (from the system's :class:`~fnodiag.training.step_record.StepRecord`, device tensors
  handed over as they are) and the step's batch size (``train/batch_size``: a kept partial batch
  shows as one smaller step per epoch); ``grad/clipped`` is derived by the writer. No step reads a
  tensor: the writer brings the buffered steps to the host in one transfer per flush, every
  ``flush_every`` steps (:data:`~fnodiag.runs.writer.FLUSH_EVERY`), at a live capture (in the
  capture's own transfer), at the last batch of every epoch and at the end. A killed process loses
  at most the unflushed steps;
* per epoch: ``history.json`` (train/val loss, lr, clip fraction, ...), epoch scalars, status;
* the final status: finished, diverged (with the step), failed or interrupted
  (:func:`fnodiag.runs.states.final_state`);
* while running, a heartbeat (:class:`~fnodiag.runs.Heartbeat`), so a reader can tell a dead
  process from a live one.

Divergence is found without a per-step host sync: a flush that meets a non-finite loss stops the
run (``trainer.should_stop``), marks the system (``pl_module.diverged``, so
:class:`~fnodiag.training.checkpointing.SafeCheckpoint` writes nothing more) and files the run as
``diverged`` at the first non-finite step, whose records and later ones are not written. Up to
``flush_every - 1`` further steps (never past the epoch's last batch, which always flushes before
validation and checkpointing) run on the non-finite weights before the stop; the last good
checkpoint is the one of the last epoch that ended before the divergence.
"""

from __future__ import annotations

import math
import os
import time

import numpy as np
from lightning.pytorch.callbacks import Callback
from typing_extensions import override

from fnodiag.config import reference_quirks
from fnodiag.runs import RunDir, RunStore
from fnodiag.runs.names import BATCH_SIZE, GRAD_CLIPPED, GRAD_NORM_POST, GRAD_NORM_PRE, LR, TRAIN_LOSS
from fnodiag.runs.writer import FLUSH_EVERY, RunWriter
from fnodiag.training.data import describe_loader
from fnodiag.training.describe import describe_best_checkpoint, describe_clipping, describe_generator
from fnodiag.training.live_capture import LiveCapture
from fnodiag.training.live_frames import describe_frames
from fnodiag.training.optimizers import describe_optimizer
from fnodiag.training.schedulers import MONITOR, describe_scheduler

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
    """Writes the run's effective configuration, per-step scalars, history and status (see the module docstring).

    Parameters
    ----------
    run : RunDir
    store : RunStore
        Disabled on ranks other than 0 (then the recorder writes nothing).
    data_info : dict
        Dataset key and sizes, copied into the effective configuration.
    history : dict, optional
        Per-epoch series to continue (a run resumed from a checkpoint).
    flush_every : int
        Steps between flushes of the per-step scalars.

    Attributes
    ----------
    writer : RunWriter
        The run's writer; a :class:`~fnodiag.training.live_capture.LiveCapture` given it brings the
        buffered scalars to the host in its captures' transfers.
    """

    def __init__(
        self,
        run: RunDir,
        store: RunStore,
        data_info: dict,
        history: dict | None = None,
        *,
        flush_every: int = FLUSH_EVERY,
    ):
        self.run, self.store, self.data_info = run, store, data_info
        self.writer = RunWriter(
            run,
            store=store,
            history=history,
            history_keys=HISTORY_KEYS,
            flush_every=flush_every,
            stop_at_divergence=True,
            enabled=store.enabled,
        )
        self._lr = math.nan
        self._epoch_lr = math.nan
        self._epoch_start = 0.0

    @property
    def history(self) -> dict[str, list]:
        """The per-epoch series written to ``history.json``."""
        return self.writer.history

    # -- start ----------------------------------------------------------------------------
    @override
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
            "flush_every": self.writer.flush_every,
            "data": self.data_info,
        }

        def stop(diverged: dict) -> None:  # a flush met a non-finite loss: stop here, keep the good checkpoints
            pl_module.diverged = diverged
            trainer.should_stop = True

        self.writer.on_diverged = stop
        self.writer.start(effective, step=trainer.global_step, epoch=trainer.current_epoch)

    # -- steps ----------------------------------------------------------------------------
    @override
    def on_train_epoch_start(self, trainer, pl_module):
        self._epoch_start = time.perf_counter()
        self._epoch_lr = trainer.optimizers[0].param_groups[0]["lr"]

    @override
    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._lr = trainer.optimizers[0].param_groups[0]["lr"]

    @override
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        record = pl_module.step_record  # fnodiag.training.step_record: filled by the system during the step
        if not record.complete() or not trainer.is_global_zero:
            return
        self.writer.log(
            trainer.global_step - 1,  # the optimizer step just taken, 0-based
            trainer.current_epoch,
            {
                TRAIN_LOSS: record.loss,
                LR: self._lr,
                GRAD_NORM_PRE: record.grad_norm_pre,
                GRAD_NORM_POST: record.grad_norm_post,
                BATCH_SIZE: float(len(batch)),
            },
        )
        # the epoch's last batch always flushes: a divergence is found before validation and checkpoints
        if self.writer.due() or trainer.fit_loop.epoch_loop.batch_progress.is_last_batch:
            self.writer.flush()

    # -- epochs ---------------------------------------------------------------------------
    @override
    def on_train_epoch_end(self, trainer, pl_module):
        if not trainer.is_global_zero:
            return
        self.writer.flush()
        metrics = trainer.callback_metrics
        pre, clip = self.writer.epoch_values(GRAD_NORM_PRE), self.writer.epoch_values(GRAD_CLIPPED)
        epoch_values = {
            "train_loss": _scalar(metrics.get("train/loss")),
            "val_loss": _scalar(metrics.get(MONITOR)),
            "val_amp_ssim": _scalar(metrics.get("val/amp_ssim")),
            "val_phase_ssim": _scalar(metrics.get("val/phase_ssim")),
            "val_amp_mae": _scalar(metrics.get("val/amp_mae")),
            "lr": float(self._epoch_lr),
            "clip_fraction": float(np.mean(clip)) if clip else math.nan,
            "grad_norm_preclip_median": float(np.median(pre)) if pre else math.nan,
            "epoch_time_s": time.perf_counter() - self._epoch_start,
        }
        self.writer.end_epoch(
            trainer.global_step - 1,
            trainer.current_epoch,
            epoch_values,
            message=f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs} done",
        )

    # -- end ------------------------------------------------------------------------------
    @override
    def on_fit_end(self, trainer, pl_module):
        if not trainer.is_global_zero:
            self.writer.heartbeat.stop()
            return
        message = None
        if pl_module.diverged:
            d = pl_module.diverged
            message = f"non-finite loss ({d['loss']}) at step {d['step']}; kept the last good checkpoint"
        self.writer.finish(step=trainer.global_step, epoch=trainer.current_epoch, message=message)

    @override
    def teardown(self, trainer, pl_module, stage):
        self.writer.heartbeat.stop()  # whatever ended the fit, no heartbeat outlives it

    @override
    def on_exception(self, trainer, pl_module, exception):
        self.writer.heartbeat.stop()
        if not trainer.is_global_zero:
            return
        self.writer.finish(step=trainer.global_step, epoch=trainer.current_epoch, exception=exception)


def _scalar(value) -> float:
    return float(value) if value is not None else float("nan")
