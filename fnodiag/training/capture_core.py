"""The capture core: the one implementation of live capture, shared by fnodiag's runs, ``LiveCapture`` and ``watch``.

Lightning-free; the adapters say when a step happens (:class:`fnodiag.training.live_capture.LiveCapture`
from Lightning's hooks, :func:`fnodiag.watch` from the optimizer's step hooks or ``w.log``). Every
``every``-th optimizer step ``s`` (s = 0, every, 2 every, ...):

1. :meth:`CaptureCore.before_step` (after backward, before clipping and the update; weights
   ``W_s``): the watched module runs once in eval mode under ``inference_mode`` on the fixed probe,
   with the :class:`~fnodiag.diagnostics.hooks.ActivationRecorder` hooks registered for that pass
   only (ordinary steps run no hook), each hooked output reduced to its statistics on the device;
   per-module gradient norms (before clipping), the LayerScale / InstanceNorm values and a snapshot
   of ``W_s`` (into a reused buffer) are taken; ``frames(output)`` gives the live images; with
   ``spectra`` (the default) a :class:`~fnodiag.diagnostics.spectral_hooks.SpectralRecorder` hooked for
   the same pass adds each hooked layer's radial band energies, each spectral convolution's share of
   input energy above its kept modes, and its weight's per-mode magnitudes (param statistics);
2. :meth:`CaptureCore.after_step` (weights ``W_{s+1}``): per-module update-to-weight ratios
   ``||W_{s+1} - W_s|| / ||W_s||`` and weight norms ``||W_s||``, on the device;
3. :meth:`CaptureCore.write` (at once in Lightning, at the next step or at close under ``watch``):
   everything for step ``s`` and the run writer's buffered per-step scalars reach the host in ONE
   transfer (:func:`~fnodiag.diagnostics.stats.to_host` through :meth:`fnodiag.runs.writer.RunWriter.flush`)
   and go to the store.

:meth:`CaptureCore.capture` does all three at once, activations (and frames) only: a loop that
does not hand ``watch`` its optimizer.

The probe is given, or the first ``probe_size`` samples of the first input the watched module is
called with (a forward pre-hook, removed after that call: every batched tensor argument is
sliced), or, for a LightningModule watched as a whole, of the first training batch
(:func:`probe_from_batch`). The default layers are chosen in one place, :func:`choose_targets`.

A capture never stops training: any exception inside it (a probe the module refuses, a failing
hook, a store write) disables capture for the rest of the run, prints one line naming fnodiag and
the fix, and is recorded (:meth:`fnodiag.runs.writer.RunWriter.note_capture_error`: every later
status message and ``effective_config.json`` ``capture.error``); the step's scalars still go out.
Setting errors (an unknown target) are raised by :meth:`CaptureCore.bind`, before anything is written.
Complex-valued activations and weights are measured by magnitude.

A ``torch.compile``d module (an ``OptimizedModule``) is watched through its original module
(``_orig_mod``, :func:`uncompiled`): the hooks, the probe pass (eager, two samples), gradient norms and
the weight snapshot use the original module and its parameters, which the compiled one shares; the
first-input pre-hook goes on the compiled wrapper (it runs outside the compiled region). The compiled
graph never sees a hook, so steps without a capture run it unchanged and never recompile. A model
compiled with the inductor backend that has complex parameters gets one warning line (inductor cannot
compile complex weights today; ``backend="aot_eager"`` can).
"""

from __future__ import annotations

import sys
import traceback
from pathlib import Path

import numpy as np
import torch
from torch import nn

from fnodiag.diagnostics import hooks, spectra, spectral_hooks, stats
from fnodiag.diagnostics.hooks import ActivationRecorder
from fnodiag.diagnostics.spectral_hooks import SpectralRecorder
from fnodiag.diagnostics.stats import grad_norms, scale_params, snapshot_weights, to_host, update_ratios
from fnodiag.diagnostics.targets import TargetPlan
from fnodiag.diagnostics.targets import choose_targets as plan_targets
from fnodiag.runs.writer import RunWriter

PROBE_BATCH = 2  # samples in the fixed probe batch: a capture stays a small share of a training step
FIXES = {
    "probe": "pass probe= an input the watched module accepts (or module= the submodule it fits)",
    "statistics": "pass targets= without the layers whose outputs fail",
    "frames": "make frames(output) return {name: 2-D real array} for the probe's output",
    "store": "check that the run folder is writable and its disk has space",
}


def generic_targets(model: nn.Module) -> list[str]:
    """Layers to watch in a model without a probe (the static rule of :func:`choose_targets`).

    Parameters
    ----------
    model : nn.Module
        The watched module.

    Returns
    -------
    list of str
        fnodiag's U-NO layers, else the model's modules by the static rule, then ``"output"``.
    """
    return choose_targets(model).targets


def choose_targets(
    model: nn.Module, probe_args: tuple = (), probe_kwargs: dict | None = None, targets: list[str] | None = None
) -> TargetPlan:
    """The layers a capture hooks: the ONE place the capture core chooses them.

    Called once, at the first capture, when the probe is known:
    :func:`fnodiag.diagnostics.targets.choose_targets` on that probe (fnodiag's U-NO layers; any
    other model traced once, in forward order, capped, what was left out recorded).

    Parameters
    ----------
    model : nn.Module
        The watched module.
    probe_args, probe_kwargs
        The probe the capture runs (a call with both positional and keyword arguments is not
        traced: the static rule applies).
    targets : list of str, optional
        Explicit module paths (kept as given; traced for their layouts).

    Returns
    -------
    TargetPlan
        ``targets``, ``left_out``, ``rule``, ``layouts``; :meth:`TargetPlan.describe` goes to
        ``effective_config.json``.
    """
    kwargs = probe_kwargs or {}
    if probe_args and not kwargs:
        probe = probe_args[0] if len(probe_args) == 1 else tuple(probe_args)
    else:
        probe = dict(kwargs) if kwargs and not probe_args else None
    return plan_targets(model, probe, targets)


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


def _tensors(value) -> list[torch.Tensor]:
    """Batched tensors in ``value`` (a tensor, or a dict / list / tuple of them, nested), in order."""
    if isinstance(value, torch.Tensor):
        return [value] if value.ndim >= 1 else []
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in _tensors(v)]
    return []


def slice_call(args: tuple, kwargs: dict, size: int) -> tuple[tuple, dict] | None:
    """The first ``size`` samples of a module call's arguments (None when no argument holds a batched tensor).

    The batch size is the first axis of the first tensor found (arguments in order, into dicts,
    lists and tuples); every tensor with that leading size is sliced (detached, copied), anything
    else is kept as it is.
    """
    found = _tensors([*args, *kwargs.values()])
    if not found:
        return None
    n = found[0].shape[0]

    def cut(v):
        if isinstance(v, torch.Tensor):
            return v.detach()[:size].clone() if v.ndim >= 1 and v.shape[0] == n else v
        if isinstance(v, dict):
            return {k: cut(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return type(v)(*(cut(x) for x in v)) if hasattr(v, "_fields") else type(v)(cut(x) for x in v)
        return v

    return tuple(cut(v) for v in args), {k: cut(v) for k, v in kwargs.items()}


def uncompiled(model: nn.Module) -> tuple[nn.Module, str | None]:
    """The module to hook for ``model`` and how it was compiled.

    Returns
    -------
    (nn.Module, str or None)
        ``model._orig_mod`` and ``"inductor"`` / ``"other backend"`` for a ``torch.compile``d module,
        else ``model`` and None.
    """
    inner = getattr(model, "_orig_mod", None)
    if not isinstance(inner, nn.Module):
        return model, None
    config = getattr(model, "get_compiler_config", lambda: None)()
    return inner, "inductor" if config is not None else "other backend"


def compile_warning(model: nn.Module, backend: str | None) -> str | None:
    """One line when ``model`` has complex parameters and was compiled with inductor (else None)."""
    if backend != "inductor":
        return None
    name = next((n for n, p in model.named_parameters() if p.is_complex()), None)
    if name is None:
        return None
    return (
        f"fnodiag: the watched model is compiled with torch.compile's inductor backend but has complex "
        f"parameters ({name!r}), which inductor cannot compile today; compile it with "
        'backend="aot_eager" or watch the uncompiled model'
    )


class CaptureCore:
    """Per-layer statistics of a watched module every ``every`` steps (see the module docstring).

    Parameters
    ----------
    writer : RunWriter
        Where the capture goes; its buffered scalars travel in each capture's transfer.
    every : int
        Capture period in optimizer steps (>= 1).
    probe : tensor, optional
        Fixed input of the watched module, the same at every capture (moved to its device).
    targets : list of str, optional
        Module paths inside the watched module (default :func:`choose_targets`).
    probe_size : int
        Samples kept from the first input when ``probe`` is None.
    frames : callable, optional
        ``frames(output) -> {name: (H, W) or (P, H, W) real array or tensor}`` of the probe's
        output, recorded every capture.
    annotate : bool
        Record the chosen targets in ``effective_config.json`` (a run whose writer it owns).
    spectra : bool
        Also record the spectral statistics (:mod:`fnodiag.diagnostics.spectral_hooks`).
    """

    def __init__(
        self,
        writer: RunWriter,
        *,
        every: int = 10,
        probe: torch.Tensor | None = None,
        targets: list[str] | None = None,
        probe_size: int = PROBE_BATCH,
        frames=None,
        annotate: bool = True,
        spectra: bool = True,
    ):
        if isinstance(every, bool) or int(every) < 1:
            raise ValueError(f"capture period must be >= 1 step, got {every}")
        if probe is not None and not isinstance(probe, torch.Tensor):
            raise TypeError(f"probe must be a torch.Tensor batch, got {type(probe).__name__}")
        if frames is not None and not callable(frames):
            raise TypeError(f"frames must be a function of the probe's output, got {type(frames).__name__}")
        self.writer, self.every, self.probe_size = writer, int(every), int(probe_size)
        self.targets = list(targets) if targets is not None else None
        self.frames, self.annotate, self.spectra = frames, annotate, bool(spectra)
        self.probe: tuple[tuple, dict] | None = ((probe,), {}) if probe is not None else None
        self.probe_source = "given" if probe is not None else None
        self.enabled = True
        self.captured = 0
        self.model: nn.Module | None = None  # the module hooked and probed (the original of a compiled one)
        self.called: nn.Module | None = None  # the module the loop calls (a compiled wrapper, or self.model)
        self.compiled: str | None = None
        self.recorder: ActivationRecorder | None = None
        self.spectral: SpectralRecorder | None = None
        self._grab = None
        self._pending: dict | None = None
        self._snapshot: list[torch.Tensor] | None = None

    # ------------------------------------------------------------------ setup
    def bind(self, model: nn.Module) -> None:
        """Watch ``model``: explicit targets are checked here (ValueError), the probe moved to its device.

        A compiled ``model`` is watched through its original module (:func:`uncompiled`).
        """
        if not isinstance(model, nn.Module):
            raise TypeError(f"fnodiag can only watch a torch.nn.Module, got {type(model).__name__}")
        inner, self.compiled = uncompiled(model)
        ActivationRecorder(inner, self.targets or [])  # raises on an unknown name or a compiled submodule
        warning = compile_warning(inner, self.compiled)
        if warning is not None:
            print(warning, file=sys.stderr, flush=True)
        self.model, self.called = inner, model
        if self.probe is not None:
            device = next((p.device for p in model.parameters()), None)
            if device is not None:
                args, kwargs = self.probe
                self.probe = tuple(a.to(device) if isinstance(a, torch.Tensor) else a for a in args), kwargs

    def grab_first_input(self, source: str) -> None:
        """Keep the first input the watched module is called with as the probe (a one-call pre-hook)."""
        if self.probe is not None or self._grab is not None:
            return
        # self._grab: the hook's handle until the first call, then "called"

        def grab(module, args, kwargs):
            self._grab.remove()
            self._grab = "called"  # and nothing registered any more
            self.probe = slice_call(args, kwargs, self.probe_size)

        self.probe_source = source

        self._grab = self.called.register_forward_pre_hook(grab, with_kwargs=True)  # outside any compiled region

    def set_probe(self, probe: torch.Tensor) -> None:
        """Use ``probe`` (already sliced, on the model's device) as the probe unless one is set."""
        if self.probe is None:
            self.probe = ((probe,), {})

    def describe(self) -> dict:
        """The capture settings as they run (``effective_config.json`` ``capture``)."""
        first = next((a for a in (self.probe or ((), {}))[0] if isinstance(a, torch.Tensor)), None)
        return {
            "every": self.every,
            "targets": self.recorder.targets if self.recorder is not None else (self.targets or "default"),
            "probe_batch": int(first.shape[0]) if first is not None and first.ndim else self.probe_size,
            "probe_source": self.probe_source or "first input",
            "frames": self.frames is not None,
            "spectra": self.spectra,
            **({"compiled": self.compiled} if self.compiled else {}),
        }

    # ------------------------------------------------------------------ steps
    def due(self, step: int) -> bool:
        """Whether step ``step`` is captured."""
        return self.enabled and self.model is not None and step % self.every == 0 and self.writer.accepts(step)

    def before_step(self, step: int, epoch: int, *, params: bool = True) -> None:
        """Probe pass and statistics of step ``step`` at weights ``W_s`` (call when :meth:`due`)."""
        if not self.due(step):
            return
        stage = "probe"
        try:
            if self.probe is None:
                what = (
                    "had no batched tensor argument" if self._grab == "called" else f"was not called before step {step}"
                )
                raise RuntimeError(f"the watched {type(self.model).__name__} {what}")
            if self.recorder is None:
                plan = choose_targets(self.model, *self.probe, targets=self.targets)
                self.recorder = ActivationRecorder(self.model, plan)
                self.spectral = SpectralRecorder(self.model, plan) if self.spectra else None
                if self.annotate:
                    self.writer.update_effective("capture", plan.describe())
            output = self._probe_pass()
            stage = "statistics"
            named = dict(self.recorder.device_stats())
            self.recorder.clear()
            if self.spectral is not None:  # band energies, energy above kept modes, per-mode weight magnitudes
                named.update(self.spectral.device_stats())
                named.update(self.spectral.weight_stats())
                self.spectral.clear()
            if self.frames is not None:
                stage = "frames"
                named.update(_frame_tensors(self.frames(output)))
            stage = "statistics"
            pending = {"step": step, "epoch": epoch, "named": named, "params": params, "ready": False, "ratio": []}
            if params:
                grad_names, named["grad"] = grad_norms(self.model)
                scale_names, named["scale"] = scale_params(self.model)
                self._snapshot = snapshot_weights(self.model, out=self._snapshot)
                pending.update(grad=grad_names, scale=scale_names)
            self._pending = pending
        except Exception as exc:
            self.fail(_stage_of(exc, stage), exc, step)

    def after_step(self) -> None:
        """Update ratios and weight norms of the pending capture (weights ``W_{s+1}``, on the device)."""
        pending = self._pending
        if pending is None or pending["ready"]:
            return
        try:
            if pending["params"]:
                # the snapshot holds W_s: its norms are the weight norms of the capture step
                pending["ratio"], pending["named"]["update"], pending["named"]["weight"] = update_ratios(
                    self.model, self._snapshot, inplace=True, with_norms=True
                )
            pending["ready"] = True
        except Exception as exc:
            self.fail("statistics", exc, pending["step"])

    def write(self) -> None:
        """The pending capture and the writer's buffered scalars to the host in one transfer, then to the store."""
        pending = self._pending
        if pending is None or not pending["ready"]:
            return
        self._pending = None
        try:
            host = self.writer.flush(pending["named"], transfer=to_host, commit=False)  # the one transfer
            self._write(pending, host)
            self.writer.commit()  # scalars and layer rows in one transaction
            self.captured += 1
        except Exception as exc:
            self.fail("store", exc, pending["step"])

    def capture(self, step: int, epoch: int) -> None:
        """Activations (and frames) of step ``step`` at the current weights, written at once (when due)."""
        self.before_step(step, epoch, params=False)
        self.after_step()
        self.write()

    def _probe_pass(self):
        model, recorder = self.model, self.recorder
        args, kwargs = self.probe
        was_training = model.training
        model.eval()
        recorder.register()
        recorder.active = True
        if self.spectral is not None:
            self.spectral.register()
        try:
            with torch.inference_mode():
                return model(*args, **kwargs)
        finally:
            recorder.remove()
            if self.spectral is not None:
                self.spectral.remove()
            model.train(was_training)

    def _write(self, pending: dict, host: dict) -> None:
        writer, step, epoch = self.writer, pending["step"], pending["epoch"]
        spectral = SpectralRecorder.unpack(host)
        writer.log_layers(step, epoch, "activation", {**ActivationRecorder.unpack(host), **spectral["activation"]})
        images = {k.partition(":")[2]: v for k, v in host.items() if k.startswith("frame:")}
        if images:
            writer.log_frame(step, epoch, {k: v[None] if v.ndim == 2 else v for k, v in images.items()})
        if pending["params"]:
            writer.log_layers(step, epoch, "grad", {(n, "norm"): v for n, v in zip(pending["grad"], host["grad"])})
            values = {(n, "update_ratio"): v for n, v in zip(pending["ratio"], host["update"])}
            values.update({(n, "weight_norm"): v for n, v in zip(pending["ratio"], host["weight"])})
            values.update({tuple(n.rsplit("/", 1)): v for n, v in zip(pending["scale"], host["scale"])})
            writer.log_layers(step, epoch, "param", {**values, **spectral["param"]})
        elif spectral["param"]:
            writer.log_layers(step, epoch, "param", spectral["param"])

    # ------------------------------------------------------------------ errors and end
    def fail(self, stage: str, exc: Exception, step: int) -> None:
        """Disable capture for the rest of the run, print one line naming fnodiag and the fix, record it."""
        self.enabled = False
        self._pending = None
        if self.recorder is not None:
            self.recorder.remove()
            self.recorder.clear()
        if self.spectral is not None:
            self.spectral.remove()
            self.spectral.clear()
        text = " ".join(f"{type(exc).__name__}: {exc}".split())[:300]
        message = f"{stage} failed ({text}); fix: {FIXES[stage]}"
        print(f"fnodiag: capture disabled at step {step}, training goes on: {message}", file=sys.stderr, flush=True)
        try:
            self.writer.note_capture_error(message, step=step)
        except Exception:  # the run folder itself refuses writes: the line above is all there is
            pass

    def close(self) -> None:
        """Remove every hook this core registered (idempotent)."""
        if self._grab not in (None, "called"):
            self._grab.remove()
            self._grab = None
        if self.recorder is not None:
            self.recorder.remove()
        if self.spectral is not None:
            self.spectral.remove()


def _stage_of(exc: BaseException, stage: str) -> str:
    """``"statistics"`` when ``exc`` rose inside a statistics hook during the probe pass, else ``stage``."""
    if stage == "probe":
        files = {Path(frame.filename).name for frame in traceback.extract_tb(exc.__traceback__)}
        if files & {Path(m.__file__).name for m in (hooks, stats, spectra, spectral_hooks)}:
            return "statistics"
    return stage


def _frame_tensors(images) -> dict:
    """``frame:<name>`` entries of a ``frames(output)`` result for the capture's transfer."""
    if not isinstance(images, dict) or not all(isinstance(k, str) and k for k in images):
        raise TypeError(f"frames(output) must return {{name: 2-D array}}, got {type(images).__name__}")
    out = {}
    for name, value in images.items():
        value = value.detach() if isinstance(value, torch.Tensor) else torch.as_tensor(np.asarray(value))
        if value.is_complex() or value.ndim not in (2, 3):
            raise ValueError(
                f"frame {name!r} must be a real (H, W) or (P, H, W) array, got {value.dtype} {tuple(value.shape)}"
            )
        out[f"frame:{name}"] = value
    return out
