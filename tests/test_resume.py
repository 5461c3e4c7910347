"""Resume continues the same run: same batches, same per-step LR, same losses as an uninterrupted run."""

from __future__ import annotations

import signal

import numpy as np
import pytest
from lightning.pytorch.callbacks import Callback

from fnodiag.runs import StoreReader
from fnodiag.training.run import train

STEPS_PER_EPOCH = 81 // 8  # tiny train split, batch 8, drop_last


class BatchLog(Callback):
    """Records ``(global step, batch fingerprint)`` for every training batch; optionally interrupts."""

    def __init__(self, interrupt_at: int | None = None):
        self.rows: list[tuple[int, float, float]] = []
        self.interrupt_at = interrupt_at

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.interrupt_at:
            raise KeyboardInterrupt  # as Ctrl-C would, mid-epoch: Lightning's graceful shutdown
        # sum and a position-weighted sum identify which patches, in which order, make the batch
        w = np.arange(1, batch.shape[0] + 1, dtype=np.float64)
        sums = batch.double().sum(dim=(1, 2, 3)).numpy()
        self.rows.append((trainer.global_step, float(sums.sum()), float((w * sums).sum())))


@pytest.fixture(scope="module")
def straight_and_resumed(tmp_path_factory, dataset_cache, tiny_cfg):
    out = tmp_path_factory.mktemp("resume")
    cfg = tiny_cfg.override(
        {
            "train.epochs": 4,
            "schedule.name": "warmup_cosine",
            "schedule.warmup_epochs": 1,
            "schedule.min_lr_ratio": 0.05,
            "optim.name": "sgd",
            "optim.momentum": 0.9,
            "optim.lr": 3e-3,
        }
    ).validate()
    straight_log = BatchLog()
    straight = train(cfg, out, name="straight", cache_dir=dataset_cache, progress=False, extra_callbacks=[straight_log])
    first = BatchLog(interrupt_at=2 * STEPS_PER_EPOCH + 3)  # a few steps into epoch 3: those are lost
    try:  # Lightning's graceful shutdown: status via on_exception, SIGINT ignored, then exit(1)
        with pytest.raises(SystemExit):
            train(cfg, out, name="resumed", cache_dir=dataset_cache, progress=False, extra_callbacks=[first])
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    second = BatchLog()
    resumed = train(
        cfg, out, name="resumed", cache_dir=dataset_cache, progress=False, resume=True, extra_callbacks=[second]
    )
    return straight, straight_log.rows, resumed, first.rows, second.rows


@pytest.mark.slow
def test_resumed_run_sees_the_same_batches_in_the_same_order(straight_and_resumed):
    _, straight, _, first, second = straight_and_resumed
    s = 2 * STEPS_PER_EPOCH
    assert first[:s] == straight[:s]
    assert [r[0] for r in second] == list(range(s, 4 * STEPS_PER_EPOCH))  # resumed at the start of epoch 3
    np.testing.assert_array_equal(np.array(second), np.array(straight[s:]))


def test_resumed_run_has_the_same_per_step_lr_and_losses(straight_and_resumed):
    straight, _, resumed, _, _ = straight_and_resumed
    a, b = StoreReader(straight.store_path), StoreReader(resumed.store_path)
    for name in ("lr", "train/loss", "grad/norm_preclip"):
        x, y = a.scalars(name), b.scalars(name)
        np.testing.assert_array_equal(x.step, np.arange(4 * STEPS_PER_EPOCH))
        np.testing.assert_array_equal(y.step, x.step)
        np.testing.assert_allclose(y.value, x.value, rtol=1e-5, atol=1e-7, err_msg=name)
    assert len(set(np.round(a.scalars("lr").value, 12))) > 2  # the schedule really moved
    np.testing.assert_allclose(resumed.read_history()["val_loss"], straight.read_history()["val_loss"], rtol=1e-5)
    assert resumed.read_status()["state"] == "finished"
