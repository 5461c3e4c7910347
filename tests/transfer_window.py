"""A Lightning callback that counts host transfers (the ``count_transfers`` fixture) over a window of training steps."""

from __future__ import annotations

from lightning.pytorch.callbacks import Callback


class TransferWindow(Callback):
    """Counts .cpu() / .item() / .tolist() / .numpy() calls from step ``first``'s start to step ``last``'s end.

    Put it after the callbacks under test: its ``on_train_batch_end`` then runs after theirs.
    ``counts`` holds the calls made inside the window (None until the window closed).
    """

    def __init__(self, count_transfers, first: int, last: int):
        self.count_transfers, self.first, self.last = count_transfers, first, last
        self.calls: dict | None = None
        self.counts: dict | None = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.first and self.calls is None:
            self.calls = self.count_transfers(strict=True)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step - 1 == self.last and self.calls is not None and self.counts is None:
            self.counts = dict(self.calls)
