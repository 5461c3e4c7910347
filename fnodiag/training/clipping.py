"""Gradient-clipping maths: global gradient norm, norm / value clipping and unit-wise AGC.

Pure functions on parameters; the Lightning system calls them from ``configure_gradient_clipping``
with the thresholds the Trainer holds and records the global norm before and after clipping.
Complex gradients (the spectral weights) are reduced and clipped through their real views
(:mod:`fnodiag.diagnostics.norms`, which holds the norm kernels and the measured real-view speed-up);
``torch.nn.utils.clip_grad_value_`` refuses complex tensors.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from fnodiag.diagnostics.norms import global_norm, real_view
from fnodiag.models.spectral import SpectralConv2d


def global_grad_norm(params: Iterable[torch.Tensor]) -> torch.Tensor:
    """L2 norm over every gradient (complex gradients by magnitude), as a 0-d tensor on the grads' device.

    No host synchronisation: the caller decides when to transfer (:func:`fnodiag.diagnostics.norms.global_norm`).
    """
    return global_norm([p.grad for p in params if p.grad is not None])


def clip_norm_(params: Iterable[torch.Tensor], max_norm: float, total_norm: torch.Tensor) -> None:
    """Scale all gradients by ``min(1, max_norm / (total_norm + 1e-6))`` in place (global-norm clipping).

    Same rule as ``torch.nn.utils.clip_grad_norm_``; ``total_norm`` from :func:`global_grad_norm`.
    """
    grads = [p.grad for p in params if p.grad is not None]
    if grads:
        coef = (max_norm / (total_norm + 1e-6)).clamp(max=1.0)
        torch._foreach_mul_(grads, coef.to(grads[0].device))


def output_axes(model: nn.Module) -> dict[int, int]:
    """Axis that indexes the output units of each parameter of ``model``, by ``id(parameter)``.

    ``nn.ConvTranspose*`` weights are (C_in, C_out, ...) and the spectral weights
    (:class:`~fnodiag.models.spectral.SpectralConv2d`, ``(C_in, C_out, m_h, m_w)`` complex, held in
    its ``weights`` ``nn.ParameterList``, so they are found through the owning layer, not the list):
    axis 1. Every other weight (Linear, Conv: (C_out, ...)) and every vector: axis 0 (absent here).
    """
    axes: dict[int, int] = {}
    for module in model.modules():
        if isinstance(module, SpectralConv2d):
            axes.update({id(p): 1 for p in module.parameters() if p.ndim >= 2})
        elif isinstance(module, nn.modules.conv._ConvTransposeNd):
            axes[id(module.weight)] = 1
    return axes


def unitwise_norm(x: torch.Tensor, axis: int) -> torch.Tensor:
    """Norm of each output unit of ``x`` (all other axes reduced, kept for broadcasting).

    Scalars and vectors (biases, gains, LayerScale) are treated as one unit (their whole norm).
    Complex tensors are reduced through their real view; the result has ``x``'s shape with the
    reduced axes set to 1.
    """
    if x.ndim <= 1:
        return torch.linalg.vector_norm(real_view(x))
    dims = tuple(d for d in range(x.ndim) if d != axis)
    if x.is_complex():
        return torch.linalg.vector_norm(real_view(x), dim=dims + (x.ndim,)).reshape(
            [1 if d in dims else s for d, s in enumerate(x.shape)]
        )
    return torch.linalg.vector_norm(x, dim=dims, keepdim=True)


@torch.no_grad()
def adaptive_clip_(model: nn.Module, clip_factor: float, eps: float = 1e-3) -> None:
    """Adaptive gradient clipping (Brock et al. 2021, NFNets), unit-wise, in place.

    For every output unit ``i`` of every parameter ``W`` with gradient ``G``:
    ``G_i <- G_i * min(1, clip_factor * max(||W_i||, eps) / ||G_i||)``.
    """
    axes = output_axes(model)
    for p in model.parameters():
        if p.grad is None:
            continue
        axis = axes.get(id(p), 0)  # the output-unit axis, from the parameter's owning layer
        w_norm = unitwise_norm(p.detach(), axis).clamp_min(eps)
        g_norm = unitwise_norm(p.grad, axis)
        max_norm = clip_factor * w_norm
        scale = torch.where(g_norm > max_norm, max_norm / g_norm.clamp_min(1e-16), torch.ones_like(g_norm))
        p.grad.mul_(scale.to(p.grad.dtype) if not p.grad.is_complex() else scale)


@torch.no_grad()
def clip_value_(params: Iterable[torch.Tensor], value: float) -> None:
    """Element-wise clipping to ``[-value, value]``, in place.

    Complex gradients are clipped on their real and imaginary parts (``torch.view_as_real``);
    ``torch.nn.utils.clip_grad_value_`` refuses complex tensors.
    """
    for p in params:
        if p.grad is not None:
            real_view(p.grad).clamp_(-value, value)
