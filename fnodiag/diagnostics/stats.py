"""Pure statistics of activations, gradients and weights: the maths behind the diagnostics.

Nothing here knows about Lightning or hooks. Every function returns tensors on the device of
its input and never synchronises with the host; :func:`to_host` is the single place where a
whole capture is brought to the CPU, in one transfer per device.

Stat names are a contract shared with the run store, collapse detection and the dashboard:

``ACTIVATION_STATS``
    Every activation statistic, in the order of :func:`activation_stats` for a tensor with
    spatial axes.
``GLOBAL_STATS`` / ``SPATIAL_STATS``
    The statistics any tensor has, and the three that need spatial axes (absent otherwise).
``STAT_SETS``
    Name -> stat names of each vector :func:`activation_stats` can return (``"stats"``: all,
    ``"global"``: no spatial axes); :func:`stat_set` picks one by rank.
``BRANCH_STAT``
    Per-block ratio ``mean|S| / mean|L|`` of the spectral and local branch outputs.
``PARAM_STATS``
    Names under which :func:`grad_norms`, :func:`weight_norms` and :func:`update_ratios`
    values are recorded.
``SCALE_STATS``
    Stat suffixes of :func:`scale_params` (``"<layer>/<stat>"``).

Activations are channel-first, ``(BATCH, C, *S)``, with ``r = len(S)`` spatial axes of any
number: ``(BATCH, C)`` (r = 0), ``(BATCH, C, N)`` (1-D), ``(BATCH, C, H, W)`` (2-D),
``(BATCH, C, D, H, W)`` (3-D), ... A complex activation ``z`` is measured by its magnitude: every
statistic below is that of ``a = |z|`` (none looks at the phase). Meaning per rank:

===================  ============================================  ============================================
statistic            any rank (also ``(BATCH,)`` and scalars)      needs ``r >= 1``; absent for ``r = 0``
===================  ============================================  ============================================
``mean``, ``std``    over all elements                             --
``abs_mean``         mean of ``|a|`` over all elements             --
``p50/p95/p99``      quantiles of ``|a|`` over all elements        --
``frac_near_zero``   share of elements with ``|a| <= near_zero``   --
``nonfinite``        number of non-finite elements                 --
``spatial_std``      --                                            std over ``S`` of each ``(sample, channel)``
                                                                   map, then mean over ``(BATCH, C)``
``min_channel_std``  --                                            per channel the batch mean of that std,
                                                                   then the minimum over channels
``low_freq_ratio``   --                                            share of the ``rfftn`` power over ``S`` in
                                                                   the lowest ``ceil(n/8)`` bins of each
                                                                   spatial axis (mean power of that corner
                                                                   over the mean power of the half-spectrum)
===================  ============================================  ============================================

For ``(BATCH, C, N)`` the spatial axis is ``N`` (a 1-D field, or a field whose axes a layer
flattened: the recorder can be told to view such an output as ``(BATCH, C, *S)`` again); for
``(BATCH, C, H, W)`` these are exactly the definitions of brief §6.1, value for value. A statistic
that does not apply is *absent* (not computed, not stored), never NaN: :func:`absent_stats` says
which and why. NaN means "applies, but the data gives no value" (no finite element, zero power).

Parameters are grouped ``by="module"`` (the direct parameters of each module that owns any,
named by module path; an ``nn.ParameterList``/``ParameterDict`` counts as part of the module
holding it, so the complex weights of a spectral convolution are ``"encoder.0.spectral"``;
parameters of the root module are ``"(root)"``) or ``by="tensor"`` (one entry per parameter,
named as in ``named_parameters``). Shared parameters are counted once.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
from torch import Tensor, nn

from fnodiag.diagnostics.norms import norm_view, tensor_norms

ACTIVATION_STATS = (
    "mean",
    "std",
    "abs_mean",
    "p50",
    "p95",
    "p99",
    "frac_near_zero",
    "spatial_std",
    "min_channel_std",
    "low_freq_ratio",
    "nonfinite",
)
SPATIAL_STATS = ("spatial_std", "min_channel_std", "low_freq_ratio")
GLOBAL_STATS = tuple(s for s in ACTIVATION_STATS if s not in SPATIAL_STATS)
STAT_SETS = {"stats": ACTIVATION_STATS, "global": GLOBAL_STATS}
BRANCH_STAT = "spectral_local_ratio"
PARAM_STATS = ("grad_norm", "weight_norm", "update_ratio")
SCALE_STATS = ("layerscale_mean", "layerscale_abs_max", "weight_mean", "weight_abs_min", "bias_mean")
ROOT_NAME = "(root)"
GROUPINGS = ("module", "tensor")

#: Largest sample the quantiles sort; larger tensors use a deterministic strided subsample.
#: Sorting every activation cost ~40 ms per 0.5 M elements on CPU (most of a capture's time);
#: 4 096 samples estimate p50/p95 within ~1-2 % and p99 from ~40 tail values: a diagnostic
#: estimate, cheap enough to capture every training step (the live-capture overhead budget).
QUANTILE_MAX_NUMEL = 2**12
_QUANTILES = (0.5, 0.95, 0.99)
_INSTANCE_NORMS = (nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d)


# --------------------------------------------------------------------------- activations


def stat_set(ndim: int) -> str:
    """Name (a key of ``STAT_SETS``) of the statistics an activation of rank ``ndim`` has.

    ``"stats"`` (all of ``ACTIVATION_STATS``) for ``(BATCH, C, *S)`` with at least one spatial
    axis (``ndim >= 3``), ``"global"`` (``GLOBAL_STATS``) otherwise.
    """
    return "stats" if ndim >= 3 else "global"


def activation_stat_names(ndim: int) -> tuple[str, ...]:
    """The statistics an activation of rank ``ndim`` has, in the order of :func:`activation_stats`."""
    return STAT_SETS[stat_set(ndim)]


def absent_stats(shape) -> dict[str, str]:
    """The activation statistics that do not apply to an output of ``shape``, each with the reason.

    Parameters
    ----------
    shape : tuple of int
        The activation's shape, e.g. ``(BATCH, C)``.

    Returns
    -------
    dict of str to str
        ``{stat: why}``; empty when every statistic applies (``len(shape) >= 3``).
    """
    ndim = len(shape)
    if ndim >= 3:
        return {}
    kind = {0: "a scalar", 1: "(BATCH,)", 2: "(BATCH, C)"}.get(ndim, f"rank {ndim}")
    why = f"no spatial axes: the output is {kind} {tuple(shape)}"
    return dict.fromkeys(SPATIAL_STATS, why)


def _real_values(t: Tensor) -> Tensor:
    """Detached real working copy: ``|t|`` for complex input, float32 (float64 kept)."""
    a = t.detach()
    if a.is_complex():
        a = a.abs()
    return a.to(torch.float64 if a.dtype == torch.float64 else torch.float32)


def _masked_std(a: Tensor, mask: Tensor, dims: tuple[int, ...]) -> Tensor:
    """Population std of ``a`` over ``dims`` using only the entries where ``mask``; NaN if none.

    Two passes on data shifted by its (masked) maximum, so a constant map gives exactly 0
    rather than the rounding error of its float32 mean.
    """
    expand = (1,) * len(dims)
    count = mask.sum(dim=dims)
    shift = torch.where(mask, a, -math.inf).amax(dim=dims)
    d = torch.where(mask, a - shift.reshape(shift.shape + expand), 0)
    mean = d.sum(dim=dims) / count
    centred = torch.where(mask, d - mean.reshape(mean.shape + expand), 0)
    return (centred.square().sum(dim=dims) / count).sqrt()


def _map_moments(a: Tensor, mask: Tensor, dims: tuple[int, ...]) -> tuple[Tensor, Tensor, Tensor]:
    """Per-map ``(count, mean, sum of squared deviations)`` over the spatial ``dims``, masked.

    Same two-pass, max-shifted scheme as :func:`_masked_std` (exact 0 for a constant map); the
    global mean and std follow from these by the law of total variance, saving a full pass.
    """
    expand = (1,) * len(dims)
    count = mask.sum(dim=dims)
    shift = torch.where(mask, a, -math.inf).amax(dim=dims)
    shift = torch.where(torch.isfinite(shift), shift, 0)
    d = torch.where(mask, a - shift.reshape(shift.shape + expand), 0)
    mean = d.sum(dim=dims) / count
    m2 = torch.where(mask, d - mean.reshape(mean.shape + expand), 0).square().sum(dim=dims)
    return count, mean + shift, m2


def _quantiles(mag: Tensor) -> Tensor:
    """``_QUANTILES`` of a flat tensor with NaNs for excluded entries (NaN if all excluded)."""
    if mag.numel() > QUANTILE_MAX_NUMEL:
        stride = math.ceil(mag.numel() / QUANTILE_MAX_NUMEL) | 1  # odd: no aliasing with power-of-2 axes
        mag = mag[::stride]
    # q built by fill kernels on the device: torch.tensor(list, device=cuda) would synchronise.
    q = torch.stack([torch.full((), v, dtype=mag.dtype, device=mag.device) for v in _QUANTILES])
    return torch.nanquantile(mag, q)


def low_freq_ratio(mag: Tensor, dims: tuple[int, ...]) -> Tensor:
    """Share of spectral power in the lowest band of every spatial axis (the ``low_freq_ratio`` stat).

    Parameters
    ----------
    mag : torch.Tensor
        ``(BATCH, C, *S)`` real field (the magnitude of an activation, zeros where non-finite).
    dims : tuple of int
        The spatial axes ``S`` (at least one), the last of them halved by the real FFT.

    Returns
    -------
    torch.Tensor
        0-d: mean power of ``rfftn(mag, dim=dims, norm="ortho")`` over the corner of the lowest
        ``ceil(n_i / 8)`` bins of each axis (``n_i`` = the half-spectrum's size along it) over the
        mean power of the whole half-spectrum. For ``(BATCH, C, H, W)`` the ``rfft2`` corner
        ``ceil(H/8) x ceil(W_r/8)``, ``W_r = W // 2 + 1``; for ``(BATCH, C, N)`` the first
        ``ceil(N_r/8)`` bins. NaN for an all-zero field.
    """
    power = torch.fft.rfftn(mag, dim=dims, norm="ortho").abs().square()
    corner = tuple(slice(0, math.ceil(power.shape[d] / 8)) for d in dims)
    index = (slice(None),) * dims[0] + corner
    return power[index].mean() / power.mean()


def activation_stats(t: Tensor, *, near_zero: float = 1e-6) -> Tensor:
    """Summary statistics of one channel-first activation, as one vector on the tensor's device.

    Let ``a = |t|`` for complex ``t`` and ``a = t`` otherwise. The entries are
    :func:`activation_stat_names` ``(t.ndim)``: all of ``ACTIVATION_STATS`` for a tensor with
    spatial axes, ``(BATCH, C, *S)`` with ``len(S) >= 1``; only ``GLOBAL_STATS`` (the spatial
    statistics are absent, not computed) for ``(BATCH, C)``, ``(BATCH,)`` or a scalar.

    ``mean``, ``std``
        Mean and population standard deviation (``ddof = 0``) of ``a`` over all elements.
    ``abs_mean``
        Mean of ``|a|``.
    ``p50``, ``p95``, ``p99``
        Quantiles of ``|a|`` (linear interpolation, as ``numpy.quantile``). Above
        ``QUANTILE_MAX_NUMEL`` (``2**12``) elements they are taken on the deterministic
        strided subsample ``flat[::s]``, ``s = ceil(numel / 2**12) | 1`` (odd, so the sample
        does not alias power-of-two image axes): estimates, cheap enough to capture every step.
    ``frac_near_zero``
        Fraction of elements with ``|a| <= near_zero``.
    ``spatial_std``
        Mean over ``(BATCH, C)`` of the per-map population std over the spatial axes ``S``; 0
        for a constant output.
    ``min_channel_std``
        Minimum over channels of the batch-mean per-map spatial std; 0 when a channel is dead.
    ``low_freq_ratio``
        :func:`low_freq_ratio` of ``|a|`` over ``S``: for ``(BATCH, C, H, W)`` the mean power of
        ``rfft2(|a|, norm="ortho")`` in the lowest ``ceil(H/8) x ceil(W_r/8)`` corner over the
        mean power of the whole half-spectrum ``H x W_r`` (brief §6.1). A constant field gives
        ``prod(n_i) / prod(ceil(n_i/8))`` (half-spectrum sizes ``n_i``); an all-zero tensor NaN.
    ``nonfinite``
        Number of non-finite elements (exact up to ``2**24``, stored as float32).

    Every other entry is computed over the finite elements only (non-finite elements enter the
    spectrum of ``low_freq_ratio`` as zeros) and is NaN when there are none.

    Parameters
    ----------
    t : torch.Tensor
        ``(BATCH, C, *S)`` (or ``(BATCH, C)``, ...) real or complex activation; not modified and
        not retained.
    near_zero : float
        Threshold of ``frac_near_zero``.

    Returns
    -------
    torch.Tensor
        ``(len(activation_stat_names(t.ndim)),)`` float32 on ``t.device``; computed without
        autograd and without a host synchronisation.
    """
    if not isinstance(t, Tensor):
        raise TypeError(f"activation_stats expects a torch.Tensor, got {type(t).__name__}")
    with torch.no_grad():
        a = _real_values(t)
        nan = torch.full((), float("nan"), dtype=a.dtype, device=a.device)
        finite = torch.isfinite(a)
        count = finite.sum()
        mag = torch.where(finite, a.abs(), nan)
        flat_mask, flat_a, flat_mag = finite.reshape(-1), a.reshape(-1), mag.reshape(-1)
        spatial = a.ndim >= 3
        dims = tuple(range(2, a.ndim))
        if spatial and a.numel():
            n_map, mean_map, m2_map = _map_moments(a, finite, dims)  # (BATCH, C) each
            mean = (n_map * mean_map).nansum() / count
            var = (m2_map.nansum() + (n_map * (mean_map - mean).square()).nansum()) / count
            std = var.sqrt()
            map_std = (m2_map / n_map).sqrt()  # NaN for all-masked maps
            spatial_std = torch.nanmean(map_std)
            channel_std = torch.nanmean(map_std, dim=0)  # (C,)
            lowest = torch.where(torch.isnan(channel_std), math.inf, channel_std).amin()
            min_channel_std = torch.where(torch.isinf(lowest), nan, lowest)
            low_freq = low_freq_ratio(torch.where(finite, mag, 0), dims)
        elif a.numel():
            mean = torch.where(finite, a, 0).sum() / count
            std = _masked_std(flat_a, flat_mask, (0,))
            spatial_std = min_channel_std = low_freq = nan
        else:
            mean = std = spatial_std = min_channel_std = low_freq = nan
        if a.numel():
            abs_mean = torch.where(finite, mag, 0).sum() / count
            frac = (mag <= near_zero).sum() / count
            quantiles = list(_quantiles(flat_mag).unbind())
        else:
            abs_mean = frac = nan
            quantiles = [nan] * len(_QUANTILES)
        nonfinite = (a.numel() - count).to(a.dtype)
        values = [mean, std, abs_mean, *quantiles, frac]
        values += [spatial_std, min_channel_std, low_freq] if spatial else []
        values.append(nonfinite)
        return torch.stack([v.to(a.dtype) for v in values]).to(torch.float32)


def branch_ratio(spectral_out: Tensor, local_out: Tensor) -> Tensor:
    """Ratio of the mean magnitudes of a block's two branch outputs, ``mean|S| / mean|L|``.

    Parameters
    ----------
    spectral_out : torch.Tensor
        ``(BATCH, C, H, W)`` output ``S`` of the spectral (global) branch, real or complex.
    local_out : torch.Tensor
        ``(BATCH, C, H, W)`` output ``L`` of the local branch.

    Returns
    -------
    torch.Tensor
        0-d float32 on the device of ``spectral_out`` (``inf``/NaN if ``mean|L| = 0``).
    """
    with torch.no_grad():
        s = spectral_out.detach().abs().to(torch.float32).mean()
        loc = local_out.detach().abs().to(torch.float32).mean()
        return s / loc.to(s.device)


# --------------------------------------------------------------------------- parameters


def _check_by(by: str) -> None:
    if by not in GROUPINGS:
        raise ValueError(f"unknown grouping by={by!r}; valid groupings: {', '.join(GROUPINGS)}")


def _owner(name: str, modules: dict[str, nn.Module]) -> str:
    """Module path owning parameter ``name``; parameter containers are folded into their parent."""
    path = name.rpartition(".")[0]
    while path and isinstance(modules.get(path), (nn.ParameterList, nn.ParameterDict)):
        path = path.rpartition(".")[0]
    return path or ROOT_NAME


def _named_params(model: nn.Module, by: str) -> tuple[list[str], list[Tensor], list[int]]:
    """Group names, parameters (``named_parameters`` order) and each parameter's group index."""
    _check_by(by)
    named = list(model.named_parameters())
    if by == "tensor":
        return [n for n, _ in named], [p for _, p in named], list(range(len(named)))
    modules = dict(model.named_modules())
    groups: dict[str, int] = {}
    index = [groups.setdefault(_owner(n, modules), len(groups)) for n, _ in named]
    return list(groups), [p for _, p in named], index


def _group_norms(names: list[str], index: list[int], norms: list[Tensor | None], device) -> Tensor:
    """Combine per-tensor norms (None = missing) into per-group norms ``sqrt(sum n_i^2)``.

    One stacked reduction: the squared norms are summed into their groups by one ``index_add_``
    (index and empty-group mask built once per layout and kept on the device), so the cost does not
    grow with a Python loop over groups.
    """
    present = tuple(i for i, n in zip(index, norms) if n is not None)
    if not names:
        return torch.empty(0, dtype=torch.float32, device=device)
    if not present:
        return torch.full((len(names),), float("nan"), dtype=torch.float32, device=device)
    into, empty = _group_layout(present, len(names), torch.device(device))
    squares = torch.stack([n.to(device) for n in norms if n is not None]).square()
    sums = torch.zeros(len(names), dtype=squares.dtype, device=device).index_add_(0, into, squares)
    return sums.sqrt().masked_fill_(empty, float("nan")).to(torch.float32)


@functools.lru_cache(maxsize=64)
def _group_layout(present: tuple[int, ...], groups: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """The group of each present norm, and the groups with none, as device tensors (made once per layout)."""
    into = torch.tensor(present, dtype=torch.long).to(device)
    empty = torch.ones(groups, dtype=torch.bool)
    empty[list(present)] = False
    return into, empty.to(device)


def _device(params: list[Tensor]) -> torch.device:
    return params[0].device if params else torch.device("cpu")


def grad_norms(model: nn.Module, *, by: str = "module") -> tuple[list[str], Tensor]:
    """L2 norms of the gradients, per module or per parameter tensor.

    Parameters
    ----------
    model : nn.Module
        Model after ``backward``; complex gradients count by magnitude.
    by : {"module", "tensor"}
        Grouping, see the module docstring. A module norm is ``sqrt(sum ||g_i||^2)`` over its
        direct parameters whose gradient is not None.

    Returns
    -------
    names : list of str
        Module paths or parameter names.
    norms : torch.Tensor
        ``(len(names),)`` float32 on the first parameter's device; NaN where every gradient of
        the group is None.
    """
    names, params, index = _named_params(model, by)
    present = [i for i, p in enumerate(params) if p.grad is not None]
    norms: list[Tensor | None] = [None] * len(params)
    for i, n in zip(present, tensor_norms([params[i].grad for i in present])):
        norms[i] = n
    return names, _group_norms(names, index, norms, _device(params))


def weight_norms(model: nn.Module, *, by: str = "module") -> tuple[list[str], Tensor]:
    """L2 norms of the parameters, per module or per tensor (same grouping as :func:`grad_norms`).

    Returns
    -------
    names : list of str
    norms : torch.Tensor
        ``(len(names),)`` float32 on the first parameter's device.
    """
    names, params, index = _named_params(model, by)
    return names, _group_norms(names, index, tensor_norms(params), _device(params))


def snapshot_weights(model: nn.Module, out: list[Tensor] | None = None) -> list[Tensor]:
    """Detached copies of every parameter (``named_parameters`` order) for :func:`update_ratios`.

    Pass the previous snapshot as ``out`` to copy into it instead of allocating: a live capture
    then touches no new memory (fresh allocations of a large model's size page-fault on CPU).
    """
    params = [p.detach() for p in model.parameters()]
    if (
        out is None
        or len(out) != len(params)
        or any(o.shape != p.shape or o.dtype != p.dtype for o, p in zip(out, params))
    ):
        return [p.clone() for p in params]
    torch._foreach_copy_(out, params)
    return out


def update_ratios(
    model: nn.Module, before: list[Tensor], *, by: str = "module", inplace: bool = False, with_norms: bool = False
):
    """Relative size of the weight change since a snapshot, ``||W_now - W_before|| / ||W_before||``.

    For a module both norms run over all its direct parameters together.

    Parameters
    ----------
    model : nn.Module
        The model now.
    before : list of torch.Tensor
        :func:`snapshot_weights` of the same model.
    by : {"module", "tensor"}
        Grouping.
    inplace : bool
        Compute the differences inside ``before`` (which then no longer holds the snapshot),
        allocating nothing.
    with_norms : bool
        Also return the denominators ``||W_before||`` per group: the :func:`weight_norms` of the
        snapshot, without a second pass over the weights.

    Returns
    -------
    names : list of str
    ratios : torch.Tensor
        ``(len(names),)`` float32 on the first parameter's device; ``inf`` where a group's old
        weights were all zero and changed, NaN where they were zero and did not change.
    """
    names, params, index = _named_params(model, by)
    if len(before) != len(params):
        raise ValueError(f"update_ratios: snapshot has {len(before)} tensors, model has {len(params)} parameters")
    for (pname, p), b in zip(model.named_parameters(), before):
        if b.shape != p.shape:
            raise ValueError(f"update_ratios: snapshot shape {tuple(b.shape)} != {tuple(p.shape)} of {pname!r}")
    device = _device(params)
    old = tensor_norms(before)
    now = [norm_view(p.detach()) for p in params]
    then = [norm_view(b.to(p.device)) for p, b in zip(params, before)]
    if inplace:
        torch._foreach_sub_(then, now)  # then - now: same norm as now - then
        diff = tensor_norms(then)
    else:
        diff = tensor_norms(torch._foreach_sub(now, then))
    old_norms = _group_norms(names, index, old, device)
    ratios = _group_norms(names, index, diff, device) / old_norms
    return (names, ratios, old_norms) if with_norms else (names, ratios)


def scale_params(model: nn.Module) -> tuple[list[str], Tensor]:
    """LayerScale ``gamma`` and InstanceNorm affine values, the scales the reference watched.

    For every module with a ``layerscale`` parameter: ``"<block>/layerscale_mean"`` and
    ``"<block>/layerscale_abs_max"``; for every affine InstanceNorm: ``"<norm>/weight_mean"``,
    ``"<norm>/weight_abs_min"`` and ``"<norm>/bias_mean"`` (brief §8.2: all norm weights stuck
    near ``|0.09|`` marked the zero-gamma collapse).

    Parameters
    ----------
    model : nn.Module
        Generator (or any module containing such blocks).

    Returns
    -------
    names : list of str
        ``"layer/stat"`` names (empty for a model without either, e.g. the control arm).
    values : torch.Tensor
        ``(len(names),)`` float32 on the first parameter's device.
    """
    names: list[str] = []
    values: list[Tensor] = []
    with torch.no_grad():
        for path, module in model.named_modules():
            layer = path or ROOT_NAME
            gamma = getattr(module, "layerscale", None)
            if isinstance(gamma, nn.Parameter):
                g = gamma.detach().float()
                names += [f"{layer}/layerscale_mean", f"{layer}/layerscale_abs_max"]
                values += [g.mean(), g.abs().amax()]
            if isinstance(module, _INSTANCE_NORMS) and module.affine:
                w, b = module.weight.detach().float(), module.bias.detach().float()
                names += [f"{layer}/weight_mean", f"{layer}/weight_abs_min", f"{layer}/bias_mean"]
                values += [w.mean(), w.abs().amin(), b.mean()]
    if not values:
        return [], torch.empty(0, dtype=torch.float32, device=_device(list(model.parameters())))
    device = values[0].device
    return names, torch.stack([v.to(device) for v in values])


# --------------------------------------------------------------------------- transfer


def to_host(named: dict[str, Tensor]) -> dict[str, np.ndarray]:
    """Bring a whole capture to the host in one transfer per device.

    All tensors on one device are flattened, cast to float64 and concatenated there, copied with
    a single ``.cpu()`` call, and split back. (One device, the usual case, means exactly one
    device-to-host transfer and one synchronisation.)

    Parameters
    ----------
    named : dict of str to torch.Tensor
        Real (or bool/integer) tensors of any shape, possibly on different devices.

    Returns
    -------
    dict of str to numpy.ndarray
        float64 arrays with the original shapes (0-d arrays for scalars), same keys and order.
    """
    by_device: dict[torch.device, list[str]] = {}
    for key, value in named.items():
        if not isinstance(value, Tensor):
            raise TypeError(f"to_host: {key!r} is a {type(value).__name__}, not a torch.Tensor")
        if value.is_complex():
            raise ValueError(f"to_host: {key!r} is complex; pass real statistics")
        by_device.setdefault(value.device, []).append(key)
    out: dict[str, np.ndarray] = {}
    for keys in by_device.values():
        flat = torch.cat([named[k].detach().reshape(-1).to(torch.float64) for k in keys])
        host = flat.cpu().numpy()
        start = 0
        for k in keys:
            n = named[k].numel()
            out[k] = host[start : start + n].reshape(tuple(named[k].shape))
            start += n
    return {k: out[k] for k in named}
