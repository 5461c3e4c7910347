"""grid_lines simulation: the brief's verified statistics, geometry, probe, cache and bad input."""

from __future__ import annotations

import dataclasses
import json
import warnings

import numpy as np
import pytest
import torch

from fnodiag.config import ConfigError, DataConfig
from fnodiag.ptycho import simulate as sim

STAGE_A = DataConfig(N=64, nimgs_train=1, nimgs_test=1, set_phi=True)
SMALL = DataConfig(N=32, object_size=128, nimgs_train=1, nimgs_test=1, set_phi=True, n_lines=60)

# Brief §3.7 item 7 (N=64 ideal disk, set_phi, nimgs 1/1): (mean, std) over the whole arrays.
EXPECTED = {
    ("train", "diffraction"): (0.09041, 0.52141),
    ("train", "Y_I"): (0.16495, 0.50282),
    ("train", "Y_phi"): (0.13696, 0.27181),
    ("test", "diffraction"): (0.09284, 0.53483),
    ("test", "Y_I"): (0.17034, 0.51541),
    ("test", "Y_phi"): (0.15065, 0.24790),
}


@pytest.fixture(scope="module")
def stage_a() -> sim.GridLinesData:
    return sim.simulate(STAGE_A)


@pytest.fixture(scope="module")
def small() -> sim.GridLinesData:
    return sim.simulate(SMALL)


def _mean_std(a):
    a = a.astype(np.float64)
    return a.mean(), a.std()


@pytest.mark.slow
@pytest.mark.parametrize("split,name", sorted(EXPECTED))
def test_expected_statistics(stage_a, split, name):
    mean, std = _mean_std(getattr(getattr(stage_a, split), name))
    exp_mean, exp_std = EXPECTED[split, name]
    # Y_I and Y_phi are deterministic (the brief's 5 digits); diffraction carries Poisson noise.
    tol = 2e-5 if name == "diffraction" else 6e-6
    assert mean == pytest.approx(exp_mean, abs=tol)
    assert std == pytest.approx(exp_std, abs=tol)
    assert stage_a.stats[split][f"{name}_mean"] == pytest.approx(mean, rel=1e-9)
    assert stage_a.stats[split][f"{name}_std"] == pytest.approx(std, rel=1e-9)


def test_scale_factors_nimgs_1(stage_a):
    # The brief lists s = 926.256 and norm_Y_I 4.146 / 4.264 beside the nimgs 1/1 statistics,
    # but those three values belong to the nimgs 2/2 dataset (see the slow test below): with
    # nimgs 1/1, Y_I mean 0.16495 is only consistent with norm_Y_I(train) = 4.1631.
    assert stage_a.train.norm_Y_I == pytest.approx(4.16308, abs=1e-5)
    assert stage_a.test.norm_Y_I == pytest.approx(4.22960, abs=1e-5)
    assert stage_a.intensity_scale == pytest.approx(933.709, abs=1e-3)
    assert stage_a.stats["intensity_scale"] == stage_a.intensity_scale


@pytest.mark.slow
def test_scale_factors_nimgs_2_match_brief():
    data = sim.simulate(dataclasses.replace(STAGE_A, nimgs_train=2, nimgs_test=2))
    assert data.intensity_scale == pytest.approx(926.256, abs=1e-3)
    assert data.train.norm_Y_I == pytest.approx(4.146, abs=5e-4)
    assert data.test.norm_Y_I == pytest.approx(4.264, abs=5e-4)
    assert data.train.diffraction.shape[0] == 13_778
    for name, (m, s) in {"diffraction": (0.0912, 0.5256), "Y_I": (0.1666, 0.5068), "Y_phi": (0.1430, 0.2626)}.items():
        mean, std = _mean_std(getattr(data.train, name))
        assert (mean, std) == (pytest.approx(m, abs=6e-5), pytest.approx(s, abs=6e-5))
    assert np.mean(data.train.Y_I.astype(np.float64) ** 2) == pytest.approx(0.284563, abs=1e-6)


def test_patch_geometry(stage_a):
    N = STAGE_A.N
    for split, grid, stride, n in ((stage_a.train, 83, 4, 6889), (stage_a.test, 33, 10, 1089)):
        assert (split.grid, split.stride) == (grid, stride)
        for name in ("diffraction", "Y_I", "Y_phi"):
            arr = getattr(split, name)
            assert arr.shape == (n, N, N) and arr.dtype == np.float32
        assert split.objects.shape == (1, 392, 392) and split.objects.dtype == np.complex64
    assert stage_a.stats["train"]["count"] == 6889 and stage_a.stats["test"]["count"] == 1089


def test_probe_facts(stage_a):
    guess, probe = stage_a.probe_guess, stage_a.probe
    assert guess.shape == probe.shape == (64, 64) and probe.dtype == np.complex64
    assert int((np.abs(guess) > 0.5).sum()) == 376  # the disk's 0.5 contour survives the blurs
    assert np.abs(probe).max() == pytest.approx(2.72, abs=5e-3)
    assert np.abs(probe).mean() == pytest.approx(0.25, abs=1e-6)  # the disk lies inside the mask
    assert np.all(np.angle(probe) == 0)
    np.testing.assert_allclose(probe, probe[::-1, ::-1], rtol=1e-6)  # centred at (N-1)/2
    np.testing.assert_allclose(probe, sim.normalise_probe(guess, 4.0))


def test_parseval_with_noise(stage_a):
    for split in (stage_a.train, stage_a.test):
        x2 = np.mean(split.diffraction.astype(np.float64) ** 2)
        y2 = np.mean(split.Y_I.astype(np.float64) ** 2)
        assert x2 == pytest.approx(y2, rel=1e-4)


def test_total_photons_per_pattern(stage_a):
    counts = (stage_a.train.diffraction.astype(np.float64) * stage_a.intensity_scale) ** 2
    assert counts.sum(axis=(1, 2)).mean() == pytest.approx(STAGE_A.nphotons, rel=1e-4)


def test_targets_are_the_normalised_patches(small):
    N, t = SMALL.N, small.train
    n = t.diffraction.shape[0]
    patches = sim.extract_patches(t.objects, N, t.stride, sim.train_permutation(n)) / t.norm_Y_I
    np.testing.assert_allclose(t.Y_I, np.abs(patches) * np.abs(small.probe), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(t.Y_phi, np.angle(patches), atol=1e-6)
    raster = sim.extract_patches(small.test.objects, N, small.test.stride)
    assert small.test.norm_Y_I == pytest.approx(np.abs(raster).max(axis=(1, 2)).mean(), rel=1e-6)
    np.testing.assert_allclose(small.test.Y_phi, np.angle(raster), atol=1e-6)  # raster order


def test_extract_patches_positions():
    img = np.arange(2 * 20 * 20, dtype=np.float32).reshape(2, 20, 20)
    p = sim.extract_patches(img, 8, 4)
    g = sim.grid_size(20, 8, 4)
    assert g == 4 and p.shape == (2 * g * g, 8, 8)
    k = 1 * g * g + 2 * g + 3  # image 1, row 2, col 3
    np.testing.assert_array_equal(p[k], img[1, 8:16, 12:20])
    np.testing.assert_array_equal(sim.extract_patches(img, 8, 4, [k, 0]), p[[k, 0]])


def test_make_objects_recipe():
    obj = sim.make_objects(2, 64, n_lines=30, seed=5, set_phi=True)
    assert obj.shape == (2, 64, 64) and obj.dtype == np.complex64
    np.testing.assert_array_equal(obj, sim.make_objects(2, 64, n_lines=30, seed=5, set_phi=True))
    assert not np.array_equal(obj, sim.make_objects(2, 64, n_lines=30, seed=6, set_phi=True))
    amp = np.abs(obj).astype(np.float64)
    phi = np.pi * np.tanh((amp - amp.max() / 2) / (3 * amp.mean()))  # max/mean over both images
    np.testing.assert_allclose(np.angle(obj), phi, atol=2e-6)
    flat = sim.make_objects(2, 64, n_lines=30, seed=5, set_phi=False)
    assert np.all(flat.imag == 0) and np.allclose(flat.real, np.abs(obj), rtol=1e-6)
    assert np.all(flat.real > 0)  # the blurred canvas is strictly positive inside the crop
    # the first image does not depend on how many follow it (one RNG stream, images in order)
    np.testing.assert_array_equal(sim.make_objects(1, 64, n_lines=30, seed=5, set_phi=False), flat[:1])


def test_objects_independent_of_training_seed():
    torch.manual_seed(123)
    np.random.seed(123)
    a = sim.simulate(SMALL)
    torch.manual_seed(7)
    np.random.seed(7)
    b = sim.simulate(SMALL)
    for name in ("diffraction", "Y_I", "Y_phi", "objects"):
        np.testing.assert_array_equal(getattr(a.train, name), getattr(b.train, name))
        np.testing.assert_array_equal(getattr(a.test, name), getattr(b.test, name))
    np.testing.assert_array_equal(a.train.objects, sim.make_objects(1, 128, n_lines=60, seed=1, set_phi=True))
    np.testing.assert_array_equal(a.test.objects, sim.make_objects(1, 128, n_lines=60, seed=2, set_phi=True))


def test_zero_phase_without_set_phi():
    data = sim.simulate(dataclasses.replace(SMALL, set_phi=False))
    assert not data.train.Y_phi.any() and not data.test.Y_phi.any()


def test_noiseless_is_exact_parseval(small):
    clean = sim.simulate(SMALL, noiseless=True)
    assert clean.stats["noiseless"] is True
    for split in (clean.train, clean.test):
        np.testing.assert_allclose(
            np.sum(split.diffraction.astype(np.float64) ** 2, axis=(1, 2)),
            np.sum(split.Y_I.astype(np.float64) ** 2, axis=(1, 2)),
            rtol=1e-5,
        )
    np.testing.assert_array_equal(clean.train.Y_I, small.train.Y_I)
    assert clean.intensity_scale == small.intensity_scale
    # the Poisson noise at 1e9 photons is ~0.2 % at mean-level pixels
    bright = clean.train.diffraction > clean.train.diffraction.mean()
    rel = np.abs(small.train.diffraction - clean.train.diffraction)[bright] / clean.train.diffraction[bright]
    assert 0 < np.median(rel) < 0.01


def test_fingerprint(stage_a):
    fp = stage_a.fingerprint
    assert fp["amp_ssim"] == pytest.approx(0.2771, abs=1e-4)
    assert fp["amp_mae"] == pytest.approx(0.5131, abs=1e-4)


# ----------------------------------------------------------------------------- cache


def test_save_load_roundtrip(small, tmp_path):
    out = sim.save_dataset(small, tmp_path / "ds")
    assert sorted(p.name for p in out.iterdir()) == ["dataset.json", "test.npz", "train.npz"]
    back = sim.load_dataset(out)
    assert back.config == SMALL and back.key == small.key == sim.dataset_key(SMALL)
    for split in ("train", "test"):
        a, b = getattr(small, split), getattr(back, split)
        for name in ("diffraction", "Y_I", "Y_phi", "objects"):
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
        assert (a.norm_Y_I, a.grid, a.stride) == (b.norm_Y_I, b.grid, b.stride)
    np.testing.assert_array_equal(back.probe, small.probe)
    assert back.intensity_scale == small.intensity_scale
    assert back.stats == json.loads(json.dumps(small.stats)) and back.fingerprint == small.fingerprint
    with np.load(out / "test.npz") as z:
        assert {
            "diffraction",
            "Y_I",
            "Y_phi",
            "probeGuess",
            "probe",
            "YY_full",
            "norm_Y_I",
            "intensity_scale",
            "YY_ground_truth",
        } <= set(z.files)
        L = small.test.grid * small.test.stride
        b = (SMALL.N - SMALL.test_stride) // 2
        np.testing.assert_array_equal(z["YY_ground_truth"], small.test.objects[:, b : b + L, b : b + L])
        assert float(z["norm_Y_I"]) == small.test.norm_Y_I
    with np.load(out / "train.npz") as z:
        assert "YY_ground_truth" not in z.files
        assert float(z["intensity_scale"]) == small.intensity_scale


def test_cache_reuse(tmp_path, monkeypatch):
    first = sim.load_or_simulate(SMALL, tmp_path)
    assert (tmp_path / first.key / "dataset.json").is_file()

    def boom(cfg, **kw):
        raise AssertionError("simulate() called although a valid cache exists")

    monkeypatch.setattr(sim, "simulate", boom)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again = sim.load_or_simulate(SMALL, tmp_path)
    np.testing.assert_array_equal(again.train.diffraction, first.train.diffraction)
    assert not [p for p in (tmp_path / first.key).iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize("field", [f.name for f in dataclasses.fields(DataConfig) if f.name != "probe_npz"])
def test_every_field_changes_the_key(field):
    value = getattr(SMALL, field)
    changed = (not value) if isinstance(value, bool) else value * 2
    assert sim.dataset_key(dataclasses.replace(SMALL, **{field: changed})) != sim.dataset_key(SMALL)


def test_probe_file_content_changes_the_key(tmp_path):
    path = tmp_path / "probe.npz"
    np.savez(path, probeGuess=np.ones((8, 8), np.complex64))
    cfg = dataclasses.replace(SMALL, probe_npz=str(path))
    k1 = sim.dataset_key(cfg)
    np.savez(path, probeGuess=2 * np.ones((8, 8), np.complex64))
    assert sim.dataset_key(cfg) != k1 and k1 != sim.dataset_key(SMALL)


def test_cache_distinguishes_set_phi_and_nimgs(tmp_path):
    a = sim.load_or_simulate(SMALL, tmp_path)
    b = sim.load_or_simulate(dataclasses.replace(SMALL, set_phi=False), tmp_path)
    c = sim.load_or_simulate(dataclasses.replace(SMALL, nimgs_test=2), tmp_path)
    assert len({a.key, b.key, c.key}) == 3
    assert not b.train.Y_phi.any() and a.train.Y_phi.any()
    assert c.test.diffraction.shape[0] == 2 * a.test.diffraction.shape[0]


@pytest.mark.parametrize("damage", ["truncate", "flip", "delete_json", "bad_json"])
def test_corrupt_cache_is_regenerated(small, tmp_path, damage):
    d = tmp_path / small.key
    sim.save_dataset(small, d)
    if damage == "truncate":
        raw = (d / "train.npz").read_bytes()
        (d / "train.npz").write_bytes(raw[: len(raw) // 2])
    elif damage == "flip":  # same size, damaged content: caught by the zip CRC
        raw = bytearray((d / "test.npz").read_bytes())
        raw[len(raw) // 2] ^= 0xFF
        (d / "test.npz").write_bytes(bytes(raw))
    elif damage == "delete_json":  # an interrupted save: the npz files without their record
        (d / "dataset.json").unlink()
    else:
        (d / "dataset.json").write_text("{not json")
    with pytest.warns(UserWarning, match="regenerating"):
        data = sim.load_or_simulate(SMALL, tmp_path)
    np.testing.assert_array_equal(data.test.diffraction, small.test.diffraction)
    sim.load_dataset(d)  # valid again


def test_foreign_cache_is_regenerated(small, tmp_path):
    other = sim.simulate(dataclasses.replace(SMALL, set_phi=False))
    sim.save_dataset(other, tmp_path / small.key)  # another dataset stored under this key
    with pytest.warns(UserWarning, match="another configuration"):
        data = sim.load_or_simulate(SMALL, tmp_path)
    assert data.config == SMALL and data.train.Y_phi.any()
    assert sim.load_dataset(tmp_path / small.key).config == SMALL


def test_mixed_split_files_are_rejected(small, tmp_path):
    other = sim.simulate(dataclasses.replace(SMALL, set_phi=False))
    sim.save_dataset(small, tmp_path / "a")
    sim.save_dataset(other, tmp_path / "b")
    (tmp_path / "a" / "train.npz").write_bytes((tmp_path / "b" / "train.npz").read_bytes())
    with pytest.raises(ValueError, match="belongs to dataset"):
        sim.load_dataset(tmp_path / "a")


def test_interrupted_save_leaves_no_valid_looking_cache(small, tmp_path, monkeypatch):
    d = tmp_path / small.key
    sim.save_dataset(small, d)
    calls = []

    def dying_savez(fh, **arrays):
        calls.append(1)
        if len(calls) == 2:  # die while writing test.npz
            fh.write(b"partial")
            raise KeyboardInterrupt
        np.savez(fh, **arrays)

    monkeypatch.setattr(sim.np, "savez", dying_savez)
    with pytest.raises(KeyboardInterrupt):
        sim.save_dataset(small, d)
    monkeypatch.undo()
    assert not (d / "dataset.json").exists()
    assert not [p for p in d.iterdir() if p.name.endswith(".tmp")]
    with pytest.raises(ValueError):
        sim.load_dataset(d)


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "overrides,match",
    [
        ({"N": 48}, "data.N"),
        ({"nphotons": 0.0}, "nphotons"),
        ({"nphotons": -5.0}, "nphotons"),
        ({"probe_npz": "/no/such/probe.npz"}, "does not exist"),
    ],
)
def test_bad_config(overrides, match):
    with pytest.raises(ConfigError, match=match):
        sim.simulate(dataclasses.replace(SMALL, **overrides))


def test_probe_npz_without_probe_guess(tmp_path):
    path = tmp_path / "p.npz"
    np.savez(path, other=np.ones((4, 4)))
    with pytest.raises(ConfigError, match="no 'probeGuess'"):
        sim.simulate(dataclasses.replace(SMALL, probe_npz=str(path)))


def test_probe_larger_than_N(tmp_path):
    path = tmp_path / "p.npz"
    np.savez(path, probeGuess=np.ones((40, 40), np.complex64))
    with pytest.raises(ConfigError, match="larger than N=32"):
        sim.simulate(dataclasses.replace(SMALL, probe_npz=str(path)))


@pytest.mark.parametrize("content", [b"not a zip file", b""])
def test_probe_file_unreadable(tmp_path, content):
    path = tmp_path / "p.npz"
    path.write_bytes(content)
    with pytest.raises(ConfigError, match="not a readable NPZ"):
        sim.load_probe(path, 32)


def test_probe_not_2d(tmp_path):
    path = tmp_path / "p.npz"
    np.savez(path, probeGuess=np.ones((2, 8, 8), np.complex64))
    with pytest.raises(ConfigError, match="must be 2-D"):
        sim.load_probe(path, 32)


def test_load_probe_pads_and_smooths(tmp_path):
    yy, xx = np.indices((12, 12))
    raw = np.exp(-((yy - 5.5) ** 2 + (xx - 5.5) ** 2) / 8) * np.exp(0.3j * xx)
    path = tmp_path / "p.npz"
    np.savez(path, probeGuess=raw.astype(np.complex64))
    probe = sim.load_probe(path, 32, smoothing=0.0)
    assert probe.shape == (32, 32) and probe.dtype == np.complex64
    np.testing.assert_allclose(probe[10:22, 10:22], raw, rtol=1e-5, atol=1e-7)
    assert not probe[:10].any() and not probe[22:].any()
    smooth = sim.load_probe(path, 32, smoothing=1.0)
    assert np.abs(smooth).max() < np.abs(probe).max()  # amplitude blurred
    np.testing.assert_allclose(np.angle(smooth[16, 12:20]), np.angle(probe[16, 12:20]), atol=0.05)  # linear phase kept
    data = sim.simulate(dataclasses.replace(SMALL, probe_npz=str(path)))
    np.testing.assert_allclose(data.probe_guess, sim.load_probe(path, 32, 0.5))


def test_stale_temporary_files_are_cleaned(small, tmp_path):
    import os

    d = tmp_path / small.key
    d.mkdir()
    stale, fresh = d / ".train.npz.1.dead.tmp", d / ".train.npz.2.live.tmp"
    stale.write_bytes(b"x" * 100)
    fresh.write_bytes(b"x")
    os.utime(stale, (1, 1))
    with pytest.warns(UserWarning, match="damaged"):
        sim.load_or_simulate(SMALL, tmp_path)
    assert not stale.exists() and fresh.exists()  # a recent one may belong to a running writer
