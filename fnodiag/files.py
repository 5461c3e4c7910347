"""Safe files: JSON-safe copies of live values and atomic writes (the one writer every record uses).

It sits at the bottom of the house beside :mod:`fnodiag.config` (which saves configurations with it),
so every layer above (datasets, run folders, sweeps, reports) writes through the same two functions:
:func:`atomic_write` for bytes and :func:`write_json` for records.

:func:`jsonable` turns a record read from live objects (optimizer groups, hyperparameters, a
collapse report with numpy scalars) into plain JSON values; :func:`atomic_write` replaces a file
so that a reader or a killed process sees the old content or the new one, never half
(temporary file beside it, fsync, ``os.replace``, fsync of the folder). Everything that writes a
record (run JSON files, dataset NPZs, exported generators, sweep summaries) goes through it.
"""

from __future__ import annotations

import json
import math
import os
import secrets
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, BinaryIO

NONFINITE = ("keep", "null")
UNKNOWN = ("repr", "error")


def jsonable(value: Any, *, nonfinite: str = "keep", unknown: str = "repr") -> Any:
    """A JSON-safe copy of ``value``: mappings (string keys) and sequences recursively, tensors and
    numpy values as numbers or lists, paths as strings.

    Parameters
    ----------
    value : any
    nonfinite : {"keep", "null"}
        ``"keep"`` leaves NaN/inf floats (``json`` writes ``NaN``/``Infinity``); ``"null"`` writes
        them as ``None`` (strict JSON, e.g. ``collapse.json`` read by browsers).
    unknown : {"repr", "error"}
        Anything else becomes its ``repr``, or raises ``TypeError`` naming the type.
    """
    if isinstance(value, Mapping):
        return {str(k): jsonable(v, nonfinite=nonfinite, unknown=unknown) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v, nonfinite=nonfinite, unknown=unknown) for v in value]
    if isinstance(value, float):  # also numpy float64
        return None if nonfinite == "null" and not math.isfinite(value) else float(value)
    if isinstance(value, (bool, int, str)) or value is None:
        return value
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "tolist"):  # torch tensors, numpy scalars and arrays
        return jsonable(value.tolist(), nonfinite=nonfinite, unknown=unknown)
    if unknown == "error":
        raise TypeError(
            f"{type(value).__name__} is not JSON serialisable; convert it to a number, string, list or dict"
        )
    return repr(value)


def atomic_write(path: str | Path, write: Callable[[BinaryIO], Any]) -> None:
    """Replace ``path`` with what ``write(fh)`` writes to a binary file object, atomically.

    Parameters
    ----------
    path : str or Path
        The file to write; the temporary file goes beside it (same filesystem, so the rename is
        atomic) and is removed if ``write`` or the rename fails (the old file is then untouched).
    write : callable
        ``write(fh)`` writes the whole new content (``np.savez(fh, ...)``, ``torch.save(obj, fh)``,
        ``fh.write(bytes)``); it is flushed and fsynced before ``os.replace``.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    try:  # make the rename itself durable; not every filesystem allows fsync on a folder
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


def atomic_write_text(path: str | Path, text: str) -> None:
    """:func:`atomic_write` of ``text``, UTF-8 encoded."""
    data = text.encode("utf-8")
    atomic_write(path, lambda fh: fh.write(data))


def write_json(path: str | Path, obj: Any, *, indent: int = 2, sort_keys: bool = True, nonfinite: str = "keep") -> Path:
    """Write ``obj`` as JSON to ``path`` atomically (:func:`atomic_write`): the one JSON-record writer.

    Parameters
    ----------
    path : str or Path
        The file; its folder is created if missing.
    obj : any
        Converted by :func:`jsonable` (``unknown="error"``: a value JSON cannot hold is a ``TypeError``).
    indent, sort_keys : int, bool
        Layout (``sort_keys=False`` keeps the mapping's order, e.g. arms in definition order).
    nonfinite : {"keep", "null"}
        See :func:`jsonable`.

    Returns
    -------
    Path
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(jsonable(obj, nonfinite=nonfinite, unknown="error"), indent=indent, sort_keys=sort_keys)
    atomic_write_text(path, text + "\n")
    return path


def no_file(path: str | Path, what: str) -> str:
    """Why ``path`` is not a file to read, in words (the one phrasing every "file not found" message uses).

    Parameters
    ----------
    path : the path given
    what : str
        What it was given as, e.g. ``"checkpoint"`` or ``"--input"``.

    Returns
    -------
    str
        ``"<what> '<path>' is a folder, not a file"`` for an existing directory (never "does not exist"),
        else ``"<what> '<path>' does not exist"``.
    """
    p = Path(path)
    return f"{what} {str(p)!r} " + ("is a folder, not a file" if p.is_dir() else "does not exist")
