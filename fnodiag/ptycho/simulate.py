"""The synthetic ``grid_lines`` ptychography dataset (brief §3), re-implemented from the recipe.

Pipeline (one split):

1. objects: 400 random lines on a ``2·size`` canvas, blurred ``G1 + 2·G5 + 5·G10``, centre
   crop; phase ``π·tanh((I − max I/2)/(3·mean I))`` when ``set_phi`` (:func:`make_objects`);
2. probe: ideal disk (or ``probeGuess`` from an NPZ), smoothed, zero-padded to ``N``, then
   ``P_sim = P / (probe_scale · mean|P·M|)`` (:func:`normalise_probe`);
3. patches: ``N×N`` VALID windows on a regular grid of stride ``stride``, divided by
   ``norm_Y_I`` = mean over patches of the patch maximum (per split);
4. ``s = sqrt(nphotons / mean_patches Σ|Ŷ·P_sim|²)`` from the train split, reused for test;
5. far-field amplitude of ``s·Ŷ·P_sim`` by :func:`fnodiag.ptycho.forward.far_field_amplitude`,
   Poisson counts, ``A_obs = sqrt(counts)/s``.

Datasets are cached on disk under a key hashed from the full :class:`DataConfig`
(:func:`load_or_simulate`); the cache layout and NPZ keys are documented on
:func:`save_dataset`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from numpy.lib.stride_tricks import sliding_window_view
from scipy.ndimage import gaussian_filter
from scipy.signal.windows import gaussian as gaussian_window
from skimage.draw import line as draw_line
from skimage.restoration import unwrap_phase

from fnodiag.config import ConfigError, DataConfig, config_key
from fnodiag.files import atomic_write, no_file, write_json
from fnodiag.ptycho.forward import as_probe_layout, far_field_amplitude
from fnodiag.ptycho.metrics import constant_output_fingerprint, ground_truth_canvas

FORMAT_VERSION = 1
SHUFFLE_SEED = 0  # fixed train-patch permutation (reference: random_state=0)
NOISE_SALT = 0x5EED_D1FF  # mixed with the object seed for the Poisson generator
IDEAL_PROBE_WINDOW_SCALE = 0.7  # reference default_probe_scale: window std = N / (0.7 π²)
FFT_CHUNK = 2048  # patches per batched FFT / Poisson chunk (bounds peak memory)


# ----------------------------------------------------------------------------- objects


def make_objects(n_images: int, size: int, *, n_lines: int = 400, seed: int, set_phi: bool) -> np.ndarray:
    """Random-lines objects, raw (un-normalised) amplitude times ``exp(i·phi)``.

    Each line takes four successive draws of ``RandomState(seed).uniform()`` (row0, col0, row1,
    col1), each mapped to ``int(2·size·u)`` on a ``2·size`` canvas and drawn with
    ``skimage.draw.line``; images follow one another in the same stream (brief §3.7 item 1).

    Parameters
    ----------
    n_images, size : int
        Number of objects and their side ``S``.
    n_lines : int
        Lines per object.
    seed : int
        Object RNG seed (1 for train, 2 for test in the reference); independent of training.
    set_phi : bool
        ``phi = π·tanh((I − max(I)/2) / (3·mean(I)))`` with max and mean over all images
        together; ``phi = 0`` otherwise.

    Returns
    -------
    ``(n_images, S, S)`` complex64.
    """
    rng = np.random.RandomState(seed)
    canvas_side = 2 * size
    lo = (canvas_side - size) // 2
    amps = np.empty((n_images, size, size), dtype=np.float64)
    canvas = np.zeros((canvas_side, canvas_side), dtype=np.float64)
    for k in range(n_images):
        canvas[:] = 0.0
        ends = (canvas_side * rng.uniform(size=(n_lines, 4))).astype(np.int64)
        for r0, c0, r1, c1 in ends:
            rr, cc = draw_line(r0, c0, r1, c1)
            canvas[rr, cc] = 1.0
        amp = gaussian_filter(canvas, 1) + 2 * gaussian_filter(canvas, 5) + 5 * gaussian_filter(canvas, 10)
        amps[k] = amp[lo : lo + size, lo : lo + size]
    if set_phi:
        phi = np.pi * np.tanh((amps - amps.max() / 2) / (3 * amps.mean()))
        return (amps * np.exp(1j * phi)).astype(np.complex64)
    return amps.astype(np.complex64)


# ----------------------------------------------------------------------------- probe


def _smooth_complex(probe: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian-blur amplitude and unwrapped phase separately (the reference probe pipeline)."""
    if sigma == 0:
        return probe.astype(np.complex128)
    amp = gaussian_filter(np.abs(probe).astype(np.float64), sigma)
    phase = gaussian_filter(unwrap_phase(np.angle(probe)).astype(np.float64), sigma)
    return amp * np.exp(1j * phase)


def ideal_disk_probe(N: int, smoothing: float = 0.5) -> np.ndarray:
    """Ideal disk probe ``gf(gf(disk, 1) + 1e-9, smoothing)`` (brief §3.3, §3.7 item 2).

    The disk is the outer product of two symmetric Gaussian windows (std ``N/(0.7·π²)``, peak 1,
    centred at ``(N−1)/2``) thresholded at 0.5: 376 px at N=64.

    Returns
    -------
    ``(N, N)`` complex64, real-valued with flat phase.
    """
    w = gaussian_window(N, std=N / (IDEAL_PROBE_WINDOW_SCALE * np.pi**2), sym=True)
    w = w / w.max()
    disk = (np.outer(w, w) > 0.5).astype(np.float64)
    probe = gaussian_filter(disk, 1) + 1e-9
    return _smooth_complex(probe.astype(np.complex128), smoothing).astype(np.complex64)


def load_probe(path, N: int, smoothing: float = 0.5) -> np.ndarray:
    """``probeGuess`` from an NPZ, smoothed at native size and zero-padded (centred) to ``N``.

    Returns
    -------
    ``(N, N)`` complex64. Raises :class:`ConfigError` for a missing/unreadable file, a missing
    ``probeGuess`` key, a non-2-D probe or one larger than ``N``.
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigError(no_file(p, "probe file"))
    try:
        with np.load(p, allow_pickle=False) as z:
            if "probeGuess" not in z.files:
                raise ConfigError(
                    f"probe file {str(p)!r} has no 'probeGuess' array (keys: {', '.join(z.files) or 'none'})"
                )
            probe = np.asarray(z["probeGuess"])
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"probe file {str(p)!r} is not a readable NPZ ({exc})") from None
    if probe.ndim != 2:
        raise ConfigError(f"probeGuess in {str(p)!r} must be 2-D, got shape {probe.shape}")
    h, w = probe.shape
    if h > N or w > N:
        raise ConfigError(f"probeGuess in {str(p)!r} is {h}x{w}, larger than N={N}; use a larger N or a smaller probe")
    if not np.all(np.isfinite(probe)) or not np.any(probe):
        raise ConfigError(f"probeGuess in {str(p)!r} must be finite and not all zero")
    smoothed = _smooth_complex(probe.astype(np.complex128), smoothing)
    out = np.zeros((N, N), dtype=np.complex64)
    top, left = (N - h) // 2, (N - w) // 2
    out[top : top + h, left : left + w] = smoothed
    return out


def normalise_probe(probe: np.ndarray, probe_scale: float) -> np.ndarray:
    """``P_sim = P / (probe_scale · mean|P·M|)``, ``M`` = pixels closer than ``N//4`` to ``(N−1)/2``.

    Returns
    -------
    ``(N, N)`` complex64.
    """
    N = probe.shape[-1]
    c = (N - 1) / 2
    yy, xx = np.indices(probe.shape[-2:])
    mask = np.hypot(yy - c, xx - c) < N // 4
    denom = probe_scale * np.mean(np.abs(probe * mask))
    return (probe / denom).astype(np.complex64)


# ----------------------------------------------------------------------------- patches


def grid_size(size: int, N: int, stride: int) -> int:
    """Patches per axis of VALID ``N×N`` windows with ``stride`` over a ``size`` object."""
    return (size - N) // stride + 1


def train_permutation(n: int) -> np.ndarray:
    """The fixed shuffle applied to the train patches (``RandomState(0).permutation``)."""
    return np.random.RandomState(SHUFFLE_SEED).permutation(n)


def extract_patches(images: np.ndarray, N: int, stride: int, order: np.ndarray | None = None) -> np.ndarray:
    """``N×N`` VALID windows of ``images`` ``(nimgs, S, S)`` → ``(nimgs·g·g, N, N)``.

    Patches are numbered image-major, then row, then column (raster); ``order`` (indices into
    that numbering) selects/reorders them without a second copy.
    """
    win = sliding_window_view(images, (N, N), axis=(1, 2))[:, ::stride, ::stride]
    nimgs, g = win.shape[0], win.shape[1]
    idx = np.arange(nimgs * g * g) if order is None else np.asarray(order)
    img, rest = np.divmod(idx, g * g)
    row, col = np.divmod(rest, g)
    return win[img, row, col]


def _ground_truth(objects: np.ndarray, N: int, stride: int, grid: int) -> np.ndarray:
    """``(nimgs, grid*stride, grid*stride)``: each object over the stitched test canvas."""
    return np.stack([ground_truth_canvas(o, N=N, stride=stride, grid=grid) for o in objects])


# ----------------------------------------------------------------------------- dataset


@dataclass
class Split:
    """One split (train or test) of a grid_lines dataset; arrays in patch order."""

    diffraction: np.ndarray  # (n, N, N) float32, A_obs = sqrt(Poisson counts) / s
    Y_I: np.ndarray  # (n, N, N) float32, |normalised object patch · P_sim|
    Y_phi: np.ndarray  # (n, N, N) float32, object phase only
    objects: np.ndarray  # (nimgs, S, S) complex64, raw full objects (YY_full)
    norm_Y_I: float  # mean over patches of the patch's maximum raw amplitude
    grid: int  # patches per axis
    stride: int


@dataclass
class GridLinesData:
    """A simulated dataset: both splits, the probes and the scale factors."""

    config: DataConfig
    key: str
    train: Split
    test: Split
    probe_guess: np.ndarray  # (N, N) complex64, un-normalised (smoothed, padded)
    probe: np.ndarray  # (N, N) complex64, P_sim used by the physics forward model
    intensity_scale: float  # s
    stats: dict = field(default_factory=dict)
    fingerprint: dict = field(default_factory=dict)


def _probe_bytes(cfg: DataConfig) -> bytes:
    return Path(cfg.probe_npz).read_bytes() if cfg.probe_npz is not None else b""


def dataset_key(cfg: DataConfig) -> str:
    """Cache key: hash of every DataConfig field plus the probe file's content (if any)."""
    extra = hashlib.sha256(_probe_bytes(cfg)).hexdigest().encode() if cfg.probe_npz is not None else b""
    return config_key(cfg, extra=extra)


def make_probe(cfg: DataConfig) -> tuple[np.ndarray, np.ndarray]:
    """``(probe_guess, P_sim)`` for ``cfg``, both ``(N, N)`` complex64."""
    if cfg.probe_npz is None:
        guess = ideal_disk_probe(cfg.N, cfg.probe_smoothing)
    else:
        guess = load_probe(cfg.probe_npz, cfg.N, cfg.probe_smoothing)
    return guess, normalise_probe(guess, cfg.probe_scale)


def _noise_rng(object_seed: int) -> np.random.Generator:
    return np.random.default_rng([int(object_seed), NOISE_SALT])


def _simulate_split(objects, N, stride, probe, *, shuffle, nphotons, scale, noise_seed, noiseless):
    """Patches, targets and diffraction of one split; returns ``(Split, s)``."""
    grid = grid_size(objects.shape[-1], N, stride)
    n = objects.shape[0] * grid * grid
    order = train_permutation(n) if shuffle else None
    amp = extract_patches(np.abs(objects), N, stride, order)  # (n, N, N) float32
    phi = extract_patches(np.angle(objects), N, stride, order)
    norm = float(amp.max(axis=(1, 2)).mean(dtype=np.float64))
    amp /= np.float32(norm)
    probe_abs = np.abs(probe).astype(np.float32)
    probe_t = as_probe_layout(torch.from_numpy(probe))
    diffraction = np.empty((n, N, N), dtype=np.float32)
    sumsq = 0.0
    for lo in range(0, n, FFT_CHUNK):
        sl = slice(lo, lo + FFT_CHUNK)
        obj = torch.polar(torch.from_numpy(amp[sl]), torch.from_numpy(phi[sl]))[:, None]
        diffraction[sl] = far_field_amplitude(obj, probe_t)[:, 0].numpy()  # |F(Ŷ P_sim)|: s factored out
        amp[sl] *= probe_abs  # amp becomes Y_I = |Ŷ P_sim| in place (saves one (n, N, N) array)
        flat = amp[sl].reshape(-1).astype(np.float64)
        sumsq += float(flat @ flat)
    y_i = amp
    s = float(np.sqrt(nphotons / (sumsq / n))) if scale is None else scale
    if not noiseless:
        rng = _noise_rng(noise_seed)
        for lo in range(0, n, FFT_CHUNK):
            sl = slice(lo, lo + FFT_CHUNK)
            counts = rng.poisson(np.square(s * diffraction[sl].astype(np.float64)))
            diffraction[sl] = np.sqrt(counts) / s
    split = Split(diffraction=diffraction, Y_I=y_i, Y_phi=phi, objects=objects, norm_Y_I=norm, grid=grid, stride=stride)
    return split, s


def _moments(a: np.ndarray) -> tuple[float, float]:
    """Mean and std of an array, accumulated in float64 chunk by chunk."""
    flat = a.reshape(-1)
    total = total_sq = 0.0
    step = 1 << 22
    for lo in range(0, flat.size, step):
        c = flat[lo : lo + step].astype(np.float64)
        total += float(c.sum())
        total_sq += float(c @ c)
    mean = total / flat.size
    return mean, float(np.sqrt(max(total_sq / flat.size - mean * mean, 0.0)))


def _split_stats(split: Split) -> dict:
    out = {
        "count": int(split.diffraction.shape[0]),
        "grid": split.grid,
        "stride": split.stride,
        "norm_Y_I": split.norm_Y_I,
    }
    for name in ("diffraction", "Y_I", "Y_phi"):
        m, sd = _moments(getattr(split, name))
        out[f"{name}_mean"], out[f"{name}_std"] = m, sd
    out["diffraction_mean_sq"] = out["diffraction_std"] ** 2 + out["diffraction_mean"] ** 2
    out["Y_I_mean_sq"] = out["Y_I_std"] ** 2 + out["Y_I_mean"] ** 2
    return out


def _fingerprint(data: GridLinesData) -> dict:
    """Metrics of a spatially constant output against test image 0 (the collapse signature)."""
    t = data.test
    gt = ground_truth_canvas(t.objects[0], N=data.config.N, stride=t.stride, grid=t.grid)
    return {k: float(v) for k, v in constant_output_fingerprint(gt).items()}


def simulate(cfg: DataConfig, *, noiseless: bool = False) -> GridLinesData:
    """Simulate both splits of the grid_lines dataset for ``cfg`` (pure: nothing touches disk).

    Parameters
    ----------
    cfg : DataConfig
    noiseless : bool
        Skip the Poisson draw: ``diffraction`` is then the exact ``|F(Ŷ·P_sim)|`` (what the
        physics forward model predicts for the true patches).
    """
    cfg.validate()
    probe_guess, probe = make_probe(cfg)
    splits, s = {}, None
    for name, nimgs, stride, seed in (
        ("train", cfg.nimgs_train, cfg.train_stride, cfg.train_object_seed),
        ("test", cfg.nimgs_test, cfg.test_stride, cfg.test_object_seed),
    ):
        objects = make_objects(nimgs, cfg.object_size, n_lines=cfg.n_lines, seed=seed, set_phi=cfg.set_phi)
        splits[name], s = _simulate_split(
            objects,
            cfg.N,
            stride,
            probe,
            shuffle=name == "train",
            nphotons=cfg.nphotons,
            scale=s,
            noise_seed=seed,
            noiseless=noiseless,
        )
    stats = {
        "intensity_scale": s,
        "noiseless": noiseless,
        "probe": {"peak_abs": float(np.abs(probe).max()), "mean_abs": float(np.abs(probe).mean())},
        "train": _split_stats(splits["train"]),
        "test": _split_stats(splits["test"]),
    }
    data = GridLinesData(
        config=cfg,
        key=dataset_key(cfg),
        train=splits["train"],
        test=splits["test"],
        probe_guess=probe_guess,
        probe=probe,
        intensity_scale=s,
        stats=stats,
    )
    data.fingerprint = _fingerprint(data)
    return data


# ----------------------------------------------------------------------------- storage


def _remove_stale_tmp(d: Path, min_age_s: float = 900.0) -> None:
    """Delete temporary files a killed writer left behind (old enough not to be in use)."""
    now = time.time()
    for p in d.glob(".*.tmp"):
        try:
            if now - p.stat().st_mtime > min_age_s:
                p.unlink()
        except OSError:
            pass


def _npz_arrays(data: GridLinesData, split: Split, test: bool) -> dict:
    arrays = {
        "diffraction": split.diffraction,
        "Y_I": split.Y_I,
        "Y_phi": split.Y_phi,
        "probeGuess": data.probe_guess,
        "probe": data.probe,
        "YY_full": split.objects,
        "norm_Y_I": np.float64(split.norm_Y_I),
        "intensity_scale": np.float64(data.intensity_scale),
        "dataset_key": np.str_(data.key),
    }
    if test:
        arrays["YY_ground_truth"] = _ground_truth(split.objects, data.config.N, split.stride, split.grid)
    return arrays


def save_dataset(data: GridLinesData, out_dir) -> Path:
    """Write ``data`` as ``<out_dir>/{train.npz, test.npz, dataset.json}``; returns ``out_dir``.

    Split NPZ keys: ``diffraction (n,N,N)``, ``Y_I``, ``Y_phi``, ``probeGuess``, ``probe`` (P_sim),
    ``YY_full``, ``norm_Y_I``, ``intensity_scale``, ``dataset_key``; test adds ``YY_ground_truth``.
    Every file is written to a temporary name and moved into place; ``dataset.json`` is removed
    first and written last, so an interrupted write never leaves a set that loads as valid.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    meta_path = out / "dataset.json"
    if meta_path.exists():
        meta_path.unlink()
    sizes = {}
    for name, split in (("train", data.train), ("test", data.test)):
        arrays = _npz_arrays(data, split, test=name == "test")
        path = out / f"{name}.npz"
        atomic_write(path, lambda fh, a=arrays: np.savez(fh, **a))
        sizes[path.name] = path.stat().st_size
    meta = {
        "format": FORMAT_VERSION,
        "key": data.key,
        "config": dataclasses.asdict(data.config),
        "stats": data.stats,
        "fingerprint": data.fingerprint,
        "file_sizes": sizes,
    }
    write_json(meta_path, meta)
    return out


def load_dataset(path) -> GridLinesData:
    """Read a dataset written by :func:`save_dataset`; ``ValueError`` if any file is damaged."""
    d = Path(path)
    try:
        meta = json.loads((d / "dataset.json").read_text())
        if meta.get("format") != FORMAT_VERSION:
            raise ValueError(f"format {meta.get('format')!r} is not {FORMAT_VERSION}")
        cfg = DataConfig(**meta["config"])
        key = meta["key"]
        splits, common = {}, {}
        for name, stride, nimgs in (
            ("train", cfg.train_stride, cfg.nimgs_train),
            ("test", cfg.test_stride, cfg.nimgs_test),
        ):
            p = d / f"{name}.npz"
            if p.stat().st_size != meta["file_sizes"][p.name]:
                raise ValueError(f"{p.name} has {p.stat().st_size} bytes, expected {meta['file_sizes'][p.name]}")
            with np.load(p, allow_pickle=False) as z:
                a = {k: z[k] for k in z.files}  # reads every member: zip CRCs catch corruption
            if str(a["dataset_key"]) != key:
                raise ValueError(f"{p.name} belongs to dataset {str(a['dataset_key'])!r}, not {key!r}")
            grid = grid_size(cfg.object_size, cfg.N, stride)
            n = nimgs * grid * grid
            for k in ("diffraction", "Y_I", "Y_phi"):
                if a[k].shape != (n, cfg.N, cfg.N):
                    raise ValueError(f"{p.name}:{k} has shape {a[k].shape}, expected {(n, cfg.N, cfg.N)}")
            if a["YY_full"].shape != (nimgs, cfg.object_size, cfg.object_size):
                raise ValueError(f"{p.name}:YY_full has shape {a['YY_full'].shape}")
            splits[name] = Split(
                diffraction=a["diffraction"],
                Y_I=a["Y_I"],
                Y_phi=a["Y_phi"],
                objects=a["YY_full"],
                norm_Y_I=float(a["norm_Y_I"]),
                grid=grid,
                stride=stride,
            )
            common = {
                "probe_guess": a["probeGuess"],
                "probe": a["probe"],
                "intensity_scale": float(a["intensity_scale"]),
            }
    except (OSError, KeyError, TypeError, EOFError, zipfile.BadZipFile, json.JSONDecodeError) as exc:
        raise ValueError(f"dataset at {str(d)!r} is unreadable: {type(exc).__name__}: {exc}") from None
    except ValueError as exc:
        raise ValueError(f"dataset at {str(d)!r} is invalid: {exc}") from None
    return GridLinesData(
        config=cfg,
        key=key,
        train=splits["train"],
        test=splits["test"],
        stats=meta.get("stats", {}),
        fingerprint=meta.get("fingerprint", {}),
        **common,
    )


def cached_dataset(cfg: DataConfig, cache_dir) -> GridLinesData | None:
    """The dataset for ``cfg`` already in ``<cache_dir>/<dataset_key(cfg)>``, or None; reads only, never writes.

    None when the folder is missing or empty, when the set is damaged or truncated, or when it was
    made with another configuration (each but the first with a ``warnings.warn`` naming it).
    """
    cfg.validate()
    key = dataset_key(cfg)
    d = Path(cache_dir) / key
    if not (d.is_dir() and any(d.iterdir())):
        return None
    try:
        data = load_dataset(d)
    except ValueError as exc:
        warnings.warn(f"cached dataset is damaged, regenerating it: {exc}", stacklevel=2)
        return None
    if data.config == cfg and data.key == key:
        return data
    warnings.warn(f"cached dataset at {str(d)!r} was made with another configuration; regenerating it", stacklevel=2)
    return None


def load_or_simulate(cfg: DataConfig, cache_dir) -> GridLinesData:
    """The dataset for ``cfg`` from ``<cache_dir>/<dataset_key(cfg)>``, simulated and cached if needed.

    A cached set is reused only if its stored configuration equals ``cfg``; a damaged,
    truncated or foreign set is reported with ``warnings.warn`` and regenerated.
    """
    data = cached_dataset(cfg, cache_dir)
    if data is not None:
        return data
    d = Path(cache_dir) / dataset_key(cfg)
    if d.is_dir():
        _remove_stale_tmp(d)
    data = simulate(cfg)
    save_dataset(data, d)
    return data
