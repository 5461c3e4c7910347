"""Exact resume: the random-number state travels in the checkpoint.

A run seeds every generator once (``lightning.seed_everything``) and then draws from the global
generators as it trains: the train DataLoader's ``RandomSampler`` draws its shuffle seed from the
torch generator at the start of each epoch, DataLoader workers derive their seeds from it, and
augmentations (none today) would use numpy / Python ``random``. A run resumed from
``last.ckpt`` is seeded again with the run seed, so without the saved state its remaining epochs
would replay the first epochs' shuffle.

:class:`RngState` is a thin callback: it puts :func:`collect_rng_states` (torch CPU, every CUDA
device, numpy, Python) into each checkpoint it writes (``checkpoint["callbacks"]["RngState"]``)
and, when Lightning restores a checkpoint at fit start, hands the saved states to
:func:`set_rng_states`. With it, ``N`` epochs straight and ``k`` epochs + interruption + resume
give the same batches in the same order, the same per-step learning rate and the same losses
(to float tolerance on CPU). Checkpoints written before this callback existed carry no state;
they resume with the run seed, as before.
"""

from __future__ import annotations

import random

import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from typing_extensions import override


def collect_rng_states() -> dict:
    """The state of every global random generator a run draws from.

    Returns
    -------
    dict
        ``{"torch": ByteTensor, "cuda": [ByteTensor per device] (only when CUDA is initialised),
        "numpy": numpy's state tuple as a list, "python": random.getstate() as a list}``; all
        values are plain tensors, lists, strings and ints, so ``torch.load(weights_only=True)``
        reads them back.
    """
    np_state = np.random.get_state()
    states = {
        "torch": torch.get_rng_state(),
        "numpy": [np_state[0], torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)), *map(_plain, np_state[2:])],
        "python": _plain(random.getstate()),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict) -> None:
    """Restore the generators from :func:`collect_rng_states`'s dict (missing keys are left alone)."""
    if "torch" in states:
        torch.set_rng_state(torch.as_tensor(states["torch"], dtype=torch.uint8).cpu())
    if "cuda" in states and torch.cuda.is_available():
        cuda = list(states["cuda"])
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all([torch.as_tensor(s, dtype=torch.uint8).cpu() for s in cuda])
    if "numpy" in states:
        kind, keys, *rest = states["numpy"]
        np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), *rest))
    if "python" in states:
        version, internal, gauss = states["python"]
        random.setstate((version, tuple(internal), gauss))


def _plain(value):
    """Tuples to lists, numpy scalars to Python numbers (for the checkpoint's safe unpickler)."""
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    return value.item() if isinstance(value, np.generic) else value


class RngState(Callback):
    """Saves the global RNG states in every checkpoint and restores them on resume.

    The state is taken when the checkpoint is written (end of an epoch, after validation), which
    is exactly the state the next epoch of an uninterrupted run starts from.
    """

    @override
    def state_dict(self) -> dict:
        return {"rng": collect_rng_states()}

    @override
    def load_state_dict(self, state_dict: dict) -> None:
        if state_dict.get("rng"):
            set_rng_states(state_dict["rng"])
