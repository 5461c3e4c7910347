"""Forward-hook recorder of per-layer activation statistics.

:class:`ActivationRecorder` hooks named submodules of a model. Each hook reduces the module's
output to its :func:`~fnodiag.diagnostics.stats.activation_stats` vector at once (on the device, no
host synchronisation) and keeps only that vector: no activation outlives the hook. Outputs of any
rank are recorded; a ``(BATCH, C)`` output simply has no spatial statistics (absent, not NaN). A
``(BATCH, C, N)`` output given a layout ``S`` (``N = prod(S)``, found by
:func:`~fnodiag.diagnostics.targets.traced_targets`) is viewed as ``(BATCH, C, *S)`` first. For a
residual block whose ``.spectral`` and ``.local`` branches are both hooked, the recorder also keeps
the two scalars ``mean|S|`` and ``mean|L|`` and reports their ratio as the block's
``"spectral_local_ratio"`` stat.

Use it as a context manager for a one-off capture, or register once and toggle :attr:`active`
(a callback capturing every ``k`` steps)::

    plan = choose_targets(model, probe)  # TargetPlan: targets in forward order, left out, rule
    with ActivationRecorder(model, plan) as rec:
        model(probe)
    values = rec.collect()            # {(layer, stat): float}, one host transfer

The target ``"output"`` is the model's own output (a hook on the root module). Target choice
(:func:`choose_targets`, :func:`default_targets`, :class:`TargetPlan`) lives in
:mod:`fnodiag.diagnostics.targets` and is re-exported here.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from fnodiag.diagnostics.stats import BRANCH_STAT, STAT_SETS, absent_stats, activation_stats, stat_set, to_host
from fnodiag.diagnostics.targets import (  # noqa: F401  (re-exported: hooks is where callers look for them)
    MAX_TARGETS,
    OUTPUT,
    ProbeError,
    TargetPlan,
    check_targets,
    choose_targets,
    default_targets,
    first_tensor,
    traced_targets,
)

_BRANCHES = ("spectral", "local")


def _compiled(module: nn.Module) -> bool:
    return hasattr(module, "_orig_mod")


class HookSet:
    """A set of hooks registered together: :meth:`register` once (a no-op when registered; all or none),
    :meth:`remove` any number of times (recorded values are kept); also a context manager.

    Subclasses set ``self._handles = []`` and yield each new handle from ``_attach()``.
    """

    _handles: list

    def _attach(self):
        raise NotImplementedError

    def register(self):
        """Register every hook of :meth:`_attach` (a no-op when already registered)."""
        if self._handles:
            return self
        try:
            for handle in self._attach():
                self._handles.append(handle)
        except BaseException:
            self.remove()
            raise
        return self

    def remove(self) -> None:
        """Remove every hook; safe to call any number of times. Recorded values are kept."""
        handles, self._handles = self._handles, []
        for handle in handles:
            handle.remove()

    def __enter__(self):
        return self.register()

    def __exit__(self, *exc) -> None:
        self.remove()


class ActivationRecorder(HookSet):
    """Record activation statistics of named layers through forward hooks.

    Parameters
    ----------
    model : nn.Module
        The model, uncompiled (for ``torch.compile`` output pass ``model._orig_mod``).
    targets : list of str or TargetPlan, optional
        Module paths to hook (``"output"`` = the root module's output), or a :class:`TargetPlan`
        from :func:`choose_targets` (its targets and layouts); default :func:`default_targets`.
        Duplicates are dropped.
    near_zero : float
        Threshold of the ``frac_near_zero`` stat.
    layouts : dict of str to tuple of int, optional
        Target -> spatial shape ``S``: a ``(BATCH, C, N)`` output with ``N = prod(S)`` is measured
        as ``(BATCH, C, *S)`` (added to those of a plan).

    Attributes
    ----------
    targets : list of str
        Hooked layer names.
    active : bool
        While False, registered hooks return at once (nothing is computed or stored).

    Raises
    ------
    ValueError
        A compiled module, or a target name the model does not have (the message lists some
        valid names).
    """

    def __init__(
        self,
        model: nn.Module,
        targets: list[str] | TargetPlan | None = None,
        *,
        near_zero: float = 1e-6,
        layouts: dict[str, tuple[int, ...]] | None = None,
    ) -> None:
        if _compiled(model):
            raise ValueError(
                "ActivationRecorder cannot hook a torch.compile'd module; pass the uncompiled module (model._orig_mod)"
            )
        modules = dict(model.named_modules())
        inner = next((n for n, m in modules.items() if n and _compiled(m)), None)
        if inner is not None:
            raise ValueError(f"ActivationRecorder cannot hook compiled submodule {inner!r}; pass an uncompiled model")
        plan_layouts = {}
        if isinstance(targets, TargetPlan):
            targets, plan_layouts = targets.targets, targets.layouts
        targets = check_targets(model, default_targets(model) if targets is None else list(targets))
        self.model = model
        self.targets = targets
        self.near_zero = float(near_zero)
        self.layouts = {t: tuple(s) for t, s in {**plan_layouts, **(layouts or {})}.items() if t in targets}
        self.active = True
        self._modules = {t: model if t == OUTPUT else modules[t] for t in targets}
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self._stats: dict[str, Tensor] = {}
        self._sets: dict[str, str] = {}  # layer -> key of STAT_SETS naming its stats vector
        self._shapes: dict[str, tuple[int, ...]] = {}
        self._branch_means: dict[str, dict[str, Tensor]] = {}

    # ------------------------------------------------------------------ registration
    @property
    def registered(self) -> bool:
        """Whether the hooks are currently registered."""
        return bool(self._handles)

    def _attach(self):
        """One forward hook per target."""
        for name, module in self._modules.items():
            yield module.register_forward_hook(self._make_hook(name))

    # ------------------------------------------------------------------ hooks
    def _make_hook(self, name: str):
        parent, _, leaf = name.rpartition(".")
        branch = leaf if (parent and leaf in _BRANCHES) else None
        layout = self.layouts.get(name)

        def hook(module, args, output):
            if not self.active:
                return None
            tensor = first_tensor(output)
            if tensor is None:
                return None
            if layout is not None and tensor.ndim == 3 and tensor.shape[2] == math.prod(layout):
                tensor = tensor.reshape(*tensor.shape[:2], *layout)  # a flattened field, viewed with its axes
            kind = stat_set(tensor.ndim)
            stats = activation_stats(tensor, near_zero=self.near_zero)
            self._stats[name], self._sets[name], self._shapes[name] = stats, kind, tuple(tensor.shape)
            if branch is not None:
                # abs_mean is mean|branch output|: a scalar, never the activation itself.
                self._branch_means.setdefault(parent, {})[branch] = stats[STAT_SETS[kind].index("abs_mean")]
            return None

        return hook

    # ------------------------------------------------------------------ results
    def results(self) -> dict[str, Tensor]:
        """Stats of the last forward call per hooked layer.

        Returns
        -------
        dict of str to torch.Tensor
            Layer -> float32 vector on the model's device, entries :meth:`stat_names` ``[layer]``
            (all of ``ACTIVATION_STATS`` for an output with spatial axes), for the layers whose
            hook fired since the last :meth:`clear`, in :attr:`targets` order (not the order hooks
            fire, where a block's branches come before the block). Branch ratios:
            :meth:`branch_ratios`.
        """
        return {t: self._stats[t] for t in self.targets if t in self._stats}

    def stat_names(self) -> dict[str, tuple[str, ...]]:
        """Layer -> names of the statistics recorded for it in the last forward (what it has)."""
        return {t: STAT_SETS[self._sets[t]] for t in self.targets if t in self._sets}

    def absent(self) -> dict[str, dict[str, str]]:
        """Layer -> ``{stat: why}`` for the statistics that did not apply to its last output."""
        return {t: a for t in self.targets if t in self._shapes and (a := absent_stats(self._shapes[t]))}

    def shapes(self) -> dict[str, tuple[int, ...]]:
        """Layer -> shape of its last measured output (after any layout)."""
        return {t: self._shapes[t] for t in self.targets if t in self._shapes}

    def branch_ratios(self) -> dict[str, Tensor]:
        """Per block ``mean|S| / mean|L|`` of the last forward, where both branch hooks fired.

        Returns
        -------
        dict of str to torch.Tensor
            Block path -> 0-d float32 on the model's device.
        """
        return {
            block: m["spectral"] / m["local"] for block, m in self._branch_means.items() if len(m) == len(_BRANCHES)
        }

    def device_stats(self) -> dict[str, Tensor]:
        """Everything recorded, as named device tensors for :func:`~fnodiag.diagnostics.stats.to_host`.

        Lets a caller bring these and its own tensors to the host in one transfer, then
        :meth:`unpack` the result. Keys are ``"<set>:<layer>"`` (``<set>`` a key of ``STAT_SETS``
        naming the vector's entries) and ``"ratio:<block>"``.
        """
        named = {f"{self._sets[t]}:{t}": self._stats[t] for t in self.targets if t in self._stats}  # network order
        named.update({f"ratio:{block}": v for block, v in self.branch_ratios().items()})
        return named

    @staticmethod
    def unpack(host: dict) -> dict[tuple[str, str], float]:
        """``(layer, stat) -> float`` from the host copy of :meth:`device_stats` (other keys ignored).

        A layer gets exactly the statistics its output had: a statistic that did not apply is not
        a key (never a NaN value).
        """
        out: dict[tuple[str, str], float] = {}
        for key, value in host.items():
            kind, _, name = key.partition(":")
            if kind in STAT_SETS and name:
                out.update({(name, s): float(v) for s, v in zip(STAT_SETS[kind], value)})
            elif kind == "ratio":
                out[(name, BRANCH_STAT)] = float(value)
        return out

    def collect(self) -> dict[tuple[str, str], float]:
        """All recorded stats as ``(layer, stat) -> float`` with one host transfer, then :meth:`clear`.

        Returns
        -------
        dict of (str, str) to float
            ``(layer, s)`` for every ``s`` in :meth:`stat_names` of each recorded layer, and
            ``(block, "spectral_local_ratio")`` for each block in :meth:`branch_ratios`.
        """
        out = self.unpack(to_host(self.device_stats()))
        self.clear()
        return out

    def clear(self) -> None:
        """Forget every recorded stat (the hooks stay registered)."""
        self._stats.clear()
        self._sets.clear()
        self._shapes.clear()
        self._branch_means.clear()
