"""The store's scalar names: the one spelling every writer and every reader of ``run.sqlite`` uses.

Per-step scalars (``scope="step"``) are named below; a per-epoch scalar (``scope="epoch"``) is
``epoch/<history key>`` (:func:`epoch`), e.g. ``epoch/val_loss`` beside ``history.json``'s
``val_loss``. Other scalars a writer logs (``lr/<i>.<j>`` for more param groups, any name a user
logs through ``fnodiag.watch``) are stored and read the same way.
"""

from __future__ import annotations

TRAIN_LOSS = "train/loss"  # the step's training loss
LR = "lr"  # the learning rate in effect during the step (first param group)
GRAD_NORM_PRE = "grad/norm_preclip"  # global L2 norm of every gradient before clipping
GRAD_NORM_POST = "grad/norm_postclip"  # ... after clipping (equal to the above when nothing clips)
GRAD_CLIPPED = "grad/clipped"  # 1.0 when clipping changed the gradients, else 0.0
BATCH_SIZE = "train/batch_size"  # samples in the step's batch (a kept partial batch shows as one smaller step)
EPOCH = "epoch/"


def epoch(key: str) -> str:
    """The per-epoch scalar of history key ``key``: ``epoch("val_loss") == "epoch/val_loss"``."""
    return EPOCH + key


VAL_LOSS = epoch("val_loss")
VAL_AMP_SSIM = epoch("val_amp_ssim")
CLIP_FRACTION = epoch("clip_fraction")
TRAIN_LOSS_EPOCH = epoch("train_loss")
