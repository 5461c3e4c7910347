"""Physics forward model (probe illumination + far-field propagation) and training losses.

One implementation serves both the simulation (:mod:`fnodiag.ptycho.simulate`) and training, so the
data and the objective can never disagree about FFT normalisation, centring or probe scale.

Array axes used throughout (brief §2.5):

* object patches ``(BATCH, C, N, N)`` complex, ``C = gridsize**2`` (1 here);
* probe ``(B|1, C|1, P, N, N)`` complex, ``P`` = number of (incoherent) probe modes;
* amplitudes ``(BATCH, C, N, N)`` float, centred (fftshifted) far-field moduli.

The probe layout is explicit on purpose: the reference let a DataLoader-collated ``(B, N, N)``
probe broadcast as ``B`` probe *modes* and summed them coherently, multiplying every
prediction by the batch size (brief §2.2). Here the batch axis of the probe must be 1 or
equal to the object batch, and a 3-D probe is only accepted through :func:`as_probe_layout`,
which reads it as modes deliberately.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

GAINS = ("none", "batch")
POISSON_EPS = 1e-8  # added to the predicted rate so log(rate) stays finite at A_pred = 0
MEAN_EPS = 1e-8  # added to the detached mean(A_obs) normaliser of both losses


def as_probe_layout(probe) -> Tensor:
    """Return ``probe`` in the explicit layout ``(B|1, C|1, P, N, N)``.

    Parameters
    ----------
    probe : array-like or Tensor, ``(N, N)``, ``(P, N, N)`` or ``(B|1, C|1, P, N, N)`` complex
        A 3-D input is read as ``P`` probe modes (never as a batch).

    Returns
    -------
    Tensor ``(1, 1, P, N, N)`` complex (or the 5-D input unchanged, made complex).
    """
    p = probe if isinstance(probe, Tensor) else torch.as_tensor(np.asarray(probe))
    if not p.is_complex():
        p = p.to(torch.complex64 if p.dtype != torch.float64 else torch.complex128)
    if p.ndim == 2:
        p = p[None, None, None]
    elif p.ndim == 3:
        p = p[None, None]
    elif p.ndim != 5:
        raise ValueError(
            f"probe of shape {tuple(p.shape)} is ambiguous; give (N, N), (P, N, N) modes or the "
            "explicit layout (B|1, C|1, P, N, N)"
        )
    if p.shape[-1] != p.shape[-2]:
        raise ValueError(f"probe must be square in its last two axes, got {tuple(p.shape)}")
    return p


def far_field_amplitude(obj: Tensor, probe: Tensor) -> Tensor:
    """Centred far-field amplitude of the exit wave ``obj * probe``.

    1. exit wave per probe mode: ``psi = obj[:, :, None] * probe``  ``(BATCH, C, P, N, N)``;
    2. orthonormal 2-D FFT of every mode (``norm="ortho"``: ``sum |F|^2 = sum |psi|^2``);
    3. modes summed incoherently: ``A = sqrt(sum_P |F|^2)`` (equal to ``|F|`` for P = 1);
    4. ``fftshift`` so the zero frequency sits at ``(N//2, N//2)``.

    Parameters
    ----------
    obj : Tensor ``(BATCH, C, N, N)`` complex
    probe : Tensor ``(N, N)`` or ``(B|1, C|1, P, N, N)`` complex; the probe batch axis must be
        1 or ``BATCH`` (a collated per-sample probe), never anything else.

    Returns
    -------
    Tensor ``(BATCH, C, N, N)`` real, dtype matching ``obj``'s precision.
    """
    if obj.ndim != 4 or not obj.is_complex():
        raise ValueError(f"object must be a complex (BATCH, C, N, N) tensor, got {tuple(obj.shape)} {obj.dtype}")
    if probe.ndim == 2:
        probe = as_probe_layout(probe)
    if probe.ndim != 5:
        raise ValueError(
            f"probe of shape {tuple(probe.shape)} is not in the (B|1, C|1, P, N, N) layout; "
            "convert it with as_probe_layout (a 3-D probe means modes, never a batch)"
        )
    batch, chans = obj.shape[:2]
    if probe.shape[0] not in (1, batch):
        raise ValueError(
            f"probe batch axis {probe.shape[0]} must be 1 or the object batch {batch}: a batch-collated "
            "probe must not alias the probe-mode axis (brief §2.2)"
        )
    if probe.shape[1] not in (1, chans):
        raise ValueError(f"probe channel axis {probe.shape[1]} must be 1 or the object's C={chans}")
    if probe.shape[-2:] != obj.shape[-2:]:
        raise ValueError(f"probe is {tuple(probe.shape[-2:])} but object patches are {tuple(obj.shape[-2:])}")
    psi = obj.unsqueeze(2) * probe.to(device=obj.device)
    field = torch.fft.fft2(psi, norm="ortho")
    # vector_norm over the mode axis = sqrt(sum |F|^2); its gradient is defined (0) where A = 0.
    amp = torch.linalg.vector_norm(field, ord=2, dim=2)
    return torch.fft.fftshift(amp, dim=(-2, -1))


class ForwardModel(torch.nn.Module):
    """``A_pred = gain * |F(O * P)|`` with a fixed probe held as a buffer.

    Parameters
    ----------
    probe : ``(N, N)``, ``(P, N, N)`` or ``(B|1, C|1, P, N, N)`` complex
        The illumination; stored in the explicit layout (see :func:`as_probe_layout`).
    gain : {'none', 'batch'}
        ``'none'`` (default): per-sample output independent of the batch it is computed in.
        ``'batch'``: multiply the amplitude by the actual batch size of each call. This
        reproduces, on purpose and only when asked for, the accidental gain of the reference's
        January runs (brief §2.2), including the different gain of a partial last batch.
    """

    def __init__(self, probe, gain: str = "none"):
        super().__init__()
        if gain not in GAINS:
            raise ValueError(f"gain={gain!r} is not valid; choose one of {', '.join(GAINS)}")
        self.gain = gain
        self.register_buffer("probe", as_probe_layout(probe).clone())

    def forward(self, obj: Tensor) -> Tensor:
        """``(BATCH, C, N, N)`` complex object patches → ``(BATCH, C, N, N)`` amplitudes."""
        amp = far_field_amplitude(obj, self.probe)
        if self.gain == "batch":
            amp = amp * obj.shape[0]
        return amp

    def extra_repr(self) -> str:
        return f"probe={tuple(self.probe.shape)}, gain={self.gain!r}"


def _check_pair(a_pred: Tensor, a_obs: Tensor) -> None:
    if a_pred.shape != a_obs.shape:
        raise ValueError(f"predicted amplitude {tuple(a_pred.shape)} and observed {tuple(a_obs.shape)} differ in shape")


def normalized_mae(a_pred: Tensor, a_obs: Tensor) -> Tensor:
    """``mean|A_pred - A_obs| / (mean(A_obs) + 1e-8)``, the denominator detached (brief §2.3).

    Parameters
    ----------
    a_pred, a_obs : Tensor ``(BATCH, C, N, N)`` float

    Returns
    -------
    Tensor, scalar.
    """
    _check_pair(a_pred, a_obs)
    return (a_pred - a_obs).abs().mean() / (a_obs.detach().mean() + MEAN_EPS)


def poisson_nll(a_pred: Tensor, a_obs: Tensor) -> Tensor:
    """Poisson negative log-likelihood of counts ``A_obs**2`` under rate ``A_pred**2``.

    ``L = mean_b sum_{c,h,w} [r - k log r + lgamma(k + 1)] / (mean(A_obs) + 1e-8)`` with
    ``r = A_pred**2 + 1e-8`` and ``k = A_obs**2`` (the normaliser detached). Minimised at
    ``A_pred**2 + 1e-8 = A_obs**2``.

    Parameters
    ----------
    a_pred, a_obs : Tensor ``(BATCH, C, N, N)`` float

    Returns
    -------
    Tensor, scalar.
    """
    _check_pair(a_pred, a_obs)
    rate = a_pred.square() + POISSON_EPS
    k = a_obs.square()
    nll = rate - k * torch.log(rate) + torch.lgamma(k + 1.0)
    per_sample = nll.flatten(1).sum(dim=1)
    return per_sample.mean() / (a_obs.detach().mean() + MEAN_EPS)


LOSSES: dict[str, Callable[[Tensor, Tensor], Tensor]] = {"mae": normalized_mae, "poisson": poisson_nll}


def get_loss(name: str) -> Callable[[Tensor, Tensor], Tensor]:
    """The loss function registered under ``name`` (``ValueError`` listing the choices otherwise)."""
    try:
        return LOSSES[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown loss {name!r}; choose one of {', '.join(LOSSES)}") from None
