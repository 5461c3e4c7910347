"""Live reconstruction frames: the probe batch's predicted amplitude and phase every M steps.

A thin callback over :mod:`fnodiag.runs.frames` (the 8-bit encoding) and
:meth:`fnodiag.runs.RunStore.log_frame` (the ``frames`` table). At train start (rank 0) it writes
the ground truth of the probe patches once (step :data:`~fnodiag.runs.store.TRUTH_STEP`); then at
every step ``s`` with ``s % every == 0``, in ``on_before_optimizer_step`` (the weights ``W_s``,
as :class:`~fnodiag.training.live_capture.LiveCapture` sees them), the generator runs once under
``inference_mode`` in eval mode on the fixed probe batch and the object's amplitude and phase go
to the store (one device-to-host transfer of ``(P, 1, N, N)`` complex values).
"""

from __future__ import annotations

import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from typing_extensions import override

from fnodiag.ptycho.simulate import extract_patches, train_permutation
from fnodiag.runs import RunStore
from fnodiag.runs.frames import amp_phase
from fnodiag.runs.store import TRUTH_STEP


class LiveFrames(Callback):
    """Write reconstruction frames of a fixed probe batch into a run's store every ``every`` steps.

    Parameters
    ----------
    store : RunStore
        The run's store (disabled on ranks > 0).
    probe : (P, 1, N, N) float32 tensor
        The generator's input: the probe patches' diffraction amplitudes.
    truth : tuple of two (P, N, N) float arrays
        Ground-truth ``(amplitude, phase)`` of the same patches (the normalised object patch).
    every : int
        Frame period in optimizer steps (>= 1).
    module : str
        Path of the generator inside the LightningModule.
    """

    def __init__(
        self,
        store: RunStore,
        probe: torch.Tensor,
        truth: tuple[np.ndarray, np.ndarray],
        *,
        every: int,
        module: str = "generator",
    ):
        if isinstance(every, bool) or int(every) < 1:
            raise ValueError(
                f"frame period must be an integer >= 1 step, got {every!r}; 0 means: do not attach LiveFrames"
            )
        amp, phase = (np.asarray(t, np.float32) for t in truth)
        if probe.ndim != 4 or amp.shape != phase.shape or amp.shape != (probe.shape[0], *probe.shape[2:]):
            raise ValueError(
                f"probe (P, 1, N, N) {tuple(probe.shape)} and truth (P, N, N) {amp.shape} / "
                f"{phase.shape} do not match; pass the truth of the probe patches"
            )
        self.store, self.probe, self.truth, self.every, self.module = store, probe, (amp, phase), int(every), module
        self.written = 0
        self._generator = None

    def describe(self) -> dict:
        """The frame settings as they run (``effective_config.json`` key ``frames``)."""
        p, _, h, w = self.probe.shape
        return {
            "every": self.every,
            "probe_batch": int(p),
            "shape": [int(h), int(w)],
            "channels": ["amp", "phase"],
            "encoding": "uint8 per image with its (lo, hi) range",
            "module": self.module,
        }

    @override
    def on_train_start(self, trainer, pl_module):
        if not trainer.is_global_zero:
            return
        self._generator = pl_module.get_submodule(self.module)
        self.probe = self.probe.to(pl_module.device)
        self.store.log_frame(TRUTH_STEP, 0, {"amp": self.truth[0], "phase": self.truth[1]}, role="truth")

    @override
    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        step = trainer.global_step
        if self._generator is None or step % self.every:
            return
        gen = self._generator
        was_training = gen.training
        gen.eval()
        try:
            with torch.inference_mode():
                obj = gen(self.probe).detach().cpu().numpy()
        finally:
            gen.train(was_training)
        amp, phase = amp_phase(obj)
        self.store.log_frame(step, trainer.current_epoch, {"amp": amp, "phase": phase})
        self.written += 1


def describe_frames(trainer) -> dict:
    """Reconstruction frames as the attached callback really writes them (period 0: none attached)."""
    live = next((cb for cb in trainer.callbacks if isinstance(cb, LiveFrames)), None)
    return {"every": 0} if live is None else live.describe()


def probe_truth(split, size: int, *, shuffled: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Ground truth ``(amplitude, phase)`` of a split's first ``size`` patches, each (size, N, N) float32.

    The amplitude is the normalised object patch (what the generator predicts; ``Y_I`` also holds
    the probe's modulus), the phase ``Y_phi``.
    """
    n = split.diffraction.shape[0]
    N = split.diffraction.shape[-1]
    order = train_permutation(n)[:size] if shuffled else None  # the train split is shuffled, the test split not
    amp = extract_patches(np.abs(split.objects), N, split.stride, order)[:size] / np.float32(split.norm_Y_I)
    return amp.astype(np.float32), np.asarray(split.Y_phi[:size], np.float32)
