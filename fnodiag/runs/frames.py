"""Reconstruction frames: the probe batch's predicted amplitude / phase, 8-bit quantised with its range kept.

Pure maths (numpy), no store and no torch: :func:`encode` turns one image stack into bytes plus the
per-image ``(lo, hi)`` range, :func:`decode` gives the values back to within ``(hi - lo) / 510``
(half a quantisation step; the contract is ``<= (hi - lo) / 255``). A constant image has
``lo == hi`` and decodes exactly. Non-finite values (a diverging run) are stored as ``lo`` and
flagged by :func:`nonfinite_fraction` before encoding, so a frame never poisons the range.

The live callback (:mod:`fnodiag.training.live_frames`) writes frames through
:meth:`fnodiag.runs.RunStore.log_frame`; :meth:`fnodiag.runs.StoreReader.frames` reads them back.
"""

from __future__ import annotations

import math

import numpy as np

LEVELS = 255
CHANNELS = ("amp", "phase")
ROLES = ("pred", "truth")


def default_frame_every(steps_per_epoch: int, epochs: int, frames: int = 300) -> int:
    """A frame period that keeps about ``frames`` frames over ``epochs`` epochs (>= 1 step).

    The stage-a preset (83 x 83 = 6,889 training patches, batch 16: 430 steps per epoch, 20
    epochs, 8,600 steps) gives 29 here; ``train.frame_every`` defaults to 25 (344 frames).
    """
    return max(1, int(round(steps_per_epoch * epochs / frames)))


def encode(images: np.ndarray) -> tuple[bytes, np.ndarray, np.ndarray]:
    """Quantise an image stack to 8 bits per pixel, one range per image.

    Parameters
    ----------
    images : (P, H, W) float
        One channel (amplitude or phase) of the probe batch's patches.

    Returns
    -------
    data : bytes
        ``P * H * W`` uint8 codes, C order: ``round((x - lo) / (hi - lo) * 255)``.
    lo, hi : (P,) float64
        Per-image finite minimum and maximum (0 for an image with no finite value).
    """
    x = np.asarray(images, dtype=np.float64)
    if x.ndim != 3:
        raise ValueError(f"frame images must have shape (P, H, W), got {x.shape}; add a batch axis to one image")
    finite = np.isfinite(x)
    flat = np.where(finite, x, np.nan).reshape(len(x), -1)
    with np.errstate(all="ignore"):
        lo = np.where(finite.reshape(len(x), -1).any(1), np.nanmin(flat, 1, initial=np.inf), 0.0)
        hi = np.where(finite.reshape(len(x), -1).any(1), np.nanmax(flat, 1, initial=-np.inf), 0.0)
    lo, hi = np.nan_to_num(lo), np.nan_to_num(hi)
    span = (hi - lo)[:, None, None]
    scaled = np.where(
        span > 0, (np.where(finite, x, lo[:, None, None]) - lo[:, None, None]) / np.where(span > 0, span, 1.0), 0.0
    )
    codes = np.clip(np.rint(scaled * LEVELS), 0, LEVELS).astype(np.uint8)
    return codes.tobytes(), lo, hi


def decode(data: bytes, lo: np.ndarray, hi: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """Values of an encoded stack: ``lo + code / 255 * (hi - lo)``.

    Parameters
    ----------
    data : bytes
        ``P * H * W`` uint8 codes from :func:`encode`.
    lo, hi : (P,) float
        The per-image range from :func:`encode`.
    shape : (P, H, W)

    Returns
    -------
    (P, H, W) float32
    """
    p, h, w = (int(s) for s in shape)
    if len(data) != p * h * w:
        raise ValueError(f"frame holds {len(data)} bytes, expected P*H*W = {p * h * w} for shape {shape}")
    codes = np.frombuffer(data, np.uint8).reshape(p, h, w).astype(np.float64)
    lo, hi = np.asarray(lo, np.float64).reshape(p, 1, 1), np.asarray(hi, np.float64).reshape(p, 1, 1)
    return (lo + codes / LEVELS * (hi - lo)).astype(np.float32)


def amp_phase(obj: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Amplitude and phase of a complex object stack.

    Parameters
    ----------
    obj : (P, H, W) complex or (P, 1, H, W) complex
        The generator's output (the channel axis of one is squeezed).

    Returns
    -------
    amp, phase : (P, H, W) float32
    """
    o = np.asarray(obj)
    if o.ndim == 4 and o.shape[1] == 1:
        o = o[:, 0]
    if o.ndim != 3:
        raise ValueError(f"object frames must have shape (P, H, W) or (P, 1, H, W), got {o.shape}")
    return np.abs(o).astype(np.float32), np.angle(o).astype(np.float32)


def nonfinite_fraction(images: np.ndarray) -> float:
    """Share of non-finite pixels in a frame (0.0 for a healthy output)."""
    x = np.asarray(images)
    return float(1.0 - np.isfinite(x).mean()) if x.size else 0.0


def flatness(images: np.ndarray) -> float:
    """Mean over images of the spatial standard deviation: 0 for a constant (collapsed) output."""
    x = np.asarray(images, dtype=np.float64)
    return float(np.nanmean(np.nanstd(x.reshape(len(x), -1), axis=1))) if x.size else math.nan
