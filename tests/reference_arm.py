"""Test fixture builder: a small reference-project arm output folder, laid out as in brief §7.3.

``build_reference_arm(root)`` writes what the reference's grid-lines runner leaves for one arm
(tiny sizes: N=32, width 4, 2 blocks, 3 epochs of 4 steps)::

    root/runs/pinn_<arch>/{model.pt, history.json, metrics.json, config.json}
    root/lightning_logs/version_0/metrics.csv   (a stale earlier version), version_1/metrics.csv
    root/checkpoints/{epoch=01-mae_val=0.1200.ckpt, epoch=00-..., last.ckpt}
    root/datasets/N32/gs1/test.npz               (diffraction (n, N, N, 1))

``model.pt`` is a LightningModule state dict: the generator under ``model.generator.`` and again
under ``model.autoencoder.``, beside the forward model's ``model.forward_model.alpha``/``beta``.
The CSV has the CSVLogger's shape: sorted metric columns plus ``epoch`` and ``step``, one row per
logging call with empty cells for the metrics that call did not log.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import torch

from fnodiag.config import RunConfig
from fnodiag.models import build_model
from fnodiag.models.reference_layout import to_reference_state

ARCH = "stable_hybrid"
EPOCHS, STEPS = 3, 4
LR = 3e-4
COLUMNS = [
    "epoch",
    "grad_norm_postclip_epoch",
    "grad_norm_postclip_step",
    "grad_norm_preclip_epoch",
    "grad_norm_preclip_step",
    "learning_rate",
    "mae_train_loss_epoch",
    "mae_train_loss_step",
    "mae_val_loss",
    "step",
]


def reference_config(arch: str = ARCH) -> dict:
    """A TorchRunnerConfig as the runner dumps it (brief §7.2), plus provenance keys."""
    return {
        "train_npz": "datasets/N32/gs1/train.npz",
        "test_npz": "datasets/N32/gs1/test.npz",
        "output_dir": "outputs/arm_stable_sgd",
        "architecture": arch,
        "seed": 20260128,
        "epochs": EPOCHS,
        "batch_size": 16,
        "learning_rate": LR,
        "infer_batch_size": 8,
        "gradient_clip_val": 0.0,
        "gradient_clip_algorithm": "norm",
        "generator_output_mode": "real_imag",
        "N": 32,
        "gridsize": 1,
        "torch_loss_mode": "mae",
        "fno_modes": 4,
        "fno_width": 4,
        "fno_blocks": 2,
        "fno_cnn_blocks": 2,
        "fno_input_transform": "none",
        "max_hidden_channels": None,
        "optimizer": "sgd",
        "weight_decay": 0.0,
        "momentum": 0.9,
        "adam_beta1": 0.9,
        "adam_beta2": 0.999,
        "log_grad_norm": True,
        "grad_norm_log_freq": 1,
        "enable_checkpointing": True,
        "scheduler": "WarmupCosine",
        "lr_warmup_epochs": 1,
        "lr_min_ratio": 0.05,
        "plateau_factor": 0.5,
        "plateau_patience": 2,
        "plateau_min_lr": 5e-5,
        "plateau_threshold": 0.0,
        "logger_backend": "csv",
        "reassembly_mode": "grid_lines",
        "scale_contract": {"nphotons": 1e9, "mode": "intensity"},
    }


def generator_state(arch: str = ARCH, seed: int = 0) -> dict[str, torch.Tensor]:
    """A generator state dict of the fixture's sizes, in the reference's names (``encoder_blocks.{i}...``)."""
    torch.manual_seed(seed)
    cfg = RunConfig().override(
        {
            "model.arch": arch,
            "model.width": 4,
            "model.modes": 4,
            "model.blocks": 2,
            "model.spectral_layout": "reference",
            "data.N": 32,
        }
    )
    return to_reference_state(build_model(cfg.model, 32))


def csv_rows(steps: int = STEPS, epochs: int = EPOCHS) -> list[dict]:
    """Rows as Lightning's CSVLogger writes them for the reference's logging calls (brief §5.5)."""
    rng = np.random.default_rng(0)
    rows, step = [], 0
    for epoch in range(epochs):
        rows.append({"epoch": epoch, "step": step, "learning_rate": 0.1 * LR})  # frozen warmup: 0.1·lr, never steps
        pres = []
        for _ in range(steps):
            pre = float(rng.uniform(5, 20))
            loss = float(0.3 / (1 + step) + 0.01)
            rows.append(
                {
                    "epoch": epoch,
                    "step": step,
                    "grad_norm_preclip_step": pre,
                    "grad_norm_postclip_step": pre,
                    "mae_train_loss_step": loss,
                }
            )
            pres.append(pre)
            step += 1
        rows.append({"epoch": epoch, "step": step - 1, "mae_val_loss": 0.2 / (1 + epoch)})
        rows.append(
            {
                "epoch": epoch,
                "step": step - 1,
                "grad_norm_preclip_epoch": float(np.mean(pres)),
                "grad_norm_postclip_epoch": float(np.mean(pres)),
                "mae_train_loss_epoch": 0.1 / (1 + epoch),
            }
        )
    return rows


def write_csv(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=COLUMNS)
        w.writeheader()
        for r in rows:
            w.writerow({c: r.get(c, "") for c in COLUMNS})
    return path


def build_reference_arm(root: Path, arch: str = ARCH, *, generator: dict | None = None) -> Path:
    """Lay out one reference arm folder under ``root``; returns ``root``."""
    root = Path(root)
    run = root / "runs" / f"pinn_{arch}"
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps(reference_config(arch), indent=2))
    (run / "history.json").write_text(
        json.dumps(
            {"train_loss": [0.1 / (1 + e) for e in range(EPOCHS)], "val_loss": [0.2 / (1 + e) for e in range(EPOCHS)]}
        )
    )
    (run / "metrics.json").write_text(
        json.dumps(
            {
                "mae": [0.0712, 0.1530],
                "mse": [0.01, 0.04],
                "psnr": [71.2, 64.3],
                "ssim": [0.8312, 0.7021],
                "ms_ssim": [0.9, 0.8],
                "frc50": [12.0, 9.0],
                "frc1over7": [20.0, 15.0],
                "frc": [[1.0, 0.9, 0.5], None],
            }
        )
    )
    gen = generator if generator is not None else generator_state(arch)
    state = {
        **{f"model.generator.{k}": v for k, v in gen.items()},
        **{f"model.autoencoder.{k}": v.clone() for k, v in gen.items()},
        "model.forward_model.alpha": torch.tensor(1.0),
        "model.forward_model.beta": torch.tensor(0.0),
    }
    torch.save(state, run / "model.pt")
    write_csv(root / "lightning_logs" / "version_0" / "metrics.csv", csv_rows(steps=1, epochs=1))  # an aborted try
    write_csv(root / "lightning_logs" / "version_1" / "metrics.csv", csv_rows())
    ckpts = root / "checkpoints"
    ckpts.mkdir()
    for name in ("epoch=00-mae_val=0.2000.ckpt", "epoch=02-mae_val=0.0667.ckpt", "last.ckpt"):
        torch.save({"state_dict": state, "epoch": EPOCHS - 1, "global_step": EPOCHS * STEPS}, ckpts / name)
    data = root / "datasets" / "N32" / "gs1"
    data.mkdir(parents=True)
    rng = np.random.default_rng(1)
    np.savez(data / "test.npz", diffraction=rng.uniform(0, 1, (4, 32, 32, 1)).astype(np.float32))
    np.savez(data / "train.npz", diffraction=rng.uniform(0, 1, (4, 32, 32, 1)).astype(np.float32))
    return root
