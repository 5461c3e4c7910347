"""Device requests checked against what this machine has, before anything is started.

``fnodiag train --accelerator/--devices`` (Lightning's values) and ``fnodiag capture --device``
(a torch device) are refused here in one line naming the flag, what exists and the fix: a GPU asked
for on a machine without one, zero devices, more CPU processes than cores (Lightning starts one
process per CPU "device"), a GPU id that does not exist, a device torch does not know. Torch only
(no Lightning), so every layer above may ask.
"""

from __future__ import annotations

import os

import torch

from fnodiag.config import ConfigError

ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps")


def cpu_count() -> int:
    """Cores this process may run on (its affinity), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def gpu_count() -> int:
    """CUDA devices torch can use (0 on a CPU build or a machine without one)."""
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def _mps() -> bool:
    return bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())


def _have() -> str:
    gpus = gpu_count()
    return f"this machine has {cpu_count()} CPU core(s) and {gpus} CUDA GPU(s)" + (
        "" if torch.version.cuda else " (torch is a CPU build)"
    )


def check_train_devices(accelerator: str, devices: str) -> None:
    """Refuse a Lightning ``accelerator`` / ``devices`` pair this machine cannot run.

    Parameters
    ----------
    accelerator : str
        ``auto``, ``cpu``, ``gpu``, ``cuda`` or ``mps`` (``train.accelerator``).
    devices : str
        ``auto``, a count (``-1``: all), or GPU ids ``"0,1"`` / ``"[0, 1]"`` (``train.devices``).

    Raises
    ------
    ConfigError
        One line naming ``--accelerator`` or ``--devices``, what exists, and the value to use.
    """
    acc, dev = str(accelerator).strip().lower(), str(devices).strip()
    if acc not in ACCELERATORS:
        raise ConfigError(f"--accelerator {accelerator!r} is not one of {', '.join(ACCELERATORS)}; {_have()}")
    if acc in ("gpu", "cuda") and gpu_count() == 0 and not (acc == "gpu" and _mps()):
        raise ConfigError(f"--accelerator {accelerator} asks for a GPU, but {_have()}; use --accelerator cpu or auto")
    if acc == "mps" and not _mps():
        raise ConfigError(f"--accelerator mps asks for an Apple GPU, but {_have()}; use --accelerator cpu or auto")
    if acc == "auto":
        acc = "gpu" if gpu_count() else ("mps" if _mps() else "cpu")
    if dev == "auto":
        return
    count = 1 if acc == "mps" else (cpu_count() if acc == "cpu" else gpu_count())
    kind = "CPU processes (one per core at most)" if acc == "cpu" else "GPUs"
    ids = dev.strip("[]").replace(" ", "")
    if "," in ids or dev.startswith("["):
        if acc == "cpu":
            raise ConfigError(
                f"--devices {devices!r}: CPU training takes a count of processes, not ids; e.g. --devices 1"
            )
        try:
            wanted = [int(i) for i in ids.split(",") if i]
        except ValueError:
            raise ConfigError(f"--devices {devices!r} is not auto, a count or GPU ids like 0,1") from None
        bad = [i for i in wanted if not 0 <= i < count]
        if not wanted or bad:
            raise ConfigError(f"--devices {devices!r} names GPU id(s) {bad or wanted} that do not exist; {_have()}")
        return
    try:
        n = int(dev)
    except ValueError:
        raise ConfigError(f"--devices {devices!r} is not auto, a count or GPU ids like 0,1") from None
    if n == 0 or n < -1:
        raise ConfigError(f"--devices {devices} trains on no device; use a count >= 1, -1 (all) or auto")
    if n > count:
        raise ConfigError(f"--devices {n} asks for {n} {kind}, but {_have()}; use --devices {count} or fewer (or auto)")


def check_device(device: str, flag: str = "--device") -> torch.device:
    """The torch device ``device`` names, when it exists here.

    Raises
    ------
    ConfigError
        One line naming ``flag``: a name torch does not know, CUDA on a CPU build or a machine without
        a GPU, or a GPU index past the last one.
    """
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ConfigError(
            f"{flag} {device!r} is not a torch device; use {flag} cpu (or cuda, cuda:N on a GPU machine)"
        ) from None
    if dev.type == "cuda" and (gpu_count() == 0 or (dev.index or 0) >= gpu_count()):
        raise ConfigError(f"{flag} {device} is not available: {_have()}; use {flag} cpu")
    if dev.type == "mps" and not _mps():
        raise ConfigError(f"{flag} {device} is not available: {_have()}; use {flag} cpu")
    if dev.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"{flag} {device!r}: fnodiag runs on cpu, cuda or mps; use {flag} cpu")
    return dev
