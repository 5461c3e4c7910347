"""``SafeCheckpoint``: a ``ModelCheckpoint`` that writes nothing once the run has diverged, so the last
good ``best.ckpt`` / ``last.ckpt`` survive."""
from __future__ import annotations

from lightning.pytorch.callbacks import ModelCheckpoint


class SafeCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` that stops saving once the system has diverged."""

    def _should_skip_saving_checkpoint(self, trainer) -> bool:
        return _diverged(trainer) or super()._should_skip_saving_checkpoint(trainer)

    def on_train_end(self, trainer, pl_module):
        # Lightning saves last.ckpt here when none was saved yet, bypassing the check above.
        if not _diverged(trainer):
            super().on_train_end(trainer, pl_module)


def _diverged(trainer) -> bool:
    return bool(getattr(trainer.lightning_module, "diverged", None))
