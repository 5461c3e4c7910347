"""Live capture during training, for fnodiag's own runs and for any LightningModule: ``fnodiag.LiveCapture``.

A thin callback over the pure statistics of :mod:`fnodiag.diagnostics.stats` and the hook
recorder of :mod:`fnodiag.diagnostics.hooks`. Every k-th optimizer step ``s`` (s = 0, k, 2k, ...):

1. in ``on_before_optimizer_step`` (after backward, before clipping and the update, weights
   ``W_s``): the watched module runs once under ``inference_mode`` on a fixed probe batch (given,
   or the first training batch, kept), so values compare across steps and runs; the recorder
   reduces every hooked output to its statistics on the device; per-module gradient norms
   (before clipping), the LayerScale / InstanceNorm values and a snapshot of the weights ``W_s``
   (into a reused buffer) are taken;
2. in ``on_train_batch_end`` (weights ``W_{s+1}``): per-module update-to-weight ratios
   ``||W_{s+1} - W_s|| / ||W_s||`` and weight norms ``||W_s||`` from the snapshot; then
   everything for step ``s`` reaches the host in one transfer and goes to the run's store
   (rank 0 only).

Given a :class:`~fnodiag.runs.RunStore` (fnodiag's own training, where ``RunRecorder`` writes the
run's other records) the callback writes layer statistics only. Given a run folder it owns that
folder (:mod:`fnodiag.training.lightning_run`): it also writes the per-step scalars (loss, lr,
global gradient norm before / after clipping), ``effective_config.json``, ``history.json`` and
``status.json``, so ``panel serve app --args --runs PARENT`` lists the run beside fnodiag's own.
Complex-valued activations and weights are measured by magnitude.
"""

from __future__ import annotations

from pathlib import Path

import torch
from lightning.pytorch.callbacks import Callback
from torch import nn

from fnodiag.diagnostics.hooks import OUTPUT, ActivationRecorder, default_targets
from fnodiag.diagnostics.stats import grad_norms, scale_params, snapshot_weights, to_host, update_ratios
from fnodiag.runs import RunDir, RunStore

PROBE_BATCH = 2  # samples in the fixed probe batch: a capture stays a small share of a training step
MAX_GENERIC_TARGETS = 64


def generic_targets(model: nn.Module) -> list[str]:
    """Layers to watch in a model: fnodiag's U-NO layers when it has them, else every leaf module.

    Parameters
    ----------
    model : nn.Module
        The watched module.

    Returns
    -------
    list of str
        :func:`~fnodiag.diagnostics.hooks.default_targets` when it finds a U-NO layout; otherwise
        the paths of modules without children (``nn.Linear``, activations, ...), in
        ``named_modules`` order, at most ``MAX_GENERIC_TARGETS``, then ``"output"``.
    """
    found = default_targets(model)
    if any(t == "lifter" or t.startswith(("encoder.", "bottleneck")) for t in found):
        return found
    leaves = [n for n, m in model.named_modules() if n and not any(True for _ in m.children())]
    return leaves[:MAX_GENERIC_TARGETS] + [OUTPUT]


def probe_from_batch(batch, size: int) -> torch.Tensor:
    """The model input of a training batch, first ``size`` samples, detached and copied.

    A tensor batch is the input; a tuple / list batch gives its first tensor (``(x, y)``); a dict
    its ``"x"`` / ``"input"`` / ``"inputs"`` entry, else its first tensor value.

    Raises
    ------
    ValueError
        No tensor in the batch (pass ``probe=`` explicitly).
    """
    x = batch
    if isinstance(batch, dict):
        x = next(
            (batch[k] for k in ("x", "input", "inputs") if isinstance(batch.get(k), torch.Tensor)),
            next((v for v in batch.values() if isinstance(v, torch.Tensor)), None),
        )
    elif isinstance(batch, (tuple, list)):
        x = next((v for v in batch if isinstance(v, torch.Tensor)), None)
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"LiveCapture found no tensor in a {type(batch).__name__} training batch; pass probe=TENSOR")
    return x[:size].detach().clone()


class LiveCapture(Callback):
    """Capture per-layer statistics and gradient norms every ``every`` steps into a run's store.

    Parameters
    ----------
    run : str, Path, RunDir or RunStore
        A run folder to create and own (it must be new or empty), or the store of a run whose
        other records another callback writes (fnodiag's own training).
    module : None, str or list of str
        What to watch: None = the LightningModule itself; ``"generator"`` = that submodule (a
        path as in ``named_modules``); a list of module paths inside the LightningModule = hook
        exactly those (``"output"`` = the LightningModule's own output).
    probe : (PROBE, ...) tensor, optional
        Fixed input of the watched module, the same at every capture. Default: the first
        ``probe_size`` samples of the first training batch (see :func:`probe_from_batch`), kept.
    every : int
        Capture period in optimizer steps (>= 1).
    targets : list of str, optional
        Module paths inside the watched module (default :func:`generic_targets`); ignored when
        ``module`` is a list.
    probe_size : int
        Samples kept from the first training batch when ``probe`` is None.
    """

    def __init__(
        self,
        run,
        *,
        module: str | list[str] | None = None,
        probe: torch.Tensor | None = None,
        every: int = 10,
        targets: list[str] | None = None,
        probe_size: int = PROBE_BATCH,
    ):
        if int(every) < 1:
            raise ValueError(f"capture period must be >= 1 step, got {every}")
        if probe is not None and not isinstance(probe, torch.Tensor):
            raise TypeError(f"probe must be a torch.Tensor batch, got {type(probe).__name__}")
        if not (
            module is None
            or isinstance(module, str)
            or (isinstance(module, (list, tuple)) and module and all(isinstance(m, str) for m in module))
        ):
            raise TypeError("module must be None (the LightningModule), a submodule path, or a list of module paths")
        self.every, self.probe_size = int(every), int(probe_size)
        self.module = list(module) if isinstance(module, (list, tuple)) else module
        self.targets = list(self.module) if isinstance(self.module, list) else targets
        self.probe_batch = probe
        self.writer = None
        if isinstance(run, RunStore):
            self.store, self.run = run, None
        else:
            from fnodiag.training.lightning_run import LightningRunWriter  # owns a foreign run's folder

            self.run = run if isinstance(run, RunDir) else RunDir(Path(run))
            self.writer = LightningRunWriter(self.run)
            self.store = None  # opened on rank 0 at fit start
        self.recorder: ActivationRecorder | None = None
        self.watched: nn.Module | None = None
        self._pending: dict | None = None
        self._snapshot: list[torch.Tensor] | None = None

    # ------------------------------------------------------------------ setup
    def _watched(self, pl_module) -> nn.Module:
        if isinstance(self.module, str) and self.module:
            try:
                return pl_module.get_submodule(self.module)
            except AttributeError:
                names = [n for n, _ in pl_module.named_children()]
                raise ValueError(
                    f"LiveCapture module {self.module!r} is not a submodule of "
                    f"{type(pl_module).__name__}; children: {', '.join(names) or '(none)'}"
                ) from None
        return pl_module

    def on_fit_start(self, trainer, pl_module):
        if self.writer is not None and trainer.is_global_zero:
            self.store = self.writer.open(pl_module)

    def on_train_start(self, trainer, pl_module):
        if not trainer.is_global_zero:
            return
        self.watched = self._watched(pl_module)
        targets = self.targets if self.targets is not None else generic_targets(self.watched)
        self.recorder = ActivationRecorder(self.watched, targets).register()
        self.recorder.active = False
        if self.probe_batch is not None:
            self.probe_batch = self.probe_batch.to(pl_module.device)
        if self.writer is not None:
            self.writer.start(trainer, pl_module, self.watched, self.describe())

    def describe(self) -> dict:
        """The capture settings as they run (for ``effective_config.json``)."""
        probe = self.probe_batch
        return {
            "every": self.every,
            "module": self.module if self.module is not None else "(LightningModule)",
            "targets": self.recorder.targets if self.recorder is not None else (self.targets or "default"),
            "probe_batch": int(probe.shape[0]) if probe is not None else self.probe_size,
            "probe_source": "given" if probe is not None else "first training batch",
        }

    # ------------------------------------------------------------------ steps
    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self.probe_batch is None and self.recorder is not None:
            self.probe_batch = probe_from_batch(batch, self.probe_size).to(pl_module.device)
        if self.writer is not None:
            self.writer.batch_start(trainer)

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        if self.writer is not None:
            self.writer.before_step(self.watched)
        step = trainer.global_step
        if self.recorder is None or step % self.every or self.probe_batch is None:
            return
        gen = self.watched
        was_training = gen.training
        gen.eval()
        self.recorder.active = True
        try:
            with torch.inference_mode():
                gen(self.probe_batch)
        finally:
            self.recorder.active = False
            gen.train(was_training)
        self._pending = {
            "step": step,
            "epoch": trainer.current_epoch,
            "activation": self.recorder.device_stats(),
            "grad": grad_norms(gen),
            "scale": scale_params(gen),
            "before": snapshot_weights(gen, out=self._snapshot),
        }
        self.recorder.clear()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self.writer is not None:
            self.writer.batch_end(trainer, outputs, self.watched)
        pending, self._pending = self._pending, None
        if pending is None:
            return
        gen = self.watched
        self._snapshot = pending["before"]  # reused as the next snapshot's buffer
        # the snapshot holds W_s: its norms are the weight norms of the capture step
        ratio_names, ratios, weights = update_ratios(gen, self._snapshot, inplace=True, with_norms=True)
        grad_names, grads = pending["grad"]
        scale_names, scales = pending["scale"]
        host = to_host(
            {**pending["activation"], "grad": grads, "update": ratios, "weight": weights, "scale": scales}
        )  # the one device-to-host transfer of this capture
        step, epoch = pending["step"], pending["epoch"]
        self.store.log_layer_stats(step, epoch, "activation", ActivationRecorder.unpack(host))
        self.store.log_layer_stats(step, epoch, "grad", {(n, "norm"): v for n, v in zip(grad_names, host["grad"])})
        params = {(n, "update_ratio"): v for n, v in zip(ratio_names, host["update"])}
        params.update({(n, "weight_norm"): v for n, v in zip(ratio_names, host["weight"])})
        params.update({tuple(n.rsplit("/", 1)): v for n, v in zip(scale_names, host["scale"])})
        self.store.log_layer_stats(step, epoch, "param", params)

    # ------------------------------------------------------------------ epochs and end
    def on_train_epoch_end(self, trainer, pl_module):
        if self.writer is not None:
            self.writer.epoch_end(trainer)

    def on_fit_end(self, trainer, pl_module):
        if self.writer is not None:
            self.writer.finish(trainer, "finished", "training finished")

    def on_exception(self, trainer, pl_module, exception):
        if self.writer is not None:
            state = "interrupted" if isinstance(exception, KeyboardInterrupt) else "failed"
            self.writer.finish(trainer, state, f"{type(exception).__name__}: {exception}"[:500])

    def teardown(self, trainer, pl_module, stage):
        if self.recorder is not None:
            self.recorder.remove()
            self.recorder = None
        if self.writer is not None:
            self.writer.close()
