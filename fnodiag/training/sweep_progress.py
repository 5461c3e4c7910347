"""``SweepProgress``: one line per finished epoch across a whole sweep, with the time left."""

from __future__ import annotations

import time

import numpy as np
from lightning.pytorch.callbacks import Callback
from typing_extensions import override

from fnodiag.training.schedulers import MONITOR


def _scalar(value) -> float:
    return float(value) if value is not None else float("nan")


class SweepProgress(Callback):
    """One line per finished epoch across a whole sweep: arm, seed, epoch, losses, time left.

    The estimate of the time left is the mean epoch time so far times the epochs still to train
    in the sweep (this run's and every later run's).
    """

    def __init__(self, total_epochs: int, echo=print):
        self.remaining, self.echo = total_epochs, echo
        self.label, self.epochs = "", 0
        self._times: list[float] = []
        self._t = 0.0

    def skip(self, epochs: int) -> None:
        self.remaining -= epochs

    def start(self, label: str, epochs: int) -> None:
        self.label, self.epochs = label, epochs

    @override
    def on_train_start(self, trainer, pl_module):
        # a resumed run has fewer epochs left to train than it has in total
        self.remaining -= trainer.current_epoch

    @override
    def on_train_epoch_start(self, trainer, pl_module):
        self._t = time.perf_counter()

    @override
    def on_train_epoch_end(self, trainer, pl_module):
        self._times.append(time.perf_counter() - self._t)
        self.remaining -= 1
        left = self.remaining * float(np.mean(self._times))
        m = trainer.callback_metrics
        self.echo(
            f"{self.label}: epoch {trainer.current_epoch + 1}/{self.epochs}  train {_scalar(m.get('train/loss')):.4f}"
            f"  val {_scalar(m.get(MONITOR)):.4f}  ~{_duration(left)} left in the sweep"
        )


def _duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    return f"{seconds // 3600}h{seconds // 60 % 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"
