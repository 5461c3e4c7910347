"""``SafeCheckpoint``: a ``ModelCheckpoint`` that writes nothing once the run has diverged, so the last
good ``best.ckpt`` / ``last.ckpt`` survive, and keeps ``last.ckpt`` at the last epoch.

``RunCheckpointIO`` writes every checkpoint whole or not at all: into a temporary file beside it in
the run's own folder, flushed, fsynced and renamed (:func:`fnodiag.files.atomic_write`). Lightning's
own writer commits through a file in ``$TMPDIR``; on another filesystem that commit is a copy, which
a kill truncates (issue 26 case 3).
"""

from __future__ import annotations

from pathlib import Path

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import ModelCheckpoint
from typing_extensions import override

from fnodiag.files import atomic_write

TEMPORARY = ".*.tmp"  # what atomic_write leaves beside a file when killed mid-write (glob)


class RunCheckpointIO(TorchCheckpointIO):
    """Lightning's ``TorchCheckpointIO`` with an atomic write in the checkpoint's own folder."""

    @override
    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        if storage_options is not None:
            raise TypeError("RunCheckpointIO.save_checkpoint takes no storage_options")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda fh: torch.save(checkpoint, fh))


class SafeCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` that stops saving once the system has diverged and keeps ``last.ckpt`` current.

    Lightning 2.6 writes ``last.ckpt`` only in a step where a top-k checkpoint was saved too
    (``save_last=True``: "a copy whenever a checkpoint file gets saved"), so with ``save_top_k=1``
    on the validation loss ``last.ckpt`` stayed at the best epoch once the loss stopped improving:
    the "last weights" metrics were the best weights' and a run that learned then collapsed looked
    healthy. Here ``last.ckpt`` is written at the end of every epoch's checkpoint hook.
    """

    @override
    def _should_skip_saving_checkpoint(self, trainer) -> bool:
        return _diverged(trainer) or super()._should_skip_saving_checkpoint(trainer)

    def _save_last_now(self, trainer) -> None:
        if self.save_last and self._last_global_step_saved != trainer.global_step:  # top-k (and last) not saved now
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    @override
    def on_validation_end(self, trainer, pl_module):
        active = not self._should_skip_saving_checkpoint(trainer) and not self._should_save_on_train_epoch_end(trainer)
        super().on_validation_end(trainer, pl_module)
        if active:
            self._save_last_now(trainer)

    @override
    def on_train_epoch_end(self, trainer, pl_module):
        active = not self._should_skip_saving_checkpoint(trainer) and self._should_save_on_train_epoch_end(trainer)
        super().on_train_epoch_end(trainer, pl_module)
        if active:
            self._save_last_now(trainer)

    @override
    def on_train_end(self, trainer, pl_module):
        # Lightning saves last.ckpt here when none was saved yet, bypassing the check above.
        if not _diverged(trainer):
            super().on_train_end(trainer, pl_module)


def _diverged(trainer) -> bool:
    return bool(getattr(trainer.lightning_module, "diverged", None))
