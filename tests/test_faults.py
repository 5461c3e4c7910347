"""Faults and bad input (issue 26): each numbered case of the fault probe, reproduced, and what must happen.

The README's fault table lists every case with the test here that guards it.
"""

from __future__ import annotations

import shutil

import pytest
from lightning.pytorch.loggers import CSVLogger
from reference_arm import build_reference_arm

from fnodiag.cli import main
from fnodiag.interop.reference_log import read_metrics_csv
from fnodiag.runs import RunDir, StoreReader
from fnodiag.runs.names import TRAIN_LOSS


@pytest.fixture(scope="module")
def arm(tmp_path_factory):
    return build_reference_arm(tmp_path_factory.mktemp("ref") / "arm_stable_sgd")


# -- 13: a CSVLogger file whose rows carry a step but no epoch is a valid file --------------------------------------


def _csvlogger_file(root, *, with_trainer_epoch: bool):
    """A metrics.csv written by Lightning's own CSVLogger through ``log_metrics(..., step=...)`` (no Trainer)."""
    logger = CSVLogger(root, name="x")
    for step in range(4):
        logger.log_metrics({"mae_train_loss_step": 1.0 / (step + 1)}, step=step)
    if with_trainer_epoch:  # what a Trainer adds at epoch end: a row that carries the epoch
        logger.log_metrics({"mae_val_loss": 0.5, "epoch": 0}, step=3)
    logger.save()
    return root / "x" / "version_0" / "metrics.csv"


@pytest.mark.parametrize("with_trainer_epoch", [False, True], ids=["no-epoch-column", "empty-epoch-cells"])
def test_13_csvlogger_rows_without_an_epoch_are_read(tmp_path, with_trainer_epoch):
    path = _csvlogger_file(tmp_path, with_trainer_epoch=with_trainer_epoch)
    rows = read_metrics_csv(path)
    assert [(step, epoch) for step, epoch, _ in rows][:4] == [(0, 0), (1, 0), (2, 0), (3, 0)]
    assert rows[0][2] == {"mae_train_loss_step": 1.0}


def test_13_import_of_an_arm_whose_log_has_no_epochs(arm, tmp_path, capsys):
    bad = tmp_path / "arm"
    shutil.copytree(arm, bad)
    logs = bad / "lightning_logs"
    shutil.rmtree(logs)
    written = _csvlogger_file(tmp_path / "log", with_trainer_epoch=False)
    (logs / "version_0").mkdir(parents=True)
    shutil.copy(written, logs / "version_0" / "metrics.csv")
    out = tmp_path / "runs" / "imported"
    assert main(["import", str(bad), "--out", str(out), "--no-capture"]) == 0, capsys.readouterr().err
    with StoreReader(RunDir(out).store_path) as reader:
        assert reader.scalars(TRAIN_LOSS).step.tolist() == [0, 1, 2, 3]
