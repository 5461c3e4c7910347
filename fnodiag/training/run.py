"""One training run, end to end: config → data (cached) → system → Trainer → run directory.

Only rank 0 creates the run directory and writes records; under DDP the other ranks (which
Lightning starts by re-running the same command) find the dataset in the cache and the run
directory already made, train their shard, and write nothing.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import time
import traceback
import warnings
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.fabric.utilities.rank_zero import rank_zero_only

from fnodiag.config import ConfigError, RunConfig, val_batch_size
from fnodiag.diagnostics.collapse import write_collapse
from fnodiag.diagnostics.devices import check_train_devices
from fnodiag.diagnostics.run_findings import write_end_of_run
from fnodiag.ptycho.simulate import load_or_simulate
from fnodiag.runs import RunDir, RunStore, ensure_writable_dir, states
from fnodiag.runs.filesystems import check_store_folder
from fnodiag.runs.liveness import HOST
from fnodiag.runs.lock import RunLock
from fnodiag.training.checkpointing import TEMPORARY, RunCheckpointIO, SafeCheckpoint
from fnodiag.training.data import GridLinesDataModule
from fnodiag.training.errors import TrainingError
from fnodiag.training.evaluate import evaluate_run
from fnodiag.training.live_capture import PROBE_BATCH, LiveCapture
from fnodiag.training.live_frames import LiveFrames, probe_truth
from fnodiag.training.recorder import RunRecorder
from fnodiag.training.registries import validated
from fnodiag.training.rng import RngState
from fnodiag.training.schedulers import MONITOR
from fnodiag.training.system import ReconstructionSystem


def default_run_name(cfg: RunConfig) -> str:
    """``<arch>-<optimizer>-s<seed>-<YYYYmmdd-HHMMSS>``: unique, sortable, readable."""
    return f"{cfg.model.arch}-{cfg.optim.name}-s{cfg.train.seed}-{datetime.now():%Y%m%d-%H%M%S}"


def is_rank_zero() -> bool:
    """True in the process that owns the run records (rank 0 of a DDP job, or a plain run)."""
    return rank_zero_only.rank == 0


class _NoTip(logging.Filter):
    """Drop Lightning's advertisement for its cloud logger, printed on every run (fnodiag records its own)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("💡 Tip")


for _logger in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
    logging.getLogger(_logger).addFilter(_NoTip())

# Warnings not meant for fnodiag's users: Lightning's own deprecation noise with torch 2.13 (every run),
# and on resume that the checkpoint folder is not empty (resuming into it is the point).
QUIET = r"`isinstance\(treespec, LeafSpec\)` is deprecated"
QUIET_ON_RESUME = r"Checkpoint directory .* exists and is not empty"


def _record_failure(run: RunDir, exc: BaseException) -> str:
    """Append ``exc``'s traceback to ``<run>/train.log`` and put it in a ``failed`` status; returns it."""
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    with open(run.path / "train.log", "a", encoding="utf-8") as log:
        log.write(f"--- {datetime.now():%Y-%m-%d %H:%M:%S} training failed\n{tb}")
    status = run.read_status(raw=True) or {}
    short = tb if len(tb) <= 4000 else f"{tb[:600]}  ...\n{tb[-3000:]}"  # the head names it, the tail where
    run.write_status(
        "failed",
        step=int(status.get("step", 0)),
        epoch=int(status.get("epoch", 0)),
        message=f"{type(exc).__name__}: {exc}\n{short}",
    )
    return tb


def build_trainer(
    cfg: RunConfig,
    run: RunDir,
    store: RunStore,
    data_info: dict,
    *,
    progress: bool = True,
    extra_callbacks=(),
    history: dict | None = None,
    recorder: RunRecorder | None = None,
) -> L.Trainer:
    """The Lightning Trainer with the run's recorder (given, or made here) and checkpoint callbacks."""
    clip = cfg.clip
    lightning_clip = clip.algorithm in ("norm", "value")
    checkpoint = SafeCheckpoint(
        dirpath=run.checkpoints_dir,
        filename="best",
        monitor=MONITOR,
        mode="min",
        save_top_k=1,
        save_last=True,
        enable_version_counter=False,
    )
    return L.Trainer(
        max_epochs=cfg.train.epochs,
        accelerator=cfg.train.accelerator,
        devices=_devices(cfg.train.devices),
        strategy=cfg.train.strategy,
        precision=cfg.train.precision,
        gradient_clip_val=clip.value if lightning_clip else None,
        gradient_clip_algorithm=clip.algorithm if lightning_clip else None,
        callbacks=[recorder or RunRecorder(run, store, data_info, history), RngState(), checkpoint, *extra_callbacks],
        plugins=[RunCheckpointIO()],
        logger=False,
        num_sanity_val_steps=0,
        enable_progress_bar=progress,
        enable_model_summary=progress,
        default_root_dir=str(run.path),
    )


def train(
    cfg: RunConfig,
    out: str | Path,
    *,
    name: str | None = None,
    cache_dir: str | Path | None = None,
    progress: bool = True,
    extra_callbacks=(),
    resume: bool = False,
    folder: Callable[[Path], RunDir] = RunDir,
) -> RunDir:
    """Train one run into ``<out>/<name>`` and evaluate its best and last weights.

    Parameters
    ----------
    cfg : RunConfig
        Validated here; a bad value raises :class:`~fnodiag.config.ConfigError`.
    out : path
        The runs folder; the run directory is ``out / name``.
    name : str, optional
        Run directory name (default :func:`default_run_name`).
    cache_dir : path, optional
        Dataset cache (default ``out / "datasets"``).
    resume : bool
        Continue the run already in ``out / name`` (same configuration) from its
        ``checkpoints/last.ckpt``: records after that checkpoint are dropped and training goes
        on from the next epoch, with the random states saved in the checkpoint (exact resume,
        :mod:`fnodiag.training.rng`). Without a checkpoint the run starts again from scratch.
    folder : callable
        ``folder(out / name)`` gives the run folder object training writes through: :class:`RunDir`
        (default), or a :class:`~fnodiag.runs.remote.RemoteRunDir` whose records (JSON files and
        store rows) go to a sweep driver on another node.

    Returns
    -------
    RunDir

    Raises
    ------
    ConfigError, FileExistsError, ValueError
        Bad input, before anything is trained (an existing non-empty run directory without
        ``resume`` names ``fnodiag train --resume``).
    RunBusy
        Another live process trains the run (one writer per run: the run is owned through
        :class:`~fnodiag.runs.lock.RunLock` for the whole of training, as a sweep's task owns it).
    TrainingError
        Training or the evaluation after it raised: the run's status is ``failed`` with the
        traceback in its message and in ``<run>/train.log``; the cause is ``__cause__``.
    """
    validated(cfg)
    out = Path(out)
    name = name or default_run_name(cfg)
    if not re.fullmatch(r"[A-Za-z0-9._-]+", name):
        raise ConfigError(f"run name {name!r} may only hold letters, digits, '.', '_' and '-'")
    rank0 = is_rank_zero()
    if rank0:  # before anything is written or started: Lightning starts one process per CPU "device" asked for
        check_train_devices(cfg.train.accelerator, cfg.train.devices)
    check_store_folder(out, "--out folder")  # the run store goes there: refused on a network filesystem
    ensure_writable_dir(out, "--out folder")
    cache_dir = ensure_writable_dir(cache_dir or out / "datasets", "dataset cache folder")
    where = out / name
    lock = RunLock(where)
    if not rank0 or lock.held_here():  # DDP ranks > 0 write nothing; a sweep task owns the run already
        return _train(
            cfg, where, cache_dir, progress=progress, extra_callbacks=extra_callbacks, resume=resume, folder=folder
        )
    with lock.acquire({"host": HOST, "pid": os.getpid(), "started": datetime.now(UTC).isoformat(timespec="seconds")}):
        status = RunDir(where).read_status() if resume and RunDir(where).status_path.is_file() else None
        if status and status["state"] in states.DONE:  # a resume that waited behind another one: nothing left
            return RunDir(where)
        return _train(
            cfg, where, cache_dir, progress=progress, extra_callbacks=extra_callbacks, resume=resume, folder=folder
        )


def _train(
    cfg: RunConfig, where: Path, cache_dir: Path, *, progress: bool, extra_callbacks, resume: bool, folder
) -> RunDir:
    """:func:`train` once the run is owned (rank 0) or owned by rank 0 (the other DDP ranks)."""
    data = load_or_simulate(cfg.data, cache_dir)
    rank0 = is_rank_zero()
    if rank0 and not resume and where.is_dir() and any(where.iterdir()):
        raise FileExistsError(
            f"run directory {str(where)!r} already exists and is not empty; continue it with "
            f"`fnodiag train --resume {where}` or choose another --name"
        )
    run = RunDir.create(folder(where), cfg, exist_ok=resume) if rank0 else folder(where)
    store = run.open_store(enabled=rank0)
    ckpt_path, history = _resume_point(run, store) if resume else (None, None)
    L.seed_everything(cfg.train.seed, workers=True, verbose=False)
    system = ReconstructionSystem(cfg.to_dict(), probe=data.probe)
    system.set_val_reference(
        data.test.objects[0], grid=data.test.grid, stride=data.test.stride, norm=data.test.norm_Y_I
    )
    datamodule = GridLinesDataModule(
        data,
        batch_size=cfg.train.batch_size,
        infer_batch_size=val_batch_size(cfg.train),
        num_workers=cfg.train.num_workers,
        keep_partial_batch=cfg.train.keep_partial_batch,
    )
    data_info = {
        "key": data.key,
        "cache_dir": str(cache_dir.resolve()),
        "N": cfg.data.N,
        "n_train": len(data.train.diffraction),
        "n_test": len(data.test.diffraction),
        "set_phi": cfg.data.set_phi,
        "fingerprint": data.fingerprint,
        "probe": "ideal disk" if data.config.probe_npz is None else f"npz {data.config.probe_npz}",
    }
    callbacks = list(extra_callbacks)
    recorder = RunRecorder(run, store, data_info, history)
    if cfg.train.capture_every > 0:  # given the recorder's writer: each capture also flushes the step scalars
        probe = torch.from_numpy(np.ascontiguousarray(data.train.diffraction[:PROBE_BATCH], dtype=np.float32))
        callbacks.append(
            LiveCapture(recorder.writer, module="generator", probe=probe.unsqueeze(1), every=cfg.train.capture_every)
        )
    if cfg.train.frame_every > 0:
        probe = torch.from_numpy(np.ascontiguousarray(data.train.diffraction[:PROBE_BATCH], dtype=np.float32))
        callbacks.append(
            LiveFrames(store, probe.unsqueeze(1), probe_truth(data.train, PROBE_BATCH), every=cfg.train.frame_every)
        )
    trainer = build_trainer(
        cfg, run, store, data_info, progress=progress, extra_callbacks=callbacks, history=history, recorder=recorder
    )
    started = time.perf_counter()
    try:
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=QUIET)
                if ckpt_path:
                    warnings.filterwarnings("ignore", message=QUIET_ON_RESUME)
                trainer.fit(system, datamodule=datamodule, ckpt_path=ckpt_path)
        finally:
            store.close()
        if trainer.is_global_zero:
            evaluate_run(run, system, data, cfg.train.infer_batch_size)
            write_collapse(run)
            effective = run.read_json("effective_config.json", default={}) or {}
            earlier = sum((history or {}).get("epoch_time_s", []))  # epochs kept from before a resume
            effective["wall_time_s"] = time.perf_counter() - started + earlier
            if ckpt_path:
                effective["resumed_from"] = {"checkpoint": str(ckpt_path), "epoch": len(history["train_loss"])}
            run.write_json("effective_config.json", effective)
            write_end_of_run(run)  # findings.json (never raises; `fnodiag diagnose` adds the settings audit)
    except Exception as exc:  # KeyboardInterrupt / SystemExit pass: the run is "interrupted"
        if rank0:
            _record_failure(run, exc)
            write_end_of_run(run)  # what the records show up to the failure
        raise TrainingError(
            f"training failed: {type(exc).__name__}: {exc}".splitlines()[0]
            + f"; traceback in {run.path / 'train.log'}",
            run,
        ) from exc
    return run


def _resume_point(run: RunDir, store: RunStore) -> tuple[Path | None, dict | None]:
    """``(checkpoint, history up to it)`` of an interrupted run; records after it are deleted.

    The checkpoint is ``last.ckpt``; a damaged one (truncated, or not the weights-only archive fnodiag
    writes) falls back to a whole ``best.ckpt``, said on stderr. Neither whole: a ValueError naming the
    file and the way out. Temporary files a kill left beside the checkpoints are removed (the run is owned).
    """
    for tmp in run.checkpoints_dir.glob(TEMPORARY):
        tmp.unlink(missing_ok=True)
    if not run.last_ckpt_path.is_file():
        store.truncate(0)
        return None, None
    path, ckpt, why = run.last_ckpt_path, *_load_checkpoint(run.last_ckpt_path)
    if ckpt is None:
        best = _load_checkpoint(run.best_ckpt_path)[0] if run.best_ckpt_path.is_file() else None
        if best is None:
            raise ValueError(
                f"checkpoint {str(path)!r} is damaged ({why}) and there is no whole best.ckpt to resume from; "
                f"restore it, or delete it to train the run again from the start (rm {path})"
            )
        path, ckpt = run.best_ckpt_path, best
        print(
            f"fnodiag: {str(run.last_ckpt_path)!r} is damaged ({why}); resuming from {str(path)!r} "
            f"(epoch {int(ckpt['epoch']) + 1}), the records after it are dropped",
            file=sys.stderr,
        )
    epochs_done, step = int(ckpt["epoch"]) + 1, int(ckpt["global_step"])
    store.truncate(step)
    history = {k: v[:epochs_done] for k, v in (run.read_history() or {}).items()}
    return path, history


def _load_checkpoint(path: Path) -> tuple[dict | None, str]:
    """``(checkpoint, "")``, or ``(None, why)`` for a file that is not a whole weights-only Lightning checkpoint."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        int(ckpt["epoch"]), int(ckpt["global_step"])  # noqa: B018 -- both must be there and be numbers
    except Exception as exc:  # truncated zip, pickled objects (refused unrun), missing keys: all "damaged"
        return None, f"{type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''}"
    return ckpt, ""


def _devices(value: str):
    """Lightning accepts 'auto', an int count, or a list/str of ids; keep CLI strings faithful."""
    return int(value) if isinstance(value, str) and value.isdigit() else value
