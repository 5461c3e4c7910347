"""Torch datasets and the LightningDataModule over a simulated grid_lines dataset.

The generator's input and the physics loss's target are the same measured amplitudes
``A_obs`` (unsupervised, brief §2): a batch is one ``(BATCH, C, N, N) float32`` tensor.
Training uses the train split (shuffled, full batches only unless ``keep_partial_batch``);
validation uses the test split in raster order, its partial last batch kept, as the reference did
(its "val loss" is a test-split physics loss, brief §2.3).

Batch sizes matter under the reference's batch gain (``train.forward_gain='batch'``, brief §2.2):
every prediction is multiplied by the size of the batch it is computed in, so

* a kept partial *training* batch of ``r = n_train mod B`` samples trains once per epoch at gain
  ``r`` instead of ``B`` (a reference condition, ``train.keep_partial_batch``);
* validation at a batch size ``B_val != B`` scales every prediction by ``B_val / B`` relative to
  what training calibrated, and the partial last validation batch (``r = n_test mod B_val``) by
  ``r / B``. :func:`fnodiag.config.val_batch_size` therefore validates at the training batch size under the gain
  (``train.val_batching='auto'``), which reproduces the reference's validation batches, partial
  last batch included.
"""

from __future__ import annotations

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from typing_extensions import override

from fnodiag.ptycho.simulate import GridLinesData


def describe_loader(loader: DataLoader) -> dict:
    """What a live DataLoader really serves per epoch.

    Returns
    -------
    dict
        ``batch_size``, ``drop_last``, ``n_samples``, ``num_batches`` (per epoch) and
        ``last_batch_size`` (the size of the epoch's final batch: the partial one when kept).
    """
    n, bs = len(loader.dataset), int(loader.batch_size)
    full, rest = divmod(n, bs)
    if loader.drop_last:
        last = bs if full else 0
    else:
        last = rest or bs if n else 0
    return {
        "batch_size": bs,
        "drop_last": bool(loader.drop_last),
        "n_samples": n,
        "num_batches": len(loader),
        "last_batch_size": last,
    }


class AmplitudeDataset(Dataset):
    """Diffraction amplitudes of one split as ``(C=1, N, N) float32`` items.

    Parameters
    ----------
    diffraction : (N_PATCH, N, N) float32 array
    """

    def __init__(self, diffraction: np.ndarray):
        if diffraction.ndim != 3 or diffraction.shape[1] != diffraction.shape[2]:
            raise ValueError(f"diffraction must have shape (n, N, N), got {diffraction.shape}")
        self.x = torch.from_numpy(np.ascontiguousarray(diffraction, dtype=np.float32)).unsqueeze(1)

    def __len__(self) -> int:
        return self.x.shape[0]

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.x[i]


class GridLinesDataModule(L.LightningDataModule):
    """Train / validation loaders over a :class:`~fnodiag.ptycho.simulate.GridLinesData`.

    Parameters
    ----------
    data : GridLinesData
    batch_size : int
        Training batch size; the last partial batch is dropped (every step sees ``batch_size``)
        unless ``keep_partial_batch``.
    infer_batch_size : int
        Validation batch size (see :func:`fnodiag.config.val_batch_size`); the partial last batch is kept.
    num_workers : int
    keep_partial_batch : bool
        Keep the train loader's last partial batch (the reference's loader did, brief §2.2).
    """

    def __init__(
        self,
        data: GridLinesData,
        *,
        batch_size: int,
        infer_batch_size: int,
        num_workers: int = 0,
        keep_partial_batch: bool = False,
    ):
        super().__init__()
        n_train = len(data.train.diffraction)
        if batch_size > n_train:
            raise ValueError(
                f"batch_size={batch_size} is larger than the train split ({n_train} patches); "
                "lower --batch-size or simulate more data"
            )
        self.data = data
        self.batch_size, self.infer_batch_size, self.num_workers = batch_size, infer_batch_size, num_workers
        self.keep_partial_batch = keep_partial_batch
        self.train_set = AmplitudeDataset(data.train.diffraction)
        self.val_set = AmplitudeDataset(data.test.diffraction)

    @override
    def train_dataloader(self) -> DataLoader:
        return DataLoader(
            self.train_set,
            batch_size=self.batch_size,
            shuffle=True,
            drop_last=not self.keep_partial_batch,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    @override
    def val_dataloader(self) -> DataLoader:
        return DataLoader(
            self.val_set,
            batch_size=self.infer_batch_size,
            shuffle=False,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )
