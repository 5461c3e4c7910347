"""Which layers of a model to watch: fnodiag's U-NO layout, or one traced forward pass of the probe.

:func:`choose_targets` is the one entry point a capture calls; it returns a :class:`TargetPlan`
(the targets in forward order, what was left out and why, the rule that chose them). For
fnodiag's own U-NO generators it keeps :func:`default_targets`; for any other model
:func:`traced_targets` runs the model once on the probe and keeps the modules that really ran:

1. every module that ran is seen through a forward pre-hook (order of first call, number of
   calls, input shape) and a forward hook (output shape);
2. candidates are the leaf modules that ran and the *operator* modules: modules that ran and hold
   parameters that no module run inside them uses (a parameter of their own, or one in a child
   that is never called, e.g. neuraloperator's ``SpectralConv`` whose weight is a factorized
   tensor module); pure containers are covered by their children;
3. a candidate called more than once in the pass (a hook keeps only the last call) is recorded
   through its nearest enclosing module called once; without one it is left out;
4. a candidate whose output an enclosing module returns as a reshaped view with more axes (a
   field whose spatial axes were flattened for a ``Conv1d`` and restored) is recorded through that
   module: the same values, with their spatial axes;
5. a ``(BATCH, C, N)`` target inside a module whose input is a field ``(BATCH, C', *S)`` with
   ``prod(S) = N`` gets the layout ``S``: the recorder views its output as ``(BATCH, C, *S)``;
6. targets are in forward order: the order of first call of the modules each stands for (a
   ``ChannelMLP`` recorded through its last ``Conv1d`` comes after its first one);
7. the cap keeps operator modules first, then leaves with parameters, then leaves without; the
   class that does not fit is taken evenly over forward order; the model's output (``"output"``)
   is always kept and counts towards the cap.

For neuraloperator's FNO this gives the positional embedding, the lifting (its hidden ``Conv1d``
and its output), per block the skip, the channel-MLP skip, the ``SpectralConv`` and the channel MLP
(hidden layer and output), the projection and the output, every one with its spatial axes.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from fnodiag.diagnostics.stats import absent_stats, activation_stat_names

OUTPUT = "output"
MAX_TARGETS = 64  # a capture's cost grows with its targets; 64 kept a neuraloperator FNO of 16 blocks whole
_BLOCK = re.compile(r"(encoder\.\d+|bottleneck)")
_PLAIN = re.compile(r"(lifter|decoder\.\d+|head)")
_BRANCHES = ("spectral", "local")
_CLASSES = ("operator", "parametric leaf", "parameter-free leaf")

RULE_GIVEN = "given: the targets passed in"
RULE_UNO = "fnodiag U-NO layout (default_targets)"
RULE_STATIC = (
    "static (no probe to trace): leaf modules and modules owning parameters directly, in registration "
    "order, first {cap} with the output"
)
RULE_TRACED = (
    "traced: modules that ran in one forward pass of the probe, in order of first call (of the modules each "
    "target stands for): leaves and modules "
    "holding parameters no module inside them uses; a module called more than once is recorded through its "
    "nearest enclosing module called once, a flattened output through the module that restores its axes; "
    "plus the output. Cap {cap}: operator modules, then leaves with parameters, then leaves without; the "
    "class that overflows is taken evenly over forward order"
)


class ProbeError(RuntimeError):
    """The model raised on the probe while its targets were traced (the message names fnodiag and the fix)."""


@dataclass(frozen=True)
class TargetPlan:
    """The layers a capture hooks and how they were chosen.

    Attributes
    ----------
    targets : list of str
        Module paths in forward order, then ``"output"`` (the model's own output).
    left_out : dict of str to str
        Modules that ran but are not watched -> why (cap, called repeatedly, no tensor output).
    rule : str
        The rule that chose the targets, in words.
    merged : dict of str to str
        Modules watched through another target -> that target (a repeated call, a flattened view).
    layouts : dict of str to tuple of int
        Target -> spatial shape ``S`` its ``(BATCH, C, N)`` output is viewed as (``N = prod(S)``).
    shapes : dict of str to tuple of int
        Target -> its output shape in the traced pass, after the layout (empty when not traced).
    """

    targets: list[str]
    left_out: dict[str, str] = field(default_factory=dict)
    rule: str = RULE_GIVEN
    merged: dict[str, str] = field(default_factory=dict)
    layouts: dict[str, tuple[int, ...]] = field(default_factory=dict)
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)

    def stats(self) -> dict[str, tuple[str, ...]]:
        """Target -> the activation statistics it will have (targets of known shape only)."""
        return {t: activation_stat_names(len(s)) for t, s in self.shapes.items()}

    def absent(self) -> dict[str, dict[str, str]]:
        """Target -> ``{stat: why}`` for the statistics that do not apply to it (known shapes only)."""
        return {t: a for t, s in self.shapes.items() if (a := absent_stats(s))}

    def describe(self) -> dict:
        """A JSON-ready record for ``effective_config.json``: rule, targets, left out, merged, layouts, absent."""
        return {
            "rule": self.rule,
            "targets": list(self.targets),
            "left_out": dict(self.left_out),
            "merged": dict(self.merged),
            "layouts": {t: list(s) for t, s in self.layouts.items()},
            "absent": self.absent(),
        }


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


def is_uno(targets: list[str]) -> bool:
    """Whether :func:`default_targets` found fnodiag's U-NO layout (not just ``"output"``)."""
    return any(t == "lifter" or t.startswith(("encoder.", "bottleneck")) for t in targets)


def check_targets(model: nn.Module, targets: list[str]) -> list[str]:
    """``targets`` without duplicates, each a module path of ``model`` or ``"output"``.

    Raises
    ------
    ValueError
        A target the model does not have (the message lists some valid names).
    """
    targets = list(dict.fromkeys(targets))
    modules = dict(model.named_modules())
    unknown = [t for t in targets if t != OUTPUT and (t == "" or t not in modules)]
    if unknown:
        valid = [n for n in modules if n]
        shown = ", ".join([OUTPUT] + valid[:8]) + (", ..." if len(valid) > 8 else "")
        raise ValueError(f"unknown target(s) {', '.join(map(repr, unknown))}; valid names include: {shown}")
    return targets


def first_tensor(value) -> Tensor | None:
    """The value itself if a tensor, else the first tensor of a tuple / list / dict value."""
    if isinstance(value, Tensor):
        return value
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, (tuple, list)):
        return next((v for v in value if isinstance(v, Tensor)), None)
    return None


def _has_children(module: nn.Module) -> bool:
    return next(module.children(), None) is not None


def _has_params(module: nn.Module, recurse: bool = True) -> bool:
    return next(module.parameters(recurse=recurse), None) is not None


def _holds_unused_params(name: str, modules: dict[str, nn.Module], calls: dict) -> bool:
    """Whether module ``name`` holds a parameter that no module run inside it uses.

    A parameter owned directly by ``name``, or by a module inside it such that no module on the path
    below ``name`` down to its owner ran (e.g. the factorized weight module of a spectral convolution,
    or an ``nn.ParameterList``, never called).
    """
    for path, module in modules.items():
        if not (path == name or _within(path, name)) or not _has_params(module, recurse=False):
            continue
        p = path
        while p != name and p not in calls:
            p = p.rpartition(".")[0]
        if p == name:
            return True
    return False


def _spread(n: int, k: int) -> list[int]:
    """``k`` indices of ``range(n)`` evenly spaced, first and last included (``k <= n``)."""
    if k <= 0:
        return []
    if k == 1:
        return [0]
    return [math.floor(i * (n - 1) / (k - 1) + 0.5) for i in range(k)]


def _cap(candidates: list[tuple[str, int]], budget: int) -> tuple[list[str], list[tuple[str, str]]]:
    """Keep ``budget`` of ``(name, class)`` candidates (forward order): lower classes whole, then spread."""
    kept: set[str] = set()
    left = budget
    for cls in range(len(_CLASSES)):
        members = [n for n, c in candidates if c == cls]
        take = members if len(members) <= left else [members[i] for i in _spread(len(members), left)]
        kept.update(take)
        left -= len(take)
    dropped = [(n, _CLASSES[c]) for n, c in candidates if n not in kept]
    return [n for n, _ in candidates if n in kept], dropped


@dataclass
class _Call:
    """What one module did in the traced pass (first call unless counted)."""

    order: int
    calls: int = 0
    in_shape: tuple[int, ...] | None = None
    shape: tuple[int, ...] | None = None
    done: bool = False
    view_of: str | None = None  # the module inside whose output this one returned, reshaped to more axes


def _restores_axes(inner: Tensor, outer: Tensor) -> bool:
    """Whether ``outer`` is ``inner`` (same memory, same order) with more axes and the same ``(BATCH, C)``."""
    return (
        outer.ndim > inner.ndim >= 2
        and outer.shape[:2] == inner.shape[:2]
        and outer.numel() == inner.numel()
        and outer.dtype == inner.dtype
        and outer.is_contiguous()
        and inner.is_contiguous()
        and outer.data_ptr() == inner.data_ptr()
    )


def _within(name: str, parent: str) -> bool:
    return parent == "" or name.startswith(parent + ".")


def _trace(model: nn.Module, probe) -> dict[str, _Call]:
    """Run ``model`` once on ``probe`` (eval mode, no grad, RNG untouched); what each module did."""
    calls: dict[str, _Call] = {}
    last: list = [None]  # (name, output tensor) of the module that finished last

    def pre(name):
        def hook(module, args, kwargs):
            call = calls.setdefault(name, _Call(order=len(calls)))
            call.calls += 1
            if call.calls == 1:
                x = first_tensor(args) if first_tensor(args) is not None else first_tensor(kwargs)
                call.in_shape = tuple(x.shape) if x is not None else None

        return hook

    def post(name):
        def hook(module, args, output):
            call, out = calls[name], first_tensor(output)
            if not call.done:
                call.done = True
                call.shape = tuple(out.shape) if out is not None else None
                prev = last[0]
                if out is not None and prev is not None and prev[0] != name and _within(prev[0], name):
                    if _restores_axes(prev[1], out):
                        call.view_of = prev[0]
            last[0] = (name, out) if out is not None else None

        return hook

    modules = list(model.named_modules())
    modes = {name: m.training for name, m in modules}
    handles = []
    device = probe.device if isinstance(probe, Tensor) else torch.device("cpu")
    try:
        for name, m in modules:
            handles.append(m.register_forward_pre_hook(pre(name), with_kwargs=True))
            handles.append(m.register_forward_hook(post(name)))
        model.eval()
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), torch.no_grad():
            if isinstance(probe, dict):
                model(**probe)
            elif isinstance(probe, (tuple, list)):
                model(*probe)
            else:
                model(probe)
    except Exception as exc:
        detail = (str(exc).strip().splitlines() or [""])[0][:300]
        raise ProbeError(
            f"fnodiag could not run the model on the probe to find its layers ({type(exc).__name__}: {detail}); "
            "pass a probe the model accepts, or targets=[...]"
        ) from exc
    finally:
        for h in handles:
            h.remove()
        for name, m in modules:
            m.training = modes[name]
    return calls


def _layout(name: str, shape: tuple[int, ...], calls: dict[str, _Call]) -> tuple[int, ...] | None:
    """Spatial shape ``S`` for a ``(BATCH, C, N)`` output inside a module whose input is ``(BATCH, C', *S)``."""
    if len(shape) != 3:
        return None
    path = name
    while True:
        inp = calls[path].in_shape if path in calls else None
        if inp is not None and len(inp) >= 4 and inp[0] == shape[0] and math.prod(inp[2:]) == shape[2]:
            return tuple(inp[2:])
        if path == "":
            return None
        path = path.rpartition(".")[0]


def traced_targets(model: nn.Module, probe, *, max_targets: int = MAX_TARGETS) -> TargetPlan:
    """Targets found by one forward pass of ``probe`` through ``model`` (the rule in the module docstring).

    Parameters
    ----------
    model : nn.Module
        Any uncompiled model; it runs once in eval mode under ``torch.no_grad()``; its training
        flags and the random number generators are restored.
    probe : torch.Tensor, tuple or dict
        The model's input: ``model(probe)``, ``model(*probe)`` or ``model(**probe)``.
    max_targets : int
        Most targets kept, ``"output"`` included (>= 1).

    Returns
    -------
    TargetPlan
        Targets in order of first call, then ``"output"``; ``left_out``, ``merged``, ``layouts``
        and ``shapes`` filled.

    Raises
    ------
    ProbeError
        The model raised on the probe.
    """
    if int(max_targets) < 1:
        raise ValueError(f"max_targets must be >= 1, got {max_targets}")
    calls = _trace(model, probe)
    modules = dict(model.named_modules())
    left_out: dict[str, str] = {}
    merged: dict[str, str] = {}
    view_parent = {c.view_of: n for n, c in calls.items() if c.view_of and n and c.calls == 1}
    groups: dict[str, int] = {}  # target -> lowest class of the modules it stands for
    first: dict[str, int] = {}  # target -> first call among the modules it stands for (its place)
    for name, call in sorted(calls.items(), key=lambda kv: kv[1].order):
        module = modules[name]
        if not name:
            continue
        if _has_children(module):
            if not _holds_unused_params(name, modules, calls):
                continue  # a container: the modules that ran inside it are the candidates
            cls = 0
        else:
            cls = 1 if _has_params(module, recurse=False) else 2
        if call.shape is None:
            left_out[name] = "no tensor output"
            continue
        target = name
        if call.calls > 1:
            path = name
            while path:
                path = path.rpartition(".")[0]
                if path and path in calls and calls[path].calls == 1:
                    target = path
                    break
            else:
                left_out[name] = f"called {call.calls} times in one forward pass and no module around it runs once"
                continue
        while target in view_parent:
            target = view_parent[target]
        if target != name:
            merged[name] = target
        groups[target] = min(groups.get(target, cls), cls)
        first[target] = min(first.get(target, call.order), call.order)
    ordered = sorted(groups, key=first.__getitem__)
    root = calls.get("")
    has_output = root is not None and root.shape is not None
    if not has_output:
        left_out[OUTPUT] = "the model's output holds no tensor"
    budget = int(max_targets) - (1 if has_output else 0)
    kept, dropped = _cap([(t, groups[t]) for t in ordered], budget)
    for t, cls in dropped:
        left_out[t] = f"over the cap of {max_targets} targets ({cls})"
    targets = kept + ([OUTPUT] if has_output else [])
    layouts, shapes = _layouts_and_shapes(targets, calls)
    rule = RULE_TRACED.format(cap=max_targets)
    return TargetPlan(targets, left_out, rule, merged, layouts, shapes)


def _layouts_and_shapes(targets: list[str], calls: dict[str, _Call]) -> tuple[dict, dict]:
    """Layout (see :func:`_layout`) and measured shape of each target that ran with a tensor output."""
    layouts, shapes = {}, {}
    for t in targets:
        path = "" if t == OUTPUT else t
        shape = calls[path].shape if path in calls else None
        if shape is None:
            continue
        layout = _layout(path, shape, calls)
        if layout is not None:
            layouts[t] = layout
            shape = (*shape[:2], *layout)
        shapes[t] = shape
    return layouts, shapes


def static_targets(model: nn.Module, *, max_targets: int = MAX_TARGETS) -> TargetPlan:
    """Targets without a probe: leaves and modules owning parameters directly, in registration order.

    The first ``max_targets - 1`` of them, then ``"output"``; the rest are ``left_out``.
    """
    found = [
        n
        for n, m in model.named_modules()
        if n and not isinstance(m, (nn.ParameterList, nn.ParameterDict))
        if not _has_children(m) or _has_params(m, recurse=False)
    ]
    budget = max(int(max_targets) - 1, 0)
    left_out = {n: f"over the cap of {max_targets} targets" for n in found[budget:]}
    return TargetPlan(found[:budget] + [OUTPUT], left_out, RULE_STATIC.format(cap=max_targets))


def choose_targets(
    model: nn.Module, probe=None, targets: list[str] | None = None, *, max_targets: int = MAX_TARGETS
) -> TargetPlan:
    """The layers a capture of ``model`` hooks: the one entry point a capture calls.

    Parameters
    ----------
    model : nn.Module
        The watched (uncompiled) module.
    probe : torch.Tensor, tuple or dict, optional
        The watched module's input, traced once when needed (see :func:`traced_targets`).
    targets : list of str, optional
        Explicit module paths (``"output"`` = the model's output): checked and kept as given (with
        a probe, traced once for their layouts and shapes).
    max_targets : int
        Cap of the traced and static rules, ``"output"`` included.

    Returns
    -------
    TargetPlan
        ``targets`` given: those (rule ``"given"``). fnodiag's U-NO generators:
        :func:`default_targets` (unchanged). Any other model with a probe: :func:`traced_targets`;
        without one: :func:`static_targets` (registration order).

    Raises
    ------
    ValueError
        An unknown target, or a compiled module (pass ``model._orig_mod``).
    ProbeError
        The model raised on the probe.
    """
    if hasattr(model, "_orig_mod") or any(hasattr(m, "_orig_mod") for m in model.modules()):
        raise ValueError("fnodiag cannot hook a torch.compile'd module; pass the uncompiled module (model._orig_mod)")
    if targets is not None:
        targets = check_targets(model, list(targets))
        if probe is None:
            return TargetPlan(targets)
        layouts, shapes = _layouts_and_shapes(targets, _trace(model, probe))
        return TargetPlan(targets, layouts=layouts, shapes=shapes)
    uno = default_targets(model)
    if is_uno(uno):
        return TargetPlan(uno, rule=RULE_UNO)
    if probe is None:
        return static_targets(model, max_targets=max_targets)
    return traced_targets(model, probe, max_targets=max_targets)
