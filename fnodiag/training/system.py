"""The Lightning "system": a registry generator trained through the physics forward model.

Automatic optimization throughout, so Lightning steps the LR schedule and calls
``configure_gradient_clipping`` every step. The system keeps the per-step values the recorder
callback writes (loss, global gradient norm before and after clipping) as device tensors in an
explicit per-step record, ``step_record`` (:mod:`fnodiag.training.step_record`: fresh at each batch
start, filled by ``training_step`` and ``configure_gradient_clipping``); it never synchronises
with the host during a step. A non-finite loss is found by the recorder when it flushes the
buffered steps (:mod:`fnodiag.training.recorder`), which then sets :attr:`ReconstructionSystem.diverged`
and stops the run: no per-step check reads the loss.
"""

from __future__ import annotations

import lightning as L
import numpy as np
import torch
from typing_extensions import override

from fnodiag.config import RunConfig
from fnodiag.models import build_model
from fnodiag.ptycho.forward import ForwardModel, get_loss
from fnodiag.ptycho.metrics import evaluate_patches
from fnodiag.training.clipping import adaptive_clip_, clip_norm_, clip_value_, global_grad_norm
from fnodiag.training.optimizers import build_optimizer
from fnodiag.training.schedulers import MONITOR, build_scheduler
from fnodiag.training.step_record import StepRecord


class ReconstructionSystem(L.LightningModule):
    """Generator ``G`` + forward model ``F`` trained on ``loss(F(G(A_obs)), A_obs)``.

    Parameters
    ----------
    config : dict
        ``RunConfig.to_dict()``; saved in the checkpoint's hyperparameters so it can be rebuilt.
    probe : (N, N) complex64 array, optional
        The simulation probe ``P_sim``. When None (loading a checkpoint) a zero placeholder is
        created and the saved buffer overwrites it.
    """

    def __init__(self, config: dict, probe: np.ndarray | torch.Tensor | None = None):
        super().__init__()
        self.save_hyperparameters("config")
        self.cfg = RunConfig.from_dict(config)
        n = self.cfg.data.N
        self.generator = build_model(self.cfg.model, n)
        if probe is None:
            probe = torch.zeros(n, n, dtype=torch.complex64)
        self.forward_model = ForwardModel(
            torch.as_tensor(np.asarray(probe), dtype=torch.complex64), gain=self.cfg.train.forward_gain
        )
        self.loss_fn = get_loss(self.cfg.train.loss)
        self.step_record = StepRecord()
        self.diverged: dict | None = None  # {"step", "epoch", "loss"} of the first non-finite loss, set by the recorder
        self.frozen_scheduler: dict | None = None
        self.val_reference: dict | None = None
        self._val_patches: list[torch.Tensor] = []

    @override
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(BATCH, C, N, N) float32`` amplitudes → ``(BATCH, C, N, N) complex64`` object."""
        return self.generator(x)

    def physics_loss(self, x: torch.Tensor) -> torch.Tensor:
        """Loss of the generator's object through the forward model against the measurement ``x``."""
        return self.loss_fn(self.forward_model(self.generator(x)), x)

    @override
    def on_train_batch_start(self, batch, batch_idx):
        self.step_record = StepRecord()  # each step starts empty (step 1 of fnodiag.training.step_record)

    @override
    def training_step(self, batch, batch_idx):
        # No finiteness check here (it would read the loss on the host every step): the recorder
        # finds a non-finite loss at its next flush and stops the run then (fnodiag.training.recorder).
        loss = self.physics_loss(batch)
        self.step_record.loss = loss.detach()
        self.log(
            "train/loss", loss, on_step=False, on_epoch=True, prog_bar=True, sync_dist=True, batch_size=batch.shape[0]
        )
        return loss

    def set_val_reference(self, obj: np.ndarray, *, grid: int, stride: int, norm: float) -> None:
        """Score test image 0 every epoch (``val/amp_ssim``, ``val/phase_ssim``, ``val/amp_mae``) against ``obj``.

        These scores never pass through the forward model, so unlike the validation loss they do
        not depend on the batch gain (``train.forward_gain='batch'``) or the validation batch size.

        Parameters
        ----------
        obj : (S, S) complex64
            The raw test object 0; its ``grid**2`` patches come first in the validation set.
        """
        self.val_reference = {"obj": obj, "grid": grid, "stride": stride, "norm": norm}

    @override
    def validation_step(self, batch, batch_idx):
        obj = self.generator(batch)
        loss = self.loss_fn(self.forward_model(obj), batch)
        self.log(MONITOR, loss, on_step=False, on_epoch=True, prog_bar=True, sync_dist=True, batch_size=batch.shape[0])
        ref = self.val_reference
        if ref is not None and self.trainer.world_size == 1:  # sharded validation cannot be stitched
            need = ref["grid"] ** 2 - sum(len(p) for p in self._val_patches)
            if need > 0:
                self._val_patches.append(obj[:need, 0].detach().cpu())
        return loss

    @override
    def on_validation_epoch_end(self):
        patches, self._val_patches = self._val_patches, []
        ref = self.val_reference
        if ref is None or sum(len(p) for p in patches) < ref["grid"] ** 2:
            return
        scores = evaluate_patches(
            torch.cat(patches).numpy(),
            ref["obj"],
            N=self.cfg.data.N,
            stride=ref["stride"],
            grid=ref["grid"],
            norm=ref["norm"],
        )
        self.log("val/amp_ssim", scores["amp_ssim"])
        self.log("val/phase_ssim", scores["phase_ssim"])
        self.log("val/amp_mae", scores["amp_mae"])

    @override
    def configure_optimizers(self):
        """The optimizer and its schedule, handed to Lightning to step once per epoch.

        With ``schedule.frozen`` (a reference quirk, brief §5.4) the schedule is built (so it sets
        its construction-time LR, e.g. 0.1·lr for warmup_cosine) but not handed to Lightning, so
        it never steps, as in the reference's manual-optimization runs.
        """
        optimizer = build_optimizer(self.parameters(), self.cfg.optim)
        scheduler = build_scheduler(optimizer, self.cfg.schedule, self.cfg.train.epochs)
        if scheduler is not None and self.cfg.schedule.frozen:
            self.frozen_scheduler, scheduler = scheduler, None
        if scheduler is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": scheduler}

    @override
    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None):
        """Clip as configured and keep the global gradient norm before and after clipping.

        The 'norm' and 'value' thresholds arrive from the Trainer (``gradient_clip_val`` /
        ``gradient_clip_algorithm``), 'agc' from the run's configuration; the maths is in
        :mod:`fnodiag.training.clipping`.
        """
        params = [p for p in self.parameters() if p.grad is not None]
        pre = global_grad_norm(params)
        algorithm = self.cfg.clip.algorithm
        if algorithm == "agc":
            adaptive_clip_(self.generator, self.cfg.clip.value)
        elif gradient_clip_val and str(getattr(gradient_clip_algorithm, "value", gradient_clip_algorithm)) == "value":
            clip_value_(params, gradient_clip_val)
        elif gradient_clip_val:
            clip_norm_(params, gradient_clip_val, pre)
        post = global_grad_norm(params) if algorithm != "none" else pre
        self.step_record.grad_norm_pre = pre
        self.step_record.grad_norm_post = post

    @torch.no_grad()
    def predict_objects(self, x: torch.Tensor, batch_size: int) -> np.ndarray:
        """Run the generator over ``x`` in batches.

        Parameters
        ----------
        x : (N_PATCH, C, N, N) float32
        batch_size : int

        Returns
        -------
        (N_PATCH, N, N) complex64 numpy array (channel 0).
        """
        was_training = self.generator.training
        self.generator.eval()
        out = [self.generator(x[i : i + batch_size].to(self.device))[:, 0].cpu() for i in range(0, len(x), batch_size)]
        self.generator.train(was_training)
        return torch.cat(out).numpy()
