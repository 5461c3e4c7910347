"""Physics forward model and losses: conservation laws, batch independence, known values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fnodiag.config import LOSSES_ALLOWED, DataConfig
from fnodiag.ptycho import forward as physics
from fnodiag.ptycho import simulate as sim

SMALL = DataConfig(N=32, object_size=128, nimgs_train=1, nimgs_test=1, set_phi=True, n_lines=60)


def _rand_complex(*shape, seed=0, dtype=torch.complex64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=dtype)


@pytest.fixture(scope="module")
def clean():
    return sim.simulate(SMALL, noiseless=True)


def test_parseval_energy_conservation():
    obj, probe = _rand_complex(5, 2, 16, 16, seed=1), _rand_complex(16, 16, seed=2)
    amp = physics.far_field_amplitude(obj, probe)
    assert amp.shape == (5, 2, 16, 16) and amp.dtype == torch.float32
    torch.testing.assert_close(
        amp.square().sum(dim=(-2, -1)), (obj * probe).abs().square().sum(dim=(-2, -1)), rtol=1e-5, atol=0
    )


def test_matches_an_independent_numpy_fft():
    obj, probe = (
        _rand_complex(3, 1, 16, 16, seed=3, dtype=torch.complex128),
        _rand_complex(16, 16, seed=4, dtype=torch.complex128),
    )
    amp = physics.far_field_amplitude(obj, probe).numpy()
    ref = np.abs(np.fft.fftshift(np.fft.fft2((obj * probe).numpy()), axes=(-2, -1))) / 16
    np.testing.assert_allclose(amp, ref, rtol=1e-12)
    # zero frequency at (N//2, N//2): a flat exit wave puts all its energy there
    flat = physics.far_field_amplitude(
        torch.ones(1, 1, 16, 16, dtype=torch.complex64), torch.ones(16, 16, dtype=torch.complex64)
    )
    assert flat[0, 0, 8, 8].item() == pytest.approx(16.0) and flat.sum().item() == pytest.approx(16.0)


def test_reproduces_noiseless_simulated_diffraction(clean):
    model = physics.ForwardModel(clean.probe)
    N = SMALL.N
    for split, order in ((clean.train, sim.train_permutation(clean.train.diffraction.shape[0])), (clean.test, None)):
        patches = sim.extract_patches(split.objects, N, split.stride, order) / split.norm_Y_I
        with torch.no_grad():
            amp = model(torch.from_numpy(patches.astype(np.complex64))[:, None])[:, 0].numpy()
        np.testing.assert_allclose(amp, split.diffraction, rtol=1e-5, atol=1e-6)
        # and against numpy's FFT for a few patches, the check independent of fnodiag.ptycho.forward
        ref = np.abs(np.fft.fftshift(np.fft.fft2(patches[:5] * clean.probe, norm="ortho"), axes=(-2, -1)))
        np.testing.assert_allclose(split.diffraction[:5], ref, rtol=1e-4, atol=1e-6)


def test_noisy_data_close_to_the_forward_model(clean):
    noisy = sim.simulate(SMALL)
    err = np.abs(noisy.train.diffraction - clean.train.diffraction).mean() / clean.train.diffraction.mean()
    assert 0 < err < 0.01


def test_batch_size_independence():
    obj = _rand_complex(16, 1, 32, 32, seed=5)
    model = physics.ForwardModel(_rand_complex(32, 32, seed=6))
    full = model(obj)
    for b in (1, 9, 16):
        assert torch.equal(model(obj[:b]), full[:b])
    assert torch.equal(model(obj[7:8])[0], full[7])


@pytest.mark.parametrize("batch", [1, 3, 16])
def test_batch_gain_multiplies_by_batch_size(batch):
    obj = _rand_complex(batch, 1, 8, 8, seed=7)
    probe = _rand_complex(8, 8, seed=8)
    plain = physics.ForwardModel(probe)(obj)
    gained = physics.ForwardModel(probe, gain="batch")(obj)
    torch.testing.assert_close(gained, plain * batch)


def test_batch_gain_equals_the_reference_aliasing_bug():
    # The reference collated the (N, N) probe to (B, N, N) and summed it coherently as B modes.
    obj, probe = _rand_complex(4, 1, 8, 8, seed=9), _rand_complex(8, 8, seed=10)
    aliased = torch.fft.fftshift(
        torch.fft.fft2((obj[:, :, None] * probe.expand(4, 8, 8)).sum(dim=2), norm="ortho").abs(), dim=(-2, -1)
    )
    torch.testing.assert_close(physics.ForwardModel(probe, gain="batch")(obj), aliased, rtol=1e-5, atol=1e-5)


def test_modes_sum_incoherently():
    obj, p = _rand_complex(2, 1, 8, 8, seed=11), _rand_complex(8, 8, seed=12)
    single = physics.far_field_amplitude(obj, p)
    two = physics.far_field_amplitude(obj, physics.as_probe_layout(torch.stack([3 * p, 4 * p])))
    torch.testing.assert_close(two, 5 * single)  # sqrt(3² + 4²), not 3 + 4


def test_per_sample_probe_batch():
    obj = _rand_complex(3, 1, 8, 8, seed=13)
    probes = _rand_complex(3, 1, 1, 8, 8, seed=14)
    amp = physics.far_field_amplitude(obj, probes)
    for i in range(3):
        torch.testing.assert_close(amp[i], physics.far_field_amplitude(obj[i : i + 1], probes[i, 0, 0])[0])


def test_probe_layouts():
    p = np.ones((8, 8), np.complex64)
    assert physics.as_probe_layout(p).shape == (1, 1, 1, 8, 8)
    assert physics.as_probe_layout(np.stack([p, p])).shape == (1, 1, 2, 8, 8)
    assert physics.as_probe_layout(torch.ones(8, 8)).dtype == torch.complex64
    assert physics.as_probe_layout(torch.ones(2, 1, 1, 8, 8, dtype=torch.complex128)).shape == (2, 1, 1, 8, 8)


@pytest.mark.parametrize(
    "probe,match",
    [
        (torch.ones(3, 1, 1, 8, 8, dtype=torch.complex64), "batch axis 3 must be 1 or the object batch 4"),
        (torch.ones(4, 8, 8, dtype=torch.complex64), "not in the"),  # a collated probe is refused, not aliased
        (torch.ones(1, 2, 1, 8, 8, dtype=torch.complex64), "channel axis"),
        (torch.ones(1, 1, 1, 16, 16, dtype=torch.complex64), "object patches are"),
    ],
)
def test_bad_probe_layouts_rejected(probe, match):
    with pytest.raises(ValueError, match=match):
        physics.far_field_amplitude(torch.ones(4, 1, 8, 8, dtype=torch.complex64), probe)


@pytest.mark.parametrize("shape", [(8,), (1, 2, 8, 8), (1, 1, 1, 1, 8, 8), (8, 6)])
def test_as_probe_layout_rejects(shape):
    with pytest.raises(ValueError):
        physics.as_probe_layout(torch.ones(shape, dtype=torch.complex64))


def test_object_must_be_complex_4d():
    with pytest.raises(ValueError, match="complex"):
        physics.far_field_amplitude(torch.ones(2, 1, 8, 8), torch.ones(8, 8, dtype=torch.complex64))
    with pytest.raises(ValueError, match="complex"):
        physics.far_field_amplitude(torch.ones(1, 8, 8, dtype=torch.complex64), torch.ones(8, 8, dtype=torch.complex64))


def test_forward_model_module():
    probe = _rand_complex(8, 8, seed=15)
    model = physics.ForwardModel(probe)
    assert "probe" in model.state_dict() and list(model.parameters()) == []
    assert model.probe.shape == (1, 1, 1, 8, 8)
    assert "gain='none'" in repr(model)
    with pytest.raises(ValueError, match="none, batch"):
        physics.ForwardModel(probe, gain="sometimes")


def test_gradient_finite_at_zero_amplitude():
    obj = torch.zeros(2, 1, 8, 8, dtype=torch.complex64, requires_grad=True)
    physics.ForwardModel(torch.ones(8, 8)).forward(obj).sum().backward()
    assert torch.isfinite(obj.grad.real).all() and torch.isfinite(obj.grad.imag).all()


# ----------------------------------------------------------------------------- losses


def test_loss_registry():
    assert set(physics.LOSSES) == set(LOSSES_ALLOWED)
    assert physics.get_loss("mae") is physics.normalized_mae
    assert physics.get_loss("poisson") is physics.poisson_nll
    with pytest.raises(ValueError, match="mae, poisson"):
        physics.get_loss("l2")


def test_mae_known_value():
    a_pred = torch.tensor([1.0, 2.0, 3.0, 4.0]).reshape(1, 1, 2, 2)
    a_obs = torch.tensor([1.0, 1.0, 1.0, 3.0]).reshape(1, 1, 2, 2)
    # mean|diff| = (0 + 1 + 2 + 1)/4 = 1; mean(a_obs) = 1.5
    assert physics.normalized_mae(a_pred, a_obs).item() == pytest.approx(1.0 / (1.5 + 1e-8), rel=1e-7)
    x = torch.rand(4, 1, 8, 8)
    assert physics.normalized_mae(x, x.clone()).item() == 0.0


def test_mae_denominator_detached():
    a_pred = torch.tensor([2.0, 0.0]).reshape(1, 1, 1, 2)
    a_obs = torch.tensor([1.0, 1.0]).reshape(1, 1, 1, 2).requires_grad_(True)
    physics.normalized_mae(a_pred, a_obs).backward()
    # only the numerator depends on a_obs: d/da_obs mean|p - o| / 1 = -sign(p - o)/2
    torch.testing.assert_close(a_obs.grad, torch.tensor([-0.5, 0.5]).reshape(1, 1, 1, 2))


def test_poisson_known_value():
    a_pred = torch.tensor([[1.0, 2.0], [0.5, 1.5]], dtype=torch.float64).reshape(2, 1, 1, 2)
    a_obs = torch.tensor([[1.0, 1.0], [2.0, 0.0]], dtype=torch.float64).reshape(2, 1, 1, 2)
    total = 0.0
    for pred_row, obs_row in zip([[1.0, 2.0], [0.5, 1.5]], [[1.0, 1.0], [2.0, 0.0]]):
        for p, o in zip(pred_row, obs_row):
            r, k = p * p + 1e-8, o * o
            total += r - k * math.log(r) + math.lgamma(k + 1)
    expected = (total / 2) / (1.0 + 1e-8)  # per-sample sums, mean over 2 samples, / mean(a_obs)=1
    assert physics.poisson_nll(a_pred, a_obs).item() == pytest.approx(expected, rel=1e-12)


def test_poisson_minimised_at_observation():
    g = torch.Generator().manual_seed(16)
    a_obs = torch.rand(3, 1, 8, 8, generator=g, dtype=torch.float64) + 0.1
    at = physics.poisson_nll(a_obs, a_obs)
    for scale in (0.9, 0.99, 1.01, 1.1):
        assert physics.poisson_nll(a_obs * scale, a_obs) > at
    noise = 0.01 * torch.randn(3, 1, 8, 8, generator=g, dtype=torch.float64)
    assert physics.poisson_nll(a_obs + noise, a_obs) > at
    a_pred = a_obs.clone().requires_grad_(True)
    physics.poisson_nll(a_pred, a_obs).backward()
    assert a_pred.grad.abs().max().item() < 1e-6


def test_poisson_finite_at_zero_prediction():
    a_obs = torch.ones(2, 1, 4, 4)
    loss = physics.poisson_nll(torch.zeros(2, 1, 4, 4, requires_grad=True), a_obs)
    assert torch.isfinite(loss)


@pytest.mark.parametrize("loss", sorted(physics.LOSSES))
def test_losses_scalar_and_shape_checked(loss):
    fn = physics.get_loss(loss)
    out = fn(torch.rand(2, 1, 8, 8), torch.rand(2, 1, 8, 8))
    assert out.ndim == 0
    with pytest.raises(ValueError, match="shape"):
        fn(torch.rand(2, 1, 8, 8), torch.rand(3, 1, 8, 8))


def test_losses_batch_size_independent():
    # with identical samples the objective does not depend on how many are in the batch
    x, y = torch.rand(1, 1, 8, 8), torch.rand(1, 1, 8, 8)
    for name, fn in physics.LOSSES.items():
        torch.testing.assert_close(fn(x.expand(5, -1, -1, -1), y.expand(5, -1, -1, -1)), fn(x, y), msg=name)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu_and_is_batch_independent():
    obj = _rand_complex(16, 1, 32, 32, seed=17)
    model = physics.ForwardModel(_rand_complex(32, 32, seed=18))
    cpu = model(obj)
    gpu_model = model.to("cuda")
    full = gpu_model(obj.cuda())
    torch.testing.assert_close(full.cpu(), cpu, rtol=1e-5, atol=1e-5)
    for b in (1, 9, 16):
        torch.testing.assert_close(gpu_model(obj[:b].cuda()), full[:b], rtol=1e-6, atol=1e-6)
