"""Time ``simulate(DataConfig())`` (N=64, nimgs 1/1) against its 30 s budget, with a breakdown.

Prints the end-to-end seconds, their ratio to the budget (< 1 passes), and the cost of the
three main stages measured separately in the same process: object generation (both splits),
the batched far-field FFTs of the train patches, and the Poisson draw of the train split.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from fnodiag.config import DataConfig
from fnodiag.ptycho import simulate as sim
from fnodiag.ptycho.forward import as_probe_layout, far_field_amplitude

BUDGET_S = 30.0


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def main() -> None:
    cfg = DataConfig()
    sim.simulate(DataConfig(N=32, object_size=96, n_lines=10))  # warm imports and torch's FFT plans
    data, total = _timed(lambda: sim.simulate(cfg))

    objects, t_obj = _timed(
        lambda: [
            sim.make_objects(n, cfg.object_size, n_lines=cfg.n_lines, seed=seed, set_phi=cfg.set_phi)
            for n, seed in ((cfg.nimgs_train, cfg.train_object_seed), (cfg.nimgs_test, cfg.test_object_seed))
        ]
    )
    patches = sim.extract_patches(objects[0], cfg.N, cfg.train_stride) / data.train.norm_Y_I
    probe = as_probe_layout(torch.from_numpy(data.probe))

    def ffts():
        return np.concatenate(
            [
                far_field_amplitude(torch.from_numpy(patches[i : i + sim.FFT_CHUNK])[:, None], probe)[:, 0].numpy()
                for i in range(0, len(patches), sim.FFT_CHUNK)
            ]
        )

    amp, t_fft = _timed(ffts)
    lam = np.square(data.intensity_scale * amp.astype(np.float64))
    _, t_poisson = _timed(lambda: np.random.default_rng(0).poisson(lam))

    print(
        f"simulate(DataConfig()) N={cfg.N} nimgs {cfg.nimgs_train}/{cfg.nimgs_test}: {total:.2f} s "
        f"on {torch.get_num_threads()} torch threads"
    )
    print(f"ratio to the {BUDGET_S:.0f} s budget: {total / BUDGET_S:.3f} (< 1 passes)")
    print(f"  objects (train+test)       {t_obj:6.2f} s")
    print(f"  FFTs ({len(patches):,} train patches) {t_fft:6.2f} s")
    print(f"  Poisson (train split)      {t_poisson:6.2f} s")
    if total > BUDGET_S:
        raise SystemExit(f"simulate took {total:.1f} s, over the {BUDGET_S:.0f} s budget")


if __name__ == "__main__":
    main()
