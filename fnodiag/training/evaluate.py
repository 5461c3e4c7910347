"""Evaluate a finished run: metrics of the best and the last weights, ``model.pt``, ``recon.png``.

Collapse after a good early optimum was the reference's main failure mode (brief §11.5), so both
the best-validation and the final checkpoints are scored on test image 0.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from fnodiag.diagnostics.capture import read_checkpoint  # noqa: E402
from fnodiag.ptycho.metrics import evaluate_patches, ground_truth_canvas, stitch  # noqa: E402
from fnodiag.ptycho.simulate import GridLinesData  # noqa: E402
from fnodiag.runs import RunDir  # noqa: E402


def generator_state(checkpoint_path: str | Path) -> dict[str, torch.Tensor]:
    """Generator-only state dict of a checkpoint (weights-only unpickling, generator keys selected)."""
    return read_checkpoint(checkpoint_path)[0]


def predict_test_image0(system, data: GridLinesData, batch_size: int) -> np.ndarray:
    """Objects predicted for the patches of test image 0: ``(GRID*GRID, N, N) complex64``."""
    n0 = data.test.grid**2
    x = torch.from_numpy(np.ascontiguousarray(data.test.diffraction[:n0], dtype=np.float32)).unsqueeze(1)
    return system.predict_objects(x, batch_size)


def evaluate_run(run: RunDir, system, data: GridLinesData, batch_size: int) -> dict:
    """Score best and last checkpoints, write ``metrics.json``, ``model.pt`` and ``recon.png``.

    The generator ends holding the last weights, which ``model.pt`` stores (generator-only).
    Missing checkpoints (a run that diverged in its first epoch) score ``None``.
    """
    t = data.test
    results, canvases = {}, {}
    for tag, path in (("best", run.best_ckpt_path), ("last", run.last_ckpt_path)):
        if not Path(path).is_file():
            results[tag] = None
            continue
        system.generator.load_state_dict(generator_state(path))
        patches = predict_test_image0(system, data, batch_size)
        results[tag] = evaluate_patches(
            patches, t.objects, N=data.config.N, stride=t.stride, grid=t.grid, norm=t.norm_Y_I
        )
        canvases[tag] = stitch(patches, grid=t.grid, stride=t.stride, norm=t.norm_Y_I)[0]
    run.write_metrics(results["best"], results["last"])
    torch.save(system.generator.state_dict(), run.model_path)
    gt = ground_truth_canvas(t.objects[0], N=data.config.N, stride=t.stride, grid=t.grid)
    save_recon_png(run.recon_path, gt, canvases, results)
    return results


def save_recon_png(path: str | Path, gt: np.ndarray, canvases: dict[str, np.ndarray], results: dict) -> None:
    """Amplitude and phase of each reconstruction beside the ground truth.

    Parameters
    ----------
    gt : (H, W) complex64
    canvases : {"best"|"last": (H, W) complex64}
    """
    rows = [("ground truth", gt)] + [(f"{tag} weights", c) for tag, c in canvases.items()]
    fig, axes = plt.subplots(len(rows), 2, figsize=(7, 3.3 * len(rows)), squeeze=False)
    for (label, canvas), (ax_a, ax_p) in zip(rows, axes):
        amp = np.abs(canvas)
        if label != "ground truth" and amp.mean() > 0:
            amp = amp * np.abs(gt).mean() / amp.mean()  # the metrics' mean-ratio rescale
        ax_a.imshow(amp, cmap="gray")
        ax_p.imshow(np.angle(canvas), cmap="twilight", vmin=-np.pi, vmax=np.pi)
        tag = label.split()[0]
        score = results.get(tag) if tag in results else None
        note = f"\namp SSIM {score['amp_ssim']:.3f}, phase SSIM {score['phase_ssim']:.3f}" if score else ""
        ax_a.set_title(f"{label}: amplitude{note}", fontsize=9)
        ax_p.set_title(f"{label}: phase", fontsize=9)
        for ax in (ax_a, ax_p):
            ax.set_xticks([])
            ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
