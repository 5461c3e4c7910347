"""Live capture during training: per-layer activation statistics and gradient norms every k steps.

A thin callback over the pure statistics of :mod:`fnodiag.diagnostics.stats` and the hook
recorder of :mod:`fnodiag.diagnostics.hooks`. Every k-th optimizer step ``s`` (s = 0, k, 2k, ...):

1. in ``on_before_optimizer_step`` (after backward, before clipping and the update, weights
   ``W_s``): the generator runs once under ``no_grad`` on a fixed probe batch from the training
   data, so values compare across steps and arms; the recorder reduces every hooked output to its
   statistics on the device; per-module gradient norms (before clipping), the LayerScale /
   InstanceNorm values and a snapshot of the weights ``W_s`` (into a reused buffer) are taken;
2. in ``on_train_batch_end`` (weights ``W_{s+1}``): per-module update-to-weight ratios
   ``||W_{s+1} - W_s|| / ||W_s||`` and weight norms ``||W_s||`` from the snapshot; then
   everything for step ``s`` reaches the host in one transfer and goes to the run's store
   (rank 0 only).
"""
from __future__ import annotations

import torch
from lightning.pytorch.callbacks import Callback

from fnodiag.diagnostics.hooks import ActivationRecorder
from fnodiag.diagnostics.stats import grad_norms, scale_params, snapshot_weights, to_host, update_ratios
from fnodiag.runs import RunStore

PROBE_BATCH = 2  # samples in the fixed probe batch: a capture stays a small share of a training step


class LiveCapture(Callback):
    """Capture activations and gradient norms every ``every`` steps into ``store``.

    Parameters
    ----------
    store : RunStore
    probe_batch : (PROBE, C, N, N) float32 tensor
        Fixed inputs from the training data, the same at every capture.
    every : int
        Capture period in optimizer steps (> 0).
    targets : list of str, optional
        Module paths to hook (default :func:`~fnodiag.diagnostics.hooks.default_targets`).
    """

    def __init__(self, store: RunStore, probe_batch: torch.Tensor, every: int, targets: list[str] | None = None):
        if every < 1:
            raise ValueError(f"capture period must be >= 1 step, got {every}")
        self.store, self.probe_batch, self.every, self.targets = store, probe_batch, every, targets
        self.recorder: ActivationRecorder | None = None
        self._pending: dict | None = None
        self._snapshot: list[torch.Tensor] | None = None

    def on_train_start(self, trainer, pl_module):
        if trainer.is_global_zero:
            self.recorder = ActivationRecorder(pl_module.generator, self.targets).register()
            self.recorder.active = False
            self.probe_batch = self.probe_batch.to(pl_module.device)

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        step = trainer.global_step
        if self.recorder is None or step % self.every:
            return
        gen = pl_module.generator
        was_training = gen.training
        gen.eval()
        self.recorder.active = True
        with torch.inference_mode():
            gen(self.probe_batch)
        self.recorder.active = False
        gen.train(was_training)
        self._pending = {"step": step, "epoch": trainer.current_epoch, "activation": self.recorder.device_stats(),
                         "grad": grad_norms(gen), "scale": scale_params(gen),
                         "before": snapshot_weights(gen, out=self._snapshot)}
        self.recorder.clear()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        pending, self._pending = self._pending, None
        if pending is None:
            return
        gen = pl_module.generator
        self._snapshot = pending["before"]  # reused as the next snapshot's buffer
        # the snapshot holds W_s: its norms are the weight norms of the capture step
        ratio_names, ratios, weights = update_ratios(gen, self._snapshot, inplace=True, with_norms=True)
        grad_names, grads = pending["grad"]
        scale_names, scales = pending["scale"]
        host = to_host({**pending["activation"], "grad": grads, "update": ratios, "weight": weights,
                        "scale": scales})  # the one device-to-host transfer of this capture
        step, epoch = pending["step"], pending["epoch"]
        self.store.log_layer_stats(step, epoch, "activation", ActivationRecorder.unpack(host))
        self.store.log_layer_stats(step, epoch, "grad", {(n, "norm"): v for n, v in zip(grad_names, host["grad"])})
        params = {(n, "update_ratio"): v for n, v in zip(ratio_names, host["update"])}
        params.update({(n, "weight_norm"): v for n, v in zip(ratio_names, host["weight"])})
        params.update({tuple(n.rsplit("/", 1)): v for n, v in zip(scale_names, host["scale"])})
        self.store.log_layer_stats(step, epoch, "param", params)

    def teardown(self, trainer, pl_module, stage):
        if self.recorder is not None:
            self.recorder.remove()
