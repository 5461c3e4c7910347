"""``fnodiag.watch``: live per-layer capture of any PyTorch training loop, no Lightning.

::

    import fnodiag
    with fnodiag.watch(model, "runs/my-fno", optimizer=opt, every=10, probe=x_probe) as w:
        for x, y in loader:
            loss = loss_fn(model(x), y); loss.backward(); opt.step(); opt.zero_grad()
            w.log(loss=loss)                 # any scalars; optional step=

The handle drives the same two parts as :class:`fnodiag.LiveCapture`: the capture core
(:class:`fnodiag.training.capture_core.CaptureCore`) and the run writer
(:class:`fnodiag.runs.writer.RunWriter`), into a run folder of ``kind = "torch"`` that every fnodiag
reader lists (``fnodiag serve``, ``fnodiag summarize``); closing it writes the run's ``findings.json``
(:func:`fnodiag.diagnostics.run_findings.write_end_of_run`).

* With ``optimizer``, the optimizer's own step hooks say when a step happens, so any trainer that
  steps a torch optimizer (neuraloperator's ``Trainer`` included) needs no other call: the pre-step
  hook records the learning rates and the global gradient norm (of the gradients the optimizer
  applies, after any clipping the loop did; a loop that clips may log its pre-clip norm as
  ``w.log(**{"grad/norm_preclip": norm})``) and, every ``every`` steps, runs the probe pass with
  per-module gradient norms and a weight snapshot; the post-step hook takes the update ratios; the
  capture reaches the host at the next step's pre-hook (after the loop logged the step) or at close.
* Without ``optimizer``, each :meth:`Watch.log` call is one step and only activations are captured.

Nothing of a step reads a tensor: scalars logged as tensors stay on the device until the writer's
next flush (every :data:`~fnodiag.runs.writer.FLUSH_EVERY` steps, at every capture, at close: one
transfer each). A capture error never stops the loop (see :mod:`fnodiag.training.capture_core`).
"""

from __future__ import annotations

import torch
from torch import nn

from fnodiag.diagnostics.run_findings import write_end_of_run
from fnodiag.runs import states
from fnodiag.runs.names import GRAD_NORM_POST, GRAD_NORM_PRE, LR, TRAIN_LOSS
from fnodiag.runs.writer import RunWriter
from fnodiag.training.capture_core import CaptureCore, uncompiled
from fnodiag.training.clipping import global_grad_norm
from fnodiag.training.optimizers import describe_optimizer

HISTORY_KEYS = ("train_loss", "val_loss", "lr")
ALIASES = {"loss": TRAIN_LOSS}  # w.log(loss=...) is the run's training loss, as every reader names it


def watch(
    model: nn.Module,
    run,
    *,
    optimizer: torch.optim.Optimizer | None = None,
    every: int = 10,
    probe: torch.Tensor | None = None,
    targets: list[str] | None = None,
    frames=None,
    spectra: bool = True,
) -> Watch:
    """Record what every layer of ``model`` does while any loop trains it, into run folder ``run``.

    Parameters
    ----------
    model : nn.Module
        The model the loop trains; a compiled one (``torch.compile(model)``) is watched through its original module
        (hooks and the probe pass never enter the compiled graph: no recompilation).
    run : str, Path or RunDir
        The run folder: new, empty, or holding no training record (a failed start may be reused).
    optimizer : torch.optim.Optimizer, optional
        The loop's optimizer: its step hooks then count the steps and give gradient norms (before
        the step) and update ratios (after it).
    every : int
        Capture period in steps (>= 1).
    probe : tensor, optional
        Fixed input of the model, the same at every capture. Default: the first 2 samples of the
        first input the model is called with (a forward pre-hook on its first call).
    targets : list of str, optional
        Module paths to record (default :func:`~fnodiag.training.capture_core.choose_targets`).
    frames : callable, optional
        ``frames(probe_output) -> {name: 2-D array}``: live images recorded every capture (the
        store's frames table, read back by name with :meth:`fnodiag.runs.StoreReader.frames`).
    spectra : bool
        Record the spectral statistics too (radial band energies per layer, energy above the kept
        modes of each spectral convolution's input, per-mode weight magnitudes:
        :mod:`fnodiag.diagnostics.spectral_hooks`).

    Returns
    -------
    Watch
        The handle: :meth:`Watch.log`, :meth:`Watch.close`, and a context manager.

    Raises
    ------
    FileExistsError
        ``run`` holds a training record or other files.
    ValueError, TypeError
        A bad setting (an unknown target, ``every < 1``, ...), raised before anything is written.
    """
    return Watch(
        model, run, optimizer=optimizer, every=every, probe=probe, targets=targets, frames=frames, spectra=spectra
    )


class Watch:
    """The handle :func:`watch` returns (see there); use it as a context manager or call :meth:`close`."""

    def __init__(self, model, run, *, optimizer=None, every=10, probe=None, targets=None, frames=None, spectra=True):
        if not isinstance(model, nn.Module):
            raise TypeError(f"fnodiag.watch needs a torch.nn.Module, got {type(model).__name__}")
        if optimizer is not None and not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}")
        cls = type(uncompiled(model)[0])
        origin = {"kind": "torch", "module": f"{cls.__module__}.{cls.__qualname__}"}
        self.writer = RunWriter.claim(run, origin, history_keys=HISTORY_KEYS)  # checks only: nothing written
        self.core = CaptureCore(self.writer, every=every, probe=probe, targets=targets, frames=frames, spectra=spectra)
        self.core.bind(model)  # an unknown target raises here, before anything is written
        self.model, self.optimizer = self.core.model, optimizer  # the original of a compiled model
        self.run = self.writer.run
        self.steps = 0  # optimizer steps taken (with an optimizer), else log calls
        self.closed = False
        self._handles = []
        self.writer.open()
        if probe is None:
            self.core.grab_first_input("first input")
        self.writer.start(self._effective())
        if optimizer is not None:
            self._handles = [
                optimizer.register_step_pre_hook(self._before_step),
                optimizer.register_step_post_hook(self._after_step),
            ]

    def _effective(self) -> dict:
        device = next((p.device for p in self.model.parameters()), torch.device("cpu"))
        return {
            "kind": "torch",
            "optimizer": describe_optimizer(self.optimizer) if self.optimizer is not None else None,
            "generator": {
                "class": type(self.model).__name__,
                "module": type(self.model).__module__,
                "parameters": int(sum(p.numel() for p in self.model.parameters())),
            },
            "steps_from": "optimizer.step" if self.optimizer is not None else "watch.log",
            "seed": int(torch.initial_seed()),
            "device": str(device),
            "flush_every": self.writer.flush_every,
            "capture": self.core.describe(),
        }

    # ------------------------------------------------------------------ optimizer hooks
    def _before_step(self, optimizer, args, kwargs) -> None:
        self.core.write()  # the previous step's capture, now that the loop has logged that step
        if self.writer.due():
            self.writer.flush()
        step = self.steps
        values = {}
        for j, group in enumerate(optimizer.param_groups):
            values[LR if j == 0 else f"{LR}/0.{j}"] = group["lr"]
        grads = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        if grads:
            norm = global_grad_norm(grads)  # a device tensor: no host sync
            values[GRAD_NORM_PRE] = values[GRAD_NORM_POST] = norm
        self.writer.log(step, 0, values)
        self.core.before_step(step, 0)

    def _after_step(self, optimizer, args, kwargs) -> None:
        self.core.after_step()
        self.steps += 1

    # ------------------------------------------------------------------ the loop's calls
    def log(self, step: int | None = None, **scalars) -> None:
        """Record scalars of one step (``loss=`` is the training loss, ``train/loss``).

        Parameters
        ----------
        step : int, optional
            The step (0-based). Default: with an optimizer the step just taken (call ``log`` after
            ``optimizer.step()``); without one each call is the next step.
        **scalars : () tensor or float
            Tensors stay on their device until the next flush: logging never synchronises.
        """
        if self.closed:
            raise RuntimeError("this fnodiag.watch run is closed; start a new one to log more")
        if step is None:
            step = max(self.steps - 1, 0) if self.optimizer is not None else self.steps
        elif isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise ValueError(f"step must be an integer >= 0, got {step!r}")
        values = {ALIASES.get(k, k): v.detach() if isinstance(v, torch.Tensor) else v for k, v in scalars.items()}
        self.writer.log(step, 0, values)
        if self.optimizer is None:
            self.steps = step + 1
            self.core.capture(step, 0)  # due steps only: activations, with the buffered scalars, one transfer
            if self.writer.due():
                self.writer.flush()

    def close(self, state: str = states.FINISHED, *, exception: BaseException | None = None) -> dict | None:
        """End the run: flush, write the final status, remove every hook (idempotent).

        Parameters
        ----------
        state : str
            ``"finished"`` (``"diverged"`` when a logged loss was non-finite), ``"failed"`` or
            ``"interrupted"``.
        exception : BaseException, optional
            What ended the loop (its text becomes the status message).

        Returns
        -------
        dict or None
            The final status (None when already closed).
        """
        if self.closed:
            return None
        if state not in (states.FINISHED, states.DIVERGED, states.FAILED, states.INTERRUPTED):
            raise ValueError(f"close(state={state!r}): choose finished, diverged, failed or interrupted")
        self.closed = True
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self.core.write()
        self.core.close()
        if state == states.FINISHED:
            state = states.final_state(exception, diverged=self.writer.diverged is not None)
        try:
            self.run.write_history(self.writer.history)
            return self.writer.finish(state, step=self.steps, epoch=0, exception=exception)
        finally:
            self.writer.close()
            if self.writer.enabled:
                write_end_of_run(self.run)  # findings.json (never raises)

    def __enter__(self) -> Watch:
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        self.close(states.final_state(exc) if exc is not None else states.FINISHED, exception=exc)
        return False  # an exception in the block is re-raised
