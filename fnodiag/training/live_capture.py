"""``fnodiag.LiveCapture``: the Lightning adapter over the capture core, for fnodiag's own runs and any LightningModule.

A thin callback: the capture itself (probe pass, statistics, gradient norms, update ratios, one
host transfer per capture) is :class:`fnodiag.training.capture_core.CaptureCore`, the run folder
:class:`fnodiag.runs.writer.RunWriter`, the same two that :func:`fnodiag.watch` drives from a plain
loop. Lightning's hooks say when: every k-th optimizer step ``s`` the core runs its probe pass in
``on_before_optimizer_step`` (weights ``W_s``, gradients before clipping) and writes the capture in
``on_train_batch_end`` (weights ``W_{s+1}``).

Given a :class:`~fnodiag.runs.RunStore` or a :class:`~fnodiag.runs.writer.RunWriter` (fnodiag's own
training, where :class:`~fnodiag.training.recorder.RunRecorder` writes the run's other records) the
callback writes layer statistics only. Given a run folder it owns that folder (``config.json`` =
``{"kind": "lightning", "module", "hparams"}``) and also writes, per optimizer step, ``train/loss``
(the ``training_step`` output, a tensor or its ``"loss"`` entry), ``lr`` (first param group of the
first optimizer; ``lr/<i>.<j>`` for the others), ``grad/norm_preclip`` (global L2 norm of the
LightningModule's gradients in ``on_before_optimizer_step``, before Lightning clips),
``grad/norm_postclip`` (after the step) and ``grad/clipped``, all kept on the device until the
writer's next flush (every :data:`~fnodiag.runs.writer.FLUSH_EVERY` steps, every capture, every
epoch end, the end); per epoch ``history.json`` (``train_loss``, ``val_loss``, ``lr``) and every
scalar of ``trainer.callback_metrics`` as ``epoch/<name>``; and ``status.json`` (running with a
heartbeat, then finished / diverged / failed / interrupted), so ``fnodiag serve PARENT`` lists the
run beside fnodiag's own; when the fit ends, the run's ``findings.json``
(:func:`fnodiag.diagnostics.run_findings.write_end_of_run`).
"""

from __future__ import annotations

from pathlib import Path

import torch
from lightning.fabric.utilities.rank_zero import rank_zero_only
from lightning.pytorch import LightningModule
from lightning.pytorch.callbacks import Callback
from torch import nn
from typing_extensions import override

from fnodiag.diagnostics.run_findings import write_end_of_run
from fnodiag.runs import RunDir, RunStore, jsonable
from fnodiag.runs.names import GRAD_NORM_POST, GRAD_NORM_PRE, LR, TRAIN_LOSS
from fnodiag.runs.writer import RunWriter
from fnodiag.training.capture_core import PROBE_BATCH, CaptureCore, generic_targets, probe_from_batch
from fnodiag.training.clipping import global_grad_norm
from fnodiag.training.describe import describe_lightning

__all__ = ["PROBE_BATCH", "LiveCapture", "generic_targets", "probe_from_batch"]
HISTORY_KEYS = ("train_loss", "val_loss", "lr")


def _loss_key(metrics, part: str) -> str | None:
    """First metric name holding ``part`` and "loss" (the reference's history rule), else None."""
    return next((k for k in metrics if part in k.lower() and "loss" in k.lower()), None)


class LiveCapture(Callback):
    """Capture per-layer statistics and gradient norms every ``every`` steps into a run's store.

    Parameters
    ----------
    run : str, Path, RunDir, RunStore or RunWriter
        A run folder to create and own (new, empty, or holding no training record), or the store /
        writer of a run whose other records another callback writes (fnodiag's own training).
    module : None, str or list of str
        What to watch: None = the LightningModule itself; ``"generator"`` = that submodule (a
        path as in ``named_modules``); a list of module paths inside the LightningModule = hook
        exactly those (``"output"`` = the LightningModule's own output).
    probe : (PROBE, ...) tensor, optional
        Fixed input of the watched module, the same at every capture. Default: the first
        ``probe_size`` samples of the first training batch (the LightningModule watched) or of the
        submodule's own first input (``module="sub"``, a forward pre-hook), kept.
    every : int
        Capture period in optimizer steps (>= 1).
    targets : list of str, optional
        Module paths inside the watched module (default
        :func:`~fnodiag.training.capture_core.choose_targets`); ignored when ``module`` is a list.
    probe_size : int
        Samples kept from the first input when ``probe`` is None.
    frames : callable, optional
        ``frames(probe_output) -> {name: 2-D array}``: live images recorded every capture.
    spectra : bool
        Record the spectral statistics too (:mod:`fnodiag.diagnostics.spectral_hooks`).

    Raises
    ------
    FileExistsError
        The run folder holds a training record or other files (nothing there is touched).
    ValueError
        At fit start, before anything is written: ``module`` or a target the model does not have.
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
        frames=None,
        spectra: bool = True,
    ):
        if not (
            module is None
            or isinstance(module, str)
            or (isinstance(module, (list, tuple)) and module and all(isinstance(m, str) for m in module))
        ):
            raise TypeError("module must be None (the LightningModule), a submodule path, or a list of module paths")
        self.module = list(module) if isinstance(module, (list, tuple)) else module
        self.targets = list(self.module) if isinstance(self.module, list) else targets
        self.owns = not isinstance(run, (RunStore, RunWriter))
        if isinstance(run, RunWriter):
            writer = run
        elif isinstance(run, RunStore):
            writer = RunWriter(None, store=run, enabled=run.enabled)
        else:
            rank0 = rank_zero_only.rank == 0  # DDP re-runs the script on other ranks after rank 0 made the folder
            run = run if isinstance(run, RunDir) else RunDir(Path(run))
            writer = RunWriter.claim(run, {"kind": "lightning"}, history_keys=HISTORY_KEYS, enabled=rank0)
        self.writer = writer
        self.core = CaptureCore(
            writer,
            every=every,
            probe=probe,
            targets=self.targets,
            probe_size=probe_size,
            frames=frames,
            annotate=self.owns,
            spectra=spectra,
        )
        self.every, self.probe_size = self.core.every, self.core.probe_size
        self.run = writer.run if self.owns else None
        self._active = False
        self._pre: torch.Tensor | None = None
        self._lrs: dict[str, float] = {}
        self._post_clips = True

    @property
    def probe_batch(self) -> torch.Tensor | None:
        """The probe tensor (None until known)."""
        probe = self.core.probe
        return None if probe is None else next((a for a in probe[0] if isinstance(a, torch.Tensor)), None)

    @property
    def store(self) -> RunStore | None:
        """The run's store (None before fit start of a run this callback owns)."""
        return self.writer.store

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

    @override
    def on_fit_start(self, trainer, pl_module):
        if not trainer.is_global_zero:
            return
        self.core.bind(self._watched(pl_module))  # setting errors raise here, before anything is written
        self._active = True
        if self.owns:
            cls = type(pl_module)
            self.writer.origin.update(
                module=f"{cls.__module__}.{cls.__qualname__}", hparams=jsonable(dict(getattr(pl_module, "hparams", {})))
            )
            self.writer.open()

    @override
    def on_train_start(self, trainer, pl_module):
        if not self._active:
            return
        if isinstance(self.module, str) and self.module:
            self.core.grab_first_input(f"first input of {self.module!r}")
        elif self.core.probe is None:
            self.core.probe_source = "first training batch"  # taken in on_train_batch_start
        if self.owns:
            base = type(pl_module).configure_gradient_clipping is LightningModule.configure_gradient_clipping
            self._post_clips = bool(trainer.gradient_clip_val) or not base  # else post-clip norm == pre-clip norm
            effective = describe_lightning(trainer, pl_module, self.core.model)
            self.writer.start({**effective, "capture": self.describe()}, step=trainer.global_step)

    def describe(self) -> dict:
        """The capture settings as they run (for ``effective_config.json``)."""
        return {"module": self.module if self.module is not None else "(LightningModule)", **self.core.describe()}

    # ------------------------------------------------------------------ steps
    @override
    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if not self._active:
            return
        if self.core.probe is None and self.core.enabled and not isinstance(self.module, str):
            try:
                self.core.set_probe(probe_from_batch(batch, self.probe_size))
            except ValueError as exc:  # no tensor in the batch: capture stops, training goes on
                self.core.fail("probe", exc, trainer.global_step)
        if self.owns:
            self._lrs = {}
            for i, opt in enumerate(trainer.optimizers):
                for j, group in enumerate(opt.param_groups):
                    self._lrs[LR if (i, j) == (0, 0) else f"{LR}/{i}.{j}"] = group["lr"]  # a float or a tensor

    @override
    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        if not self._active:
            return
        if self.owns:
            params = [p for p in pl_module.parameters() if p.grad is not None]
            self._pre = global_grad_norm(params) if params else None  # a device tensor: no host sync
        self.core.before_step(trainer.global_step, trainer.current_epoch)

    @override
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if not self._active:
            return
        step, epoch = trainer.global_step - 1, trainer.current_epoch  # the optimizer step just taken, 0-based
        if self.owns and step >= 0:
            loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
            values = dict(self._lrs)
            if isinstance(loss, torch.Tensor):
                values[TRAIN_LOSS] = loss.detach()
            if self._pre is not None:
                params = [p for p in pl_module.parameters() if p.grad is not None]
                values[GRAD_NORM_PRE] = self._pre
                values[GRAD_NORM_POST] = global_grad_norm(params) if self._post_clips and params else self._pre
            self._pre = None
            self.writer.log(step, epoch, values)
        self.core.after_step()
        self.core.write()  # a capture step: its statistics and the buffered scalars in one transfer
        if self.owns and (self.writer.due() or trainer.fit_loop.epoch_loop.batch_progress.is_last_batch):
            self.writer.flush()

    # ------------------------------------------------------------------ epochs and end
    @override
    def on_train_epoch_end(self, trainer, pl_module):
        if not (self._active and self.owns):
            return
        metrics = {
            k: float(v) for k, v in trainer.callback_metrics.items() if isinstance(v, torch.Tensor) and v.numel() == 1
        }
        train_key = _loss_key(metrics, "train") or ("loss" if "loss" in metrics else None)
        val_key = _loss_key(metrics, "val")
        lr = self._lrs.get(LR, float("nan"))
        values = {
            "train_loss": metrics.get(train_key, float("nan")),
            "val_loss": metrics.get(val_key, float("nan")),
            "lr": float(lr),
        }
        self.writer.end_epoch(
            max(trainer.global_step - 1, 0),
            trainer.current_epoch,
            values,
            scalars=metrics,
            message=f"epoch {trainer.current_epoch + 1} done",
        )

    @override
    def on_fit_end(self, trainer, pl_module):
        if self._active and self.owns:
            self.writer.finish(step=trainer.global_step, epoch=trainer.current_epoch)
            write_end_of_run(self.run)  # findings.json (never raises)

    @override
    def on_exception(self, trainer, pl_module, exception):
        if self._active and self.owns:
            self.writer.finish(step=trainer.global_step, epoch=trainer.current_epoch, exception=exception)
            write_end_of_run(self.run)

    @override
    def teardown(self, trainer, pl_module, stage):
        self.core.close()
        if self.owns:
            self.writer.close()
