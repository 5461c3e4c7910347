"""Torch datasets and the LightningDataModule over a simulated grid_lines dataset.

The generator's input and the physics loss's target are the same measured amplitudes
``A_obs`` (unsupervised, brief §2): a batch is one ``(BATCH, C, N, N) float32`` tensor.
Training uses the train split (shuffled, full batches only); validation uses the test split in
raster order, as the reference did (its "val loss" is a test-split physics loss, brief §2.3).
"""
from __future__ import annotations

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from fnodiag.simulate import GridLinesData


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
    """Train / validation loaders over a :class:`~fnodiag.simulate.GridLinesData`.

    Parameters
    ----------
    data : GridLinesData
    batch_size : int
        Training batch size; the last partial batch is dropped (every step sees ``batch_size``).
    infer_batch_size : int
        Validation batch size (the physics is batch-size independent, so partial batches are fine).
    num_workers : int
    """

    def __init__(self, data: GridLinesData, *, batch_size: int, infer_batch_size: int, num_workers: int = 0):
        super().__init__()
        n_train = len(data.train.diffraction)
        if batch_size > n_train:
            raise ValueError(f"batch_size={batch_size} is larger than the train split ({n_train} patches); "
                             "lower --batch-size or simulate more data")
        self.data = data
        self.batch_size, self.infer_batch_size, self.num_workers = batch_size, infer_batch_size, num_workers
        self.train_set = AmplitudeDataset(data.train.diffraction)
        self.val_set = AmplitudeDataset(data.test.diffraction)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train_set, batch_size=self.batch_size, shuffle=True, drop_last=True,
                          num_workers=self.num_workers, persistent_workers=self.num_workers > 0)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, batch_size=self.infer_batch_size, shuffle=False,
                          num_workers=self.num_workers, persistent_workers=self.num_workers > 0)
