"""Stitching of test predictions and amplitude/phase reconstruction metrics.

The test set at gridsize 1 is a raster of ``N x N`` windows of each object at positions
``0, stride, 2*stride, ...`` (``grid = (S - N) // stride + 1`` per axis). Only the central
``stride x stride`` window of every predicted patch is kept, so one test image gives a
``(grid*stride, grid*stride)`` canvas (330 x 330 at N=64, S=392, stride 10).
:func:`ground_truth_canvas` returns the object pixels that canvas covers, pixel for pixel.

:func:`evaluate` follows the reference's ``eval_reconstruction`` conventions (trim, amplitude
mean-ratio rescale, phase plane removal, 7 x 7 uniform-window SSIM, FRC50) with one deliberate
change: PSNR uses the target's data range, not OpenCV's fixed peak of 255.
:func:`constant_output_fingerprint` gives the scores of a collapsed, spatially constant output
(amp SSIM 0.2771, amp MAE 0.5131 for the N=64 test object).
"""

from __future__ import annotations

import numpy as np
from skimage.metrics import structural_similarity

__all__ = [
    "METRIC_KEYS",
    "stitch",
    "ground_truth_canvas",
    "evaluate",
    "frc_curve",
    "frc_threshold",
    "constant_output_fingerprint",
    "evaluate_patches",
]

METRIC_KEYS = ("amp_ssim", "phase_ssim", "amp_mae", "phase_mae", "amp_psnr", "phase_psnr", "amp_frc50", "phase_frc50")


_EMPTY_RING = 1e-20  # ring power, relative to the image's total, treated as none


def _border(N: int, stride: int) -> int:
    if not 0 < stride <= N:
        raise ValueError(f"stride must be in 1..N={N}, got {stride}; use the test-set stride")
    return (N - stride) // 2


def stitch(patches, *, grid: int, stride: int, norm: float = 1.0) -> np.ndarray:
    """Tile the central ``stride x stride`` window of each test patch into canvases.

    Parameters
    ----------
    patches : (N_PATCH, N, N) complex64 or float
        Predicted patches in raster order, ``N_PATCH = N_IMG * grid * grid``.
    grid : int
        Patches per axis of one test image.
    stride : int
        Scan step in pixels; also the side of the window kept from each patch, which starts
        ``border = (N - stride) // 2`` pixels into the patch.
    norm : float
        Factor applied to the result (the dataset's ``norm_Y_I``), undoing patch normalisation.

    Returns
    -------
    (N_IMG, grid*stride, grid*stride) ndarray, same dtype as ``patches`` (integers -> float64)
    """
    patches = np.asarray(patches)
    if patches.ndim != 3 or patches.shape[1] != patches.shape[2]:
        raise ValueError(
            f"patches must have shape (N_PATCH, N, N), got {patches.shape}; squeeze any channel axis first"
        )
    if grid < 1 or patches.shape[0] == 0 or patches.shape[0] % (grid * grid):
        raise ValueError(
            f"patch count {patches.shape[0]} (shape {patches.shape}) is not a "
            f"positive multiple of grid**2 = {grid * grid}; check grid"
        )
    n, N = patches.shape[0], patches.shape[1]
    b = _border(N, stride)
    if not np.issubdtype(patches.dtype, np.inexact):
        patches = patches.astype(np.float64)
    win = patches.reshape(n // grid**2, grid, grid, N, N)[..., b : b + stride, b : b + stride]
    canvas = win.transpose(0, 1, 3, 2, 4).reshape(n // grid**2, grid * stride, grid * stride)
    return (canvas * norm).astype(patches.dtype, copy=False)


def ground_truth_canvas(obj, *, N: int, stride: int, grid: int) -> np.ndarray:
    """Object pixels covered by the stitched canvas of one test image, aligned with :func:`stitch`.

    Patch ``k`` (per axis) covers object rows ``k*stride .. k*stride + N - 1``; its kept window
    starts at ``k*stride + border`` with ``border = (N - stride) // 2``. The canvas is therefore
    ``obj[border : border + grid*stride]`` on both axes (rows 27..356 at N=64, stride 10).

    Parameters
    ----------
    obj : (S, S) complex64
        Raw (un-normalised) object, amplitude times ``exp(i*phase)``.
    N, stride, grid : int
        Patch side, scan step and patches per axis of the test set.

    Returns
    -------
    (grid*stride, grid*stride) ndarray, a copy with the dtype of ``obj``
    """
    obj = np.asarray(obj)
    if obj.ndim != 2:
        raise ValueError(f"obj must be one 2-D object (S, S), got shape {obj.shape}; pass objects[i]")
    b = _border(N, stride)
    need = (grid - 1) * stride + N
    if grid < 1 or need > min(obj.shape):
        raise ValueError(
            f"a {grid}x{grid} scan of {N}px patches at stride {stride} needs an "
            f"object of at least {need}px, got shape {obj.shape}; check grid"
        )
    return obj[b : b + grid * stride, b : b + grid * stride].copy()


def _check_pair(a, b, what: str) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(a), np.asarray(b)
    if a.ndim != 2 or a.shape != b.shape:
        raise ValueError(
            f"{what} must be 2-D arrays of the same shape, got {a.shape} and {b.shape}; pass one canvas each"
        )
    return a, b


def frc_curve(a, b) -> np.ndarray:
    """Fourier ring correlation of two real images over integer-radius rings.

    ``FRC(r) = Re sum_ring(F_a conj(F_b)) / sqrt(sum_ring |F_a|^2 * sum_ring |F_b|^2)``, where
    the ring ``r`` holds the frequencies whose radius, in frequency-index units of the shorter
    side, rounds to ``r``. Ring 0 is the DC term. A ring counts as empty in an image when its
    power is below 1e-20 of the image's total (FFT round-off). A ring empty in one image only
    (e.g. a constant image beyond ring 0) scores 0; a ring empty in both (e.g. the DC ring of
    two zero-mean, de-planed phases) scores 1, since the images agree there.

    Parameters
    ----------
    a, b : (H, W) float64
        Real images.

    Returns
    -------
    (N_RING,) float64
        ``N_RING = min(H, W) // 2`` (rings below the Nyquist radius).
    """
    a, b = _check_pair(a, b, "frc_curve inputs")
    if np.iscomplexobj(a) or np.iscomplexobj(b):
        raise ValueError("frc_curve takes real images; pass np.abs() or np.angle() of them")
    H, W = a.shape
    n = min(H, W)
    fa, fb = np.fft.fft2(a.astype(np.float64)), np.fft.fft2(b.astype(np.float64))
    r = np.hypot(*np.meshgrid(np.fft.fftfreq(H) * n, np.fft.fftfreq(W) * n, indexing="ij"))
    ring = np.rint(r).astype(np.int64).ravel()
    n_ring = n // 2
    keep = ring < n_ring
    ring = ring[keep]

    def rsum(v):
        return np.bincount(ring, weights=v.ravel()[keep], minlength=n_ring)

    num = rsum(np.real(fa * np.conj(fb)))
    power_a, power_b = np.abs(fa) ** 2, np.abs(fb) ** 2
    pa, pb = rsum(power_a), rsum(power_b)
    # FFT round-off leaves ~1e-30 relative power in the empty rings of a constant image.
    empty_a, empty_b = pa <= _EMPTY_RING * power_a.sum(), pb <= _EMPTY_RING * power_b.sum()
    den = np.sqrt(pa * pb)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(empty_a | empty_b, 0.0, num / np.where(den > 0, den, 1.0))
    out[empty_a & empty_b] = 1.0
    return np.where(np.isnan(den), np.nan, out)


def frc_threshold(curve, threshold: float = 0.5) -> float:
    """Resolution at which an FRC curve first falls below ``threshold``.

    Parameters
    ----------
    curve : (N_RING,) float64
        Output of :func:`frc_curve`.
    threshold : float
        0.5 gives FRC50 (1/7 is the other common choice).

    Returns
    -------
    float
        In ring-index units (spatial-frequency bins): the first ring ``i`` with
        ``curve[i] < threshold``, linearly interpolated between rings ``i-1`` and ``i``;
        ``N_RING - 1`` if the curve never falls below the threshold (e.g. identical images);
        NaN if the curve holds NaN. Higher is better.
    """
    curve = np.asarray(curve, dtype=np.float64)
    if curve.ndim != 1 or curve.size == 0:
        raise ValueError(f"curve must be a non-empty 1-D array, got shape {curve.shape}")
    if not np.all(np.isfinite(curve)):
        return float("nan")
    below = np.flatnonzero(curve < threshold)
    if below.size == 0:
        return float(curve.size - 1)
    i = int(below[0])
    if i == 0:
        return 0.0
    hi, lo = curve[i - 1], curve[i]
    return float(i - 1 + (hi - threshold) / (hi - lo))


def _remove_plane(phi: np.ndarray) -> np.ndarray:
    """Subtract the least-squares plane ``a*x + b*y + c`` from a (H, W) float64 image."""
    if not np.all(np.isfinite(phi)):
        return np.full_like(phi, np.nan)
    y, x = np.indices(phi.shape, dtype=np.float64)
    design = np.stack([x.ravel(), y.ravel(), np.ones(phi.size)], axis=1)
    coef, *_ = np.linalg.lstsq(design, phi.ravel(), rcond=None)
    return phi - (design @ coef).reshape(phi.shape)


def _psnr(pred: np.ndarray, target: np.ndarray, data_range: float) -> float:
    mse = float(np.mean((pred - target) ** 2))
    return float("inf") if mse == 0 else float(10.0 * np.log10(data_range**2 / mse))


def evaluate(pred, gt, *, trim: int = 2) -> dict[str, float]:
    """Amplitude and phase metrics of a stitched prediction against its ground truth.

    1. Trim ``trim`` pixels from each side of both canvases (330 -> 326 at N=64).
    2. Amplitude: ``|pred|`` is rescaled by ``mean|gt| / mean|pred|`` (skipped if
       ``mean|pred| == 0``). SSIM is scikit-image's ``structural_similarity`` with its default
       7 x 7 uniform window and ``data_range = max|gt| - min|gt|``; MAE is the mean absolute
       error; PSNR is ``10 log10(R^2 / MSE)`` with the same ``R = max|gt| - min|gt|`` (1 for a
       constant target; the
       reference used OpenCV's ``R = 255``, which gives incomparable ~70 dB values).
    3. Phase: ``angle()`` of each, then a least-squares plane ``a*x + b*y + c`` is removed from
       each independently (phase wrapping is not undone). SSIM on ``(phi + pi) / (2 pi)`` with
       ``data_range = 1``; MAE in radians; PSNR with ``R = 2 pi`` (the full range of
       ``angle()``, consistent with the SSIM mapping).
    4. FRC50 (:func:`frc_threshold` of :func:`frc_curve`, ring-index units) of the rescaled
       amplitudes and of the de-planed phases; ``phase_frc50`` is NaN if the target phase is
       identically zero.

    A perfect prediction scores SSIM 1, MAE 0, PSNR ``inf`` and FRC50 ``N_RING - 1``. NaN in
    ``pred`` propagates to NaN scores.

    Parameters
    ----------
    pred, gt : (H, W) complex64
        Stitched prediction (already multiplied by ``norm_Y_I``) and ground-truth canvas.
    trim : int
        Pixels removed from each side before scoring.

    Returns
    -------
    dict[str, float]
        Every key of :data:`METRIC_KEYS`, as Python floats.
    """
    pred, gt = _check_pair(pred, gt, "pred and gt")
    if trim < 0 or min(gt.shape) - 2 * trim < 7:
        raise ValueError(
            f"trim={trim} leaves less than 7x7 of canvases shaped {gt.shape}; use a smaller trim or larger canvases"
        )
    sl = (slice(trim, gt.shape[0] - trim), slice(trim, gt.shape[1] - trim))
    pred, gt = pred[sl].astype(np.complex128), gt[sl].astype(np.complex128)

    amp_gt, amp_pred = np.abs(gt), np.abs(pred)
    mean_pred = amp_pred.mean()
    if mean_pred != 0:
        amp_pred = amp_pred * (amp_gt.mean() / mean_pred)
    amp_range = float(amp_gt.max() - amp_gt.min()) or 1.0

    phase_zero = not np.any(np.angle(gt))
    ph_gt, ph_pred = _remove_plane(np.angle(gt)), _remove_plane(np.angle(pred))

    def to_unit(p):
        return (p + np.pi) / (2 * np.pi)

    return {
        "amp_ssim": float(structural_similarity(amp_gt, amp_pred, data_range=amp_range)),
        "phase_ssim": float(structural_similarity(to_unit(ph_gt), to_unit(ph_pred), data_range=1.0)),
        "amp_mae": float(np.mean(np.abs(amp_pred - amp_gt))),
        "phase_mae": float(np.mean(np.abs(ph_pred - ph_gt))),
        "amp_psnr": _psnr(amp_pred, amp_gt, amp_range),
        "phase_psnr": _psnr(ph_pred, ph_gt, 2 * np.pi),
        "amp_frc50": frc_threshold(frc_curve(amp_gt, amp_pred)),
        "phase_frc50": (float("nan") if phase_zero else frc_threshold(frc_curve(ph_gt, ph_pred))),
    }


def constant_output_fingerprint(gt, *, trim: int = 2) -> dict[str, float]:
    """Scores of a collapsed output: constant amplitude (the canvas mean), zero phase.

    Any positive constant scores the same, because :func:`evaluate` rescales the amplitude by
    the mean ratio. At N=64 (330 x 330 canvas of the seed-2 test object, trim 2) this gives
    amp SSIM 0.2771 and amp MAE 0.5131, the reference's collapse signature; at N=128 0.2355 /
    0.5209. A run scoring these values has an amplitude std of ~0.

    Parameters
    ----------
    gt : (H, W) complex64
        Ground-truth canvas, e.g. from :func:`ground_truth_canvas`.
    trim : int
        As in :func:`evaluate`.

    Returns
    -------
    dict[str, float]
        Every key of :data:`METRIC_KEYS`.
    """
    gt = np.asarray(gt)
    if gt.ndim != 2:
        raise ValueError(f"gt must be a 2-D canvas (H, W), got shape {gt.shape}")
    const = np.full(gt.shape, np.abs(gt).mean(), dtype=np.complex128)
    return evaluate(const, gt, trim=trim)


def evaluate_patches(
    pred_patches, objects, *, N: int, stride: int, grid: int, norm: float, trim: int = 2
) -> dict[str, float]:
    """Stitch test image 0's predicted patches and score them against its object.

    As in the reference, only test image 0 is scored: the first ``grid**2`` patches are
    stitched (times ``norm``) and compared with ``ground_truth_canvas(objects[0])``.

    Parameters
    ----------
    pred_patches : (N_PATCH, N, N) complex64
        Test predictions in raster order, ``N_PATCH >= grid**2``.
    objects : (N_IMG, S, S) complex64 or (S, S) complex64
        Raw test objects (or the single object of image 0).
    N, stride, grid : int
        Test-set geometry.
    norm : float
        The dataset's ``norm_Y_I``.
    trim : int
        As in :func:`evaluate`.

    Returns
    -------
    dict[str, float]
        Every key of :data:`METRIC_KEYS`.
    """
    pred_patches, objects = np.asarray(pred_patches), np.asarray(objects)
    if pred_patches.ndim != 3 or pred_patches.shape[1:] != (N, N):
        raise ValueError(
            f"pred_patches must have shape (N_PATCH, {N}, {N}), got "
            f"{pred_patches.shape}; squeeze the channel axis or check N"
        )
    if pred_patches.shape[0] < grid * grid:
        raise ValueError(
            f"need at least grid**2 = {grid * grid} patches for test image 0, got shape {pred_patches.shape}"
        )
    if objects.ndim not in (2, 3):
        raise ValueError(f"objects must be (N_IMG, S, S) or (S, S), got shape {objects.shape}")
    obj0 = objects if objects.ndim == 2 else objects[0]
    canvas = stitch(pred_patches[: grid * grid], grid=grid, stride=stride, norm=norm)[0]
    return evaluate(canvas, ground_truth_canvas(obj0, N=N, stride=stride, grid=grid), trim=trim)
