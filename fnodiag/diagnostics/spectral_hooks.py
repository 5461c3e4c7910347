"""Spectral statistics at capture: the reducer the capture core runs beside the activation recorder.

:class:`SpectralRecorder` adds, to a capture's probe pass, the spectral statistics of
:mod:`fnodiag.diagnostics.spectra` (stat names there, a contract with the run store):

* every hooked layer (the same targets and layouts as the
  :class:`~fnodiag.diagnostics.hooks.ActivationRecorder`) whose output has spatial axes (1-D, 2-D,
  3-D, real or complex): its :func:`~fnodiag.diagnostics.spectra.band_energy`, stored as the
  ``activation`` statistics ``spectral_band_0 .. spectral_band_7`` of that layer;
* every spectral convolution of the model (fnodiag's ``SpectralConv2d``, neuraloperator's
  ``SpectralConv``: those :func:`~fnodiag.diagnostics.spectra.kept_modes_of` knows), hooked or not: the
  share of its *input*'s energy above the modes it keeps
  (:func:`~fnodiag.diagnostics.spectra.energy_above`, a forward pre-hook), stored as the ``activation``
  statistic ``spectral_above`` of the convolution's module path;
* the weight of every such convolution: :func:`~fnodiag.diagnostics.spectra.mode_magnitudes` (mean
  ``|w|`` per radial band of retained modes, at most 8 bands), stored as the ``param`` statistics
  ``mode_band_0 ..`` of the convolution's module path (:meth:`SpectralRecorder.weight_stats`; no pass
  needed).

Like the activation recorder it keeps only reduced device tensors (no activation outlives its hook)
and never reads one: :meth:`SpectralRecorder.device_stats` joins the capture's named tensors, which
reach the host in the capture's ONE :func:`~fnodiag.diagnostics.stats.to_host` transfer, and
:meth:`SpectralRecorder.unpack` sorts the host copy into store rows. It is a separate recorder (not a
part of ``activation_stats``) so that the statistics vector and its recorder stay as they are; the
capture core calls it (:mod:`fnodiag.training.capture_core`, ``CaptureCore(spectra=True)``).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from fnodiag.diagnostics.hooks import HookSet
from fnodiag.diagnostics.spectra import (
    ABOVE_STAT,
    N_BANDS,
    band_energy,
    band_stats,
    energy_above,
    kept_modes_of,
    mode_magnitudes,
    mode_stats,
)
from fnodiag.diagnostics.stats import ROOT_NAME, to_host
from fnodiag.diagnostics.targets import OUTPUT, TargetPlan, check_targets, first_tensor

#: Key prefixes of :meth:`SpectralRecorder.device_stats` (distinct from the activation recorder's).
BANDS, ABOVE, MODES = "bands:", "above:", "modes:"


def spectral_convs(model: nn.Module) -> dict[str, tuple[nn.Module, tuple]]:
    """Module path (``"(root)"`` for the model itself) -> (module, its :func:`kept_modes_of` spec) of every
    spectral convolution in ``model``."""
    out = {}
    for name, module in model.named_modules():
        spec = kept_modes_of(module)
        if spec is not None:
            out[name or ROOT_NAME] = (module, spec)  # named as the parameter statistics name modules
    return out


class SpectralRecorder(HookSet):
    """Band energies of hooked outputs, energy above the kept modes of spectral-convolution inputs,
    per-mode weight magnitudes (see the module docstring).

    Parameters
    ----------
    model : nn.Module
        The watched model (uncompiled).
    targets : list of str or TargetPlan
        The layers whose outputs get band energies (``"output"``: the model's own output), and
        their layouts when a plan.
    n_bands : int
        Radial bands per activation.
    layouts : dict of str to tuple of int, optional
        Target -> spatial shape ``S``: a ``(BATCH, C, N)`` output with ``N = prod(S)`` is measured as
        ``(BATCH, C, *S)`` (as the activation recorder does).

    Attributes
    ----------
    convs : dict
        Module path -> (spectral convolution, kept-mode spec).
    active : bool
        While False, registered hooks return at once.
    """

    def __init__(self, model: nn.Module, targets, *, n_bands: int = N_BANDS, layouts: dict | None = None):
        plan_layouts = {}
        if isinstance(targets, TargetPlan):
            targets, plan_layouts = targets.targets, targets.layouts
        targets = check_targets(model, list(targets))
        modules = dict(model.named_modules())
        self.n_bands = int(n_bands)
        self.targets = targets
        self.layouts = {t: tuple(s) for t, s in {**plan_layouts, **(layouts or {})}.items() if t in targets}
        self.convs = spectral_convs(model)
        self.active = True
        self._modules = {t: model if t == OUTPUT else modules[t] for t in targets}
        self._handles: list = []
        self._bands: dict[str, Tensor] = {}
        self._above: dict[str, Tensor] = {}

    # ------------------------------------------------------------------ hooks
    def _attach(self):
        """One forward hook per target, one forward pre-hook per spectral convolution."""
        for name, module in self._modules.items():
            yield module.register_forward_hook(self._output_hook(name))
        for name, (module, spec) in self.convs.items():
            yield module.register_forward_pre_hook(self._input_hook(name, spec))

    def _output_hook(self, name: str):
        layout = self.layouts.get(name)

        def hook(module, args, output):
            if not self.active:
                return None
            tensor = first_tensor(output)
            if tensor is None:
                return None
            if layout is not None and tensor.ndim == 3 and tensor.shape[2] == math.prod(layout):
                tensor = tensor.reshape(*tensor.shape[:2], *layout)
            if tensor.ndim >= 3 and tensor.numel():  # spatial axes: (BATCH, C, *S)
                self._bands[name] = band_energy(tensor, self.n_bands)
            return None

        return hook

    def _input_hook(self, name: str, spec):
        def hook(module, args):
            if not self.active:
                return None
            tensor = first_tensor(args)
            if tensor is not None and tensor.ndim == len(spec) + 2 and tensor.numel():
                self._above[name] = energy_above(tensor, spec)
            return None

        return hook

    # ------------------------------------------------------------------ results
    def device_stats(self) -> dict[str, Tensor]:
        """What the last pass recorded, as named float32 device tensors for ``to_host``.

        Keys: ``"bands:<layer>"`` ``(B,)`` in target order, ``"above:<conv>"`` 0-d.
        """
        named = {f"{BANDS}{t}": self._bands[t] for t in self.targets if t in self._bands}
        named.update({f"{ABOVE}{c}": self._above[c] for c in self.convs if c in self._above})
        return named

    def weight_stats(self) -> dict[str, Tensor]:
        """``"modes:<conv>"`` -> :func:`mode_magnitudes` ``(B,)`` of each spectral convolution's weight now."""
        return {f"{MODES}{name}": mode_magnitudes(module, self.n_bands) for name, (module, _) in self.convs.items()}

    @staticmethod
    def unpack(host: dict) -> dict[str, dict[tuple[str, str], float]]:
        """``{"activation": {(layer, stat): v}, "param": {(conv, stat): v}}`` from the host copy (other keys
        ignored)."""
        act: dict[tuple[str, str], float] = {}
        par: dict[tuple[str, str], float] = {}
        for key, value in host.items():
            if key.startswith(BANDS):
                act.update(zip(((key[len(BANDS) :], s) for s in band_stats(len(value))), map(float, value)))
            elif key.startswith(ABOVE):
                act[(key[len(ABOVE) :], ABOVE_STAT)] = float(value)
            elif key.startswith(MODES):
                par.update(zip(((key[len(MODES) :], s) for s in mode_stats(len(value))), map(float, value)))
        return {"activation": act, "param": par}

    def clear(self) -> None:
        """Forget what the last pass recorded (hooks stay registered)."""
        self._bands.clear()
        self._above.clear()


def collect(recorder: SpectralRecorder, model: nn.Module, *args, **kwargs) -> dict:
    """Run ``model(*args, **kwargs)`` once under ``inference_mode`` with ``recorder``'s hooks and bring
    everything (weights included) to the host in one transfer: :meth:`SpectralRecorder.unpack` of it.

    A convenience for notebooks and tests; the capture core merges the same tensors into its own transfer.
    """
    with recorder, torch.inference_mode():
        model(*args, **kwargs)
    named = {**recorder.device_stats(), **recorder.weight_stats()}
    recorder.clear()
    return SpectralRecorder.unpack(to_host(named))


__all__ = ["ABOVE", "BANDS", "MODES", "SpectralRecorder", "collect", "spectral_convs"]
