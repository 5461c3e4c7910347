"""Forward-hook recorder of per-layer activation statistics.

:class:`ActivationRecorder` hooks named submodules of a generator. Each hook reduces the
module's output to the :data:`~fnodiag.diagnostics.stats.ACTIVATION_STATS` vector at once (on
the device, no host synchronisation) and keeps only that vector: no activation outlives the hook.
For a residual block whose ``.spectral`` and ``.local`` branches are both hooked, the recorder
also keeps the two scalars ``mean|S|`` and ``mean|L|`` and reports their ratio as the block's
``"spectral_local_ratio"`` stat.

Use it as a context manager for a one-off capture, or register once and toggle :attr:`active`
(a callback capturing every ``k`` steps)::

    with ActivationRecorder(generator) as rec:
        generator(x)
    values = rec.collect()            # {(layer, stat): float}, one host transfer

The target ``"output"`` is the generator's own output (a hook on the root module).
"""

from __future__ import annotations

import re

import torch
from torch import Tensor, nn

from fnodiag.diagnostics.stats import ACTIVATION_STATS, BRANCH_STAT, activation_stats, to_host

OUTPUT = "output"
_BLOCK = re.compile(r"(encoder\.\d+|bottleneck)")
_PLAIN = re.compile(r"(lifter|decoder\.\d+|head)")
_BRANCHES = ("spectral", "local")


def _compiled(module: nn.Module) -> bool:
    return hasattr(module, "_orig_mod")


def default_targets(model: nn.Module) -> list[str]:
    """The layers worth watching in a hybrid U-NO, in forward order.

    ``"lifter"``, every ``"encoder.{i}"`` block and ``"bottleneck"`` followed by the block's
    ``".spectral"``, ``".local"`` and (normalised blocks) ``".norm"``, every ``"decoder.{i}"``,
    ``"head"``, and ``"output"`` (the generator's own output). Names the model lacks are
    skipped, so any model gets at least ``["output"]``.

    Parameters
    ----------
    model : nn.Module
        The (uncompiled) generator.

    Returns
    -------
    list of str
        Module paths as in ``model.named_modules()``, plus ``"output"``.
    """
    targets: list[str] = []
    for name, module in model.named_modules():
        if _PLAIN.fullmatch(name):
            targets.append(name)
        elif _BLOCK.fullmatch(name):
            targets.append(name)
            children = dict(module.named_children())
            targets += [f"{name}.{child}" for child in (*_BRANCHES, "norm") if child in children]
    return targets + [OUTPUT]


def _first_tensor(output) -> Tensor | None:
    """The module output itself, or the first tensor of a tuple/list output."""
    if isinstance(output, Tensor):
        return output
    if isinstance(output, (tuple, list)):
        return next((o for o in output if isinstance(o, Tensor)), None)
    return None


class ActivationRecorder:
    """Record activation statistics of named layers through forward hooks.

    Parameters
    ----------
    model : nn.Module
        The generator, uncompiled (for ``torch.compile`` output pass ``model._orig_mod``).
    targets : list of str, optional
        Module paths to hook (``"output"`` = the root module's output); default
        :func:`default_targets`. Duplicates are dropped.
    near_zero : float
        Threshold of the ``frac_near_zero`` stat.

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

    def __init__(self, model: nn.Module, targets: list[str] | None = None, *, near_zero: float = 1e-6) -> None:
        if _compiled(model):
            raise ValueError(
                "ActivationRecorder cannot hook a torch.compile'd module; pass the uncompiled module (model._orig_mod)"
            )
        modules = dict(model.named_modules())
        inner = next((n for n, m in modules.items() if n and _compiled(m)), None)
        if inner is not None:
            raise ValueError(f"ActivationRecorder cannot hook compiled submodule {inner!r}; pass an uncompiled model")
        targets = default_targets(model) if targets is None else list(dict.fromkeys(targets))
        valid = [n for n in modules if n]
        unknown = [t for t in targets if t != OUTPUT and (t == "" or t not in modules)]
        if unknown:
            shown = ", ".join([OUTPUT] + valid[:8]) + (", ..." if len(valid) > 8 else "")
            raise ValueError(f"unknown target(s) {', '.join(map(repr, unknown))}; valid names include: {shown}")
        self.model = model
        self.targets = targets
        self.near_zero = float(near_zero)
        self.active = True
        self._modules = {t: model if t == OUTPUT else modules[t] for t in targets}
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self._stats: dict[str, Tensor] = {}
        self._branch_means: dict[str, dict[str, Tensor]] = {}

    # ------------------------------------------------------------------ registration
    @property
    def registered(self) -> bool:
        """Whether the hooks are currently registered."""
        return bool(self._handles)

    def register(self) -> ActivationRecorder:
        """Register one forward hook per target (a no-op when already registered)."""
        if self._handles:
            return self
        try:
            for name, module in self._modules.items():
                self._handles.append(module.register_forward_hook(self._make_hook(name)))
        except BaseException:
            self.remove()
            raise
        return self

    def remove(self) -> None:
        """Remove every hook; safe to call any number of times. Recorded stats are kept."""
        handles, self._handles = self._handles, []
        for handle in handles:
            handle.remove()

    def __enter__(self) -> ActivationRecorder:
        return self.register()

    def __exit__(self, *exc) -> None:
        self.remove()

    # ------------------------------------------------------------------ hooks
    def _make_hook(self, name: str):
        parent, _, leaf = name.rpartition(".")
        branch = leaf if (parent and leaf in _BRANCHES) else None

        def hook(module, args, output):
            if not self.active:
                return None
            tensor = _first_tensor(output)
            if tensor is None:
                return None
            stats = activation_stats(tensor, near_zero=self.near_zero)
            self._stats[name] = stats
            if branch is not None:
                # abs_mean is mean|branch output|: a scalar, never the activation itself.
                self._branch_means.setdefault(parent, {})[branch] = stats[ACTIVATION_STATS.index("abs_mean")]
            return None

        return hook

    # ------------------------------------------------------------------ results
    def results(self) -> dict[str, Tensor]:
        """Stats of the last forward call per hooked layer.

        Returns
        -------
        dict of str to torch.Tensor
            Layer -> ``(len(ACTIVATION_STATS),)`` float32 on the model's device, for the layers
            whose hook fired since the last :meth:`clear`, in :attr:`targets` order (not the
            order hooks fire, where a block's branches come before the block). Branch ratios:
            :meth:`branch_ratios`.
        """
        return {t: self._stats[t] for t in self.targets if t in self._stats}

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
        :meth:`unpack` the result.
        """
        named = {f"stats:{t}": self._stats[t] for t in self.targets if t in self._stats}  # network order
        named.update({f"ratio:{block}": v for block, v in self.branch_ratios().items()})
        return named

    @staticmethod
    def unpack(host: dict) -> dict[tuple[str, str], float]:
        """``(layer, stat) -> float`` from the host copy of :meth:`device_stats` (other keys ignored)."""
        out: dict[tuple[str, str], float] = {}
        for key, value in host.items():
            kind, _, name = key.partition(":")
            if kind == "stats":
                out.update({(name, s): float(v) for s, v in zip(ACTIVATION_STATS, value)})
            elif kind == "ratio":
                out[(name, BRANCH_STAT)] = float(value)
        return out

    def collect(self) -> dict[tuple[str, str], float]:
        """All recorded stats as ``(layer, stat) -> float`` with one host transfer, then :meth:`clear`.

        Returns
        -------
        dict of (str, str) to float
            ``(layer, s)`` for every ``s`` in ``ACTIVATION_STATS`` of each recorded layer, and
            ``(block, "spectral_local_ratio")`` for each block in :meth:`branch_ratios`.
        """
        out = self.unpack(to_host(self.device_stats()))
        self.clear()
        return out

    def clear(self) -> None:
        """Forget every recorded stat (the hooks stay registered)."""
        self._stats.clear()
        self._branch_means.clear()
