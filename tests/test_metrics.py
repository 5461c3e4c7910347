"""Tests for fnodiag.ptycho.metrics: stitching alignment, metric invariants, pinned values, fingerprint."""

import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view
from scipy.ndimage import gaussian_filter

from fnodiag.ptycho.metrics import (
    METRIC_KEYS,
    constant_output_fingerprint,
    evaluate,
    evaluate_patches,
    frc_curve,
    frc_threshold,
    ground_truth_canvas,
    stitch,
)


def smooth_object(size, seed, phase_scale=0.5):
    """(size, size) complex128: positive smooth amplitude, smooth phase within +-phase_scale."""
    rng = np.random.default_rng(seed)
    amp = 1.0 + gaussian_filter(rng.random((size, size)), 2) * 4
    phi = gaussian_filter(rng.standard_normal((size, size)), 3)
    phi *= phase_scale / np.abs(phi).max()
    return amp * np.exp(1j * phi)


def extract_patches(objects, N, stride):
    """Raster-order test patches of each object: windows at 0, stride, 2*stride, ..."""
    grid = (objects.shape[-1] - N) // stride + 1
    idx = np.arange(grid) * stride
    return np.stack([o[r : r + N, c : c + N] for o in objects for r in idx for c in idx]), grid


@pytest.fixture
def canvas():
    return smooth_object(40, seed=0)


def test_perfect_prediction(canvas):
    m = evaluate(canvas, canvas)
    assert set(m) == set(METRIC_KEYS) and all(type(v) is float for v in m.values())
    assert m["amp_ssim"] == pytest.approx(1.0) and m["phase_ssim"] == pytest.approx(1.0)
    assert m["amp_mae"] == 0.0 and m["phase_mae"] < 1e-12
    assert m["amp_psnr"] == np.inf and m["phase_psnr"] > 200  # plane fit round-off only
    n_ring = (40 - 2 * 2) // 2
    assert m["amp_frc50"] == n_ring - 1 and m["phase_frc50"] == n_ring - 1


def test_global_scale_phase_offset_and_plane_do_not_change_scores(canvas):
    rng = np.random.default_rng(1)
    pred = canvas + 0.2 * (rng.standard_normal(canvas.shape) + 1j * rng.standard_normal(canvas.shape))
    y, x = np.indices(canvas.shape)
    moved = pred * 3.7 * np.exp(1j * (0.4 + 0.01 * x - 0.015 * y))
    base, other = evaluate(pred, canvas), evaluate(moved, canvas)
    assert base["amp_ssim"] < 0.99 and base["phase_mae"] > 0.01  # imperfect, so the test can fail
    for k in METRIC_KEYS:
        assert other[k] == pytest.approx(base[k], rel=1e-9, abs=1e-12), k
    # the same plane on the target is removed as well
    target_moved = canvas * np.exp(1j * (-0.3 + 0.02 * y))
    assert evaluate(pred, target_moved)["phase_ssim"] == pytest.approx(base["phase_ssim"], rel=1e-9)


def test_amplitude_change_does_lower_scores(canvas):
    worse = evaluate(np.abs(canvas) ** 2 * np.exp(1j * np.angle(canvas)), canvas)
    assert worse["amp_ssim"] < 1 - 1e-3 and worse["amp_mae"] > 1e-3
    assert worse["phase_ssim"] == pytest.approx(1.0)


def test_nan_prediction_gives_nan_scores(canvas):
    pred = canvas.copy()
    pred[10, 10] = np.nan
    assert all(np.isnan(v) for v in evaluate(pred, canvas).values())


def test_ssim_pinned_to_formula():
    """SSIM written out: every 7x7 window fully inside the image, sample (ddof=1) statistics,
    C1 = (0.01 R)^2, C2 = (0.03 R)^2 with R = max(gt) - min(gt); mean over windows. Both
    amplitudes have the same mean, so evaluate's mean-ratio rescale is the identity."""
    rng = np.random.default_rng(3)
    gt = rng.uniform(0.5, 2.0, (11, 13))
    pred = gt + rng.normal(0, 0.3, gt.shape)
    pred = np.abs(pred)
    pred *= gt.mean() / pred.mean()
    R = gt.max() - gt.min()
    wg, wp = sliding_window_view(gt, (7, 7)), sliding_window_view(pred, (7, 7))
    mg, mp = wg.mean(axis=(-2, -1)), wp.mean(axis=(-2, -1))
    vg, vp = wg.var(axis=(-2, -1), ddof=1), wp.var(axis=(-2, -1), ddof=1)
    cov = ((wg - mg[..., None, None]) * (wp - mp[..., None, None])).sum(axis=(-2, -1)) / 48
    c1, c2 = (0.01 * R) ** 2, (0.03 * R) ** 2
    ssim = np.mean((2 * mg * mp + c1) * (2 * cov + c2) / ((mg**2 + mp**2 + c1) * (vg + vp + c2)))
    m = evaluate(pred.astype(complex), gt.astype(complex), trim=0)
    assert m["amp_ssim"] == pytest.approx(ssim, rel=1e-10)
    assert 0.1 < ssim < 0.95


def test_psnr_and_mae_pinned_to_formula():
    """PSNR = 10 log10(R^2 / MSE), R = max - min of the target amplitude, after the rescale."""
    gt = np.array([[1.0, 2.0, 3.0, 4.0]] * 8) * np.ones((8, 4))
    gt = np.tile(gt, (1, 2))
    pred = gt.copy()
    pred[0, 0] += 0.8  # mean ratio 64*2.5 / (64*2.5 + 0.8)
    scaled = pred * (gt.mean() / pred.mean())
    mse = np.mean((scaled - gt) ** 2)
    m = evaluate(pred.astype(complex), gt.astype(complex), trim=0)
    assert m["amp_psnr"] == pytest.approx(10 * np.log10(3.0**2 / mse), rel=1e-12)
    assert m["amp_mae"] == pytest.approx(np.abs(scaled - gt).mean(), rel=1e-12)


def test_phase_frc_is_nan_for_zero_target_phase(canvas):
    gt = np.abs(canvas).astype(complex)
    m = evaluate(canvas, gt)
    assert np.isnan(m["phase_frc50"]) and np.isfinite(m["amp_frc50"])


def test_frc_identical_is_one_and_independent_noise_near_zero():
    rng = np.random.default_rng(4)
    a, b = rng.standard_normal((2, 128, 128))
    same = frc_curve(a, a)
    assert same.shape == (64,) and np.allclose(same, 1.0)
    noise = frc_curve(a, b)
    # a ring of ~2*pi*r independent-ish pixels gives |FRC| ~ 1/sqrt(pi*r) for noise
    assert np.abs(noise[1:]).mean() < 0.1 and np.abs(noise[16:]).max() < 0.25
    assert frc_threshold(same) == 63.0
    assert frc_threshold(noise) < 3


def test_frc_threshold_interpolates_in_ring_units():
    assert frc_threshold(np.array([1.0, 0.8, 0.4, 0.1])) == pytest.approx(1.75)
    assert frc_threshold(np.array([1.0, 0.8, 0.4, 0.1]), threshold=1 / 7) == pytest.approx(2 + (0.4 - 1 / 7) / 0.3)
    assert frc_threshold(np.array([0.3, 0.9])) == 0.0
    assert np.isnan(frc_threshold(np.array([1.0, np.nan])))


def test_stitch_of_true_patches_is_ground_truth_canvas():
    objects = np.stack([smooth_object(60, seed=s) for s in (5, 6)]).astype(np.complex64)
    N, stride = 16, 4
    patches, grid = extract_patches(objects, N, stride)
    assert grid == 12 and patches.shape == (2 * 144, 16, 16)
    canvases = stitch(patches / 2, grid=grid, stride=stride, norm=2.0)
    assert canvases.shape == (2, 48, 48) and canvases.dtype == np.complex64
    for i in range(2):
        gt = ground_truth_canvas(objects[i], N=N, stride=stride, grid=grid)
        np.testing.assert_array_equal(canvases[i], gt)
    # patch k's kept window starts at k*stride + (N - stride)//2 = 6 + 4k
    np.testing.assert_array_equal(canvases[0, :4, 4:8], objects[0, 6:10, 10:14])


def test_constant_prediction_reproduces_fingerprint():
    obj = smooth_object(60, seed=7)[None]
    N, stride, grid = 16, 4, 12
    gt = ground_truth_canvas(obj[0], N=N, stride=stride, grid=grid)
    const = np.full((grid * grid, N, N), 0.3, dtype=np.complex64)
    m = evaluate_patches(const, obj, N=N, stride=stride, grid=grid, norm=4.264)
    fp = constant_output_fingerprint(gt)
    for k in METRIC_KEYS:
        assert m[k] == pytest.approx(fp[k], rel=1e-6, abs=1e-9), k
    assert fp["amp_ssim"] < 0.5 and fp["amp_frc50"] == pytest.approx(0.5)


@pytest.mark.parametrize("N, ssim, mae", [(64, 0.2771, 0.5131), (128, 0.2355, 0.5209)])
def test_reference_fingerprint_on_real_test_object(N, ssim, mae):
    from fnodiag.ptycho.simulate import make_objects

    objects = make_objects(1, 392, seed=2, set_phi=True)
    stride = 10
    patches, grid = extract_patches(objects, N, stride)
    gt = ground_truth_canvas(objects[0], N=N, stride=stride, grid=grid)
    assert gt.shape == (grid * 10, grid * 10) == ((330, 330) if N == 64 else (270, 270))
    np.testing.assert_array_equal(stitch(patches, grid=grid, stride=stride)[0], gt)
    fp = constant_output_fingerprint(gt)
    assert round(fp["amp_ssim"], 4) == ssim and round(fp["amp_mae"], 4) == mae
    perfect = evaluate_patches(patches / 4.264, objects, N=N, stride=stride, grid=grid, norm=4.264)
    assert perfect["amp_ssim"] == pytest.approx(1.0, abs=1e-6)


def test_evaluate_patches_scores_only_test_image_0():
    objects = np.stack([smooth_object(60, seed=s) for s in (8, 9)])
    patches, grid = extract_patches(objects, 16, 4)
    junk = patches.copy()
    junk[grid * grid :] = 0  # image 1 predictions are ignored
    m = evaluate_patches(junk, objects, N=16, stride=4, grid=grid, norm=1.0)
    assert m["amp_mae"] < 1e-12 and m["phase_ssim"] == pytest.approx(1.0)


@pytest.mark.parametrize(
    "call, fragment",
    [
        (lambda: evaluate(np.ones((20, 20)), np.ones((20, 21))), "(20, 20) and (20, 21)"),
        (lambda: evaluate(np.ones((2, 20, 20)), np.ones((2, 20, 20))), "(2, 20, 20)"),
        (lambda: evaluate(np.ones((10, 10)), np.ones((10, 10)), trim=2), "(10, 10)"),
        (lambda: stitch(np.ones((10, 16, 16)), grid=3, stride=4), "(10, 16, 16)"),
        (lambda: stitch(np.ones((9, 16, 16, 1)), grid=3, stride=4), "(9, 16, 16, 1)"),
        (lambda: stitch(np.ones((9, 16, 16)), grid=3, stride=20), "stride"),
        (lambda: ground_truth_canvas(np.ones((30, 30)), N=16, stride=4, grid=5), "(30, 30)"),
        (lambda: ground_truth_canvas(np.ones((1, 60, 60)), N=16, stride=4, grid=5), "(1, 60, 60)"),
        (lambda: frc_curve(np.ones((8, 8)), np.ones((8, 9))), "(8, 8) and (8, 9)"),
        (lambda: constant_output_fingerprint(np.ones(5)), "(5,)"),
        (
            lambda: evaluate_patches(np.ones((9, 16, 16)), np.ones((60, 60)), N=16, stride=4, grid=12, norm=1.0),
            "(9, 16, 16)",
        ),
    ],
)
def test_bad_shapes_raise_value_error_naming_them(call, fragment):
    with pytest.raises(ValueError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        call()
