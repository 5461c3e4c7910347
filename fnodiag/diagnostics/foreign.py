"""Anyone's model for ``fnodiag capture --model IMPORT:CALLABLE``: build it, load a checkpoint into it strictly.

``IMPORT`` is a module path (``neuralop.models:FNO``) or a Python file (``path/models.py:build``);
``CALLABLE`` (a class or function, dotted for an attribute) is called with ``--model-kwargs`` and
must return a ``torch.nn.Module``. Importing the module or file runs its code, as any ``import``
would: the user names it. The checkpoint's file is read by
:func:`fnodiag.diagnostics.checkpoint.read_state` (weights-only, nothing of it executed); its state
dict is found in a Lightning ``.ckpt`` under the prefix the LightningModule gave the model
(``model.``, ``net.``, ... detected by matching the built model's keys), in a training script's dict
or bare, and loaded strictly. A mismatch is one line naming the closest real cause
(:func:`mismatch_cause`): a keyword that differs from the settings saved with the weights
(neuraloperator's ``_metadata``), a keyword whose value is the size that differs, a depth, or the keys.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import inspect
import json
import re
import sys
import zipfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

from fnodiag.diagnostics.checkpoint import read_state
from fnodiag.diagnostics.safe_load import CaptureError, load_weights_only

_OPAQUE = object()  # a setting that is not plain data (a class, a function, an Unloaded marker): not compared
INPUT_KEYS = ("x", "input", "inputs", "diffraction")  # an NPZ's model input, first found (else its only array)


def resolve_callable(spec: str):
    """The callable ``IMPORT:CALLABLE`` names (the module or file is imported: its code runs).

    Raises
    ------
    CaptureError
        A malformed spec, a module or file that is not there or fails to import, no such attribute.
    """
    where, sep, attr = str(spec).rpartition(":")
    if not sep or not where or not attr:
        raise CaptureError(
            f"--model {spec!r} must be IMPORT:CALLABLE, e.g. neuralop.models:FNO or path/models.py:build"
        )
    if where.endswith(".py") or "/" in where or "\\" in where:
        path = Path(where)
        if not path.is_file():
            raise CaptureError(f"--model file {where!r} does not exist; pass path/to/file.py:CALLABLE")
        name = "fnodiag_model_" + re.sub(r"\W", "_", path.stem)
        module_spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[name] = module  # dataclasses and pickling look a module up by name
        try:
            module_spec.loader.exec_module(module)
        except Exception as exc:
            sys.modules.pop(name, None)
            raise CaptureError(f"--model file {where!r} failed to import ({_first_line(exc)})") from None
    else:
        try:
            module = importlib.import_module(where)
        except ModuleNotFoundError as exc:
            raise CaptureError(
                f"--model: no module {exc.name!r} (importing {where!r}); install it or pass a file path.py:CALLABLE"
            ) from None
        except Exception as exc:
            raise CaptureError(f"--model module {where!r} failed to import ({_first_line(exc)})") from None
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            names = [n for n in dir(obj) if not n.startswith("_")]
            close = difflib.get_close_matches(part, names, n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise CaptureError(f"--model: {where!r} has no {attr!r}{hint}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise CaptureError(f"--model {spec!r} is a {type(obj).__name__}, not a class or function")
    return obj


def build(spec: str, kwargs: dict | None = None) -> nn.Module:
    """Call the callable of ``spec`` with ``kwargs`` (checked against its signature first).

    Raises
    ------
    CaptureError
        Keywords it does not take (close names suggested), required ones missing, an error in the
        constructor, or a result that is not an ``nn.Module``.
    """
    kwargs = dict(kwargs or {})
    fn = resolve_callable(spec)
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        signature = None
    if signature is not None:
        params = signature.parameters
        if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
            unknown = [k for k in kwargs if k not in params]
            if unknown:
                close = difflib.get_close_matches(unknown[0], list(params), n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise CaptureError(f"--model-kwargs: {spec} takes no keyword {unknown[0]!r}{hint}")
        try:
            signature.bind(**kwargs)
        except TypeError as exc:
            raise CaptureError(f"--model-kwargs do not fit {spec}: {exc}; pass them in --model-kwargs JSON") from None
    try:
        model = fn(**kwargs)
    except Exception as exc:
        raise CaptureError(f"{spec}(**--model-kwargs) raised {type(exc).__name__}: {_first_line(exc)}") from None
    if not isinstance(model, nn.Module):
        raise CaptureError(f"--model {spec} returned a {type(model).__name__}, not a torch.nn.Module")
    return model


def find_prefix(state: dict, expected: set[str]) -> str:
    """The prefix under which ``state`` holds the keys ``expected`` (``""``, ``"model."``, ...).

    The prefix covering most expected keys wins, the shorter on a tie; ``""`` when none covers any.
    """
    cover: dict[str, int] = {}
    for key in state:
        parts = key.split(".")
        for i in range(len(parts)):
            if ".".join(parts[i:]) in expected:
                prefix = ".".join(parts[:i]) + ("." if i else "")
                cover[prefix] = cover.get(prefix, 0) + 1
    return min(cover, key=lambda p: (-cover[p], len(p)), default="")


def load_model(path: str | Path, spec: str, kwargs: dict | None = None) -> tuple[nn.Module, dict]:
    """Build ``spec(**kwargs)`` and load the state dict of checkpoint ``path`` into it strictly.

    Returns
    -------
    model : nn.Module
        In eval mode, on the CPU.
    info : dict
        ``checkpoint``, ``checkpoint_kind``, ``prefix`` (of the model's keys), ``layout``
        (``"foreign"``), ``config_source`` and, when any, ``ignored_keys`` ({key: why}).

    Raises
    ------
    CaptureError
        Unreadable or refused checkpoint, a model that cannot be built, or weights that do not fit
        (one line, with :func:`mismatch_cause`).
    """
    state, ck = read_state(path)
    model = build(spec, kwargs)
    expected = {k: v for k, v in model.state_dict().items() if isinstance(v, torch.Tensor)}
    prefix = find_prefix(state, set(expected))
    own = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    ignored = dict(ck["ignored"])
    if prefix:
        ignored.update({k: f"not under the model's prefix {prefix!r}" for k in state if not k.startswith(prefix)})
    missing = sorted(set(expected) - set(own))
    unexpected = sorted(set(own) - set(expected))
    shape = sorted(k for k in set(expected) & set(own) if tuple(expected[k].shape) != tuple(own[k].shape))
    if missing or unexpected or shape:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} key(s) e.g. {', '.join(missing[:2])}")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} key(s) e.g. {', '.join(unexpected[:2])}")
        if shape:
            k = shape[0]
            parts.append(
                f"{len(shape)} shape mismatch(es) e.g. {k} {tuple(own[k].shape)} vs {tuple(expected[k].shape)}"
            )
        metadata = next((v for v in ck["metadata"].values() if isinstance(v, dict)), None)
        cause = mismatch_cause(own, expected, spec=spec, kwargs=kwargs or {}, saved=metadata)
        raise CaptureError(
            f"checkpoint {str(path)!r} does not fit {spec}(**{json.dumps(kwargs or {})}) "
            f"(prefix {prefix!r}): {'; '.join(parts)}; likely cause: {cause}"
        )
    model.load_state_dict(own, strict=True)
    info = {
        "checkpoint": str(path),
        "checkpoint_kind": ck["kind"],
        "layout": "foreign",
        "prefix": prefix,
        "config_source": "--model and --model-kwargs",
    }
    info.update({k: ck[k] for k in ("epoch", "global_step") if k in ck})
    if ignored:
        info["ignored_keys"] = ignored
    return model.eval(), info


def _plain(value):
    """A JSON-comparable form of a setting (tuples as lists); None for what is not plain data."""
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    if isinstance(value, (list, tuple)) and all(isinstance(v, (bool, int, float, str)) for v in value):
        return list(value)
    return _OPAQUE


def mismatch_cause(state: dict, expected: dict, *, spec: str, kwargs: dict, saved: dict | None = None) -> str:
    """Name the closest real cause of a checkpoint that does not fit the built model.

    Checked in order: a setting saved with the weights (``saved``, e.g. neuraloperator's
    ``_metadata``) that differs from ``kwargs`` or from the callable's default; a keyword whose value
    is the size that differs in the first mismatched tensor; a keyword whose value is the number of
    repeated blocks that differs; else the keys.
    """
    if saved:
        defaults = {}
        try:
            defaults = {
                n: p.default
                for n, p in inspect.signature(resolve_callable(spec)).parameters.items()
                if p.default is not p.empty
            }
        except (TypeError, ValueError, CaptureError):
            pass
        for name, value in saved.items():
            if name.startswith("_") or _plain(value) is _OPAQUE:
                continue
            if name in kwargs:
                given, source = kwargs[name], "--model-kwargs gives"
            elif name in defaults:
                given, source = defaults[name], "the default is"
            else:
                continue
            if _plain(given) != _plain(value):
                return (
                    f"{name}: the checkpoint was saved with {json.dumps(_plain(value))} (its settings), "
                    f"{source} {json.dumps(_plain(given))}; pass {json.dumps({name: _plain(value)})} in --model-kwargs"
                )
    for key in sorted(set(state) & set(expected)):
        got, want = tuple(state[key].shape), tuple(expected[key].shape)
        if got == want:
            continue
        if len(got) == len(want):
            for a, b in zip(got, want):
                if a != b:
                    names = [k for k, v in kwargs.items() if _holds(v, b)]
                    if names:
                        return (
                            f"{names[0]} (the model has {b} where the checkpoint has {a} in {key} {got} vs {want}); "
                            f"pass {names[0]} to fit {a}"
                        )
        return f"sizes ({key} is {got} in the checkpoint, {want} in the model); check --model-kwargs"
    counts_s, counts_e = _repeats(state), _repeats(expected)
    for pattern in sorted(set(counts_s) | set(counts_e)):
        a, b = counts_s.get(pattern, 0), counts_e.get(pattern, 0)
        if a != b:
            names = [k for k, v in kwargs.items() if v == b and isinstance(v, int) and not isinstance(v, bool)]
            how = f"; pass {names[0]} {a}" if names else "; check --model-kwargs"
            return f"depth (the checkpoint has {a} of {pattern}, the model {b}){how}"
    return "a different model: check --model and --model-kwargs against the code that saved the checkpoint"


def _holds(value, size: int) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return value == size
    return isinstance(value, (list, tuple)) and any(_holds(v, size) for v in value)


def _repeats(keys) -> dict[str, int]:
    """``{pattern with '#' for the first index: number of distinct indices}`` of numbered submodules."""
    found: dict[str, set] = {}
    for key in keys:
        m = re.match(r"(.*?)\.(\d+)\.", key)
        if m:
            found.setdefault(f"{m.group(1)}.#", set()).add(m.group(2))
    return {k: len(v) for k, v in found.items()}


def read_model_inputs(path: str | Path) -> np.ndarray:
    """The model inputs of ``--input`` for ``--model``: channel-first ``(n, C, *S)`` samples, as they are.

    ``.npy``; ``.npz`` (its ``x`` / ``input`` / ``inputs`` / ``diffraction`` array, else its only
    one); ``.pt`` / ``.pth`` (a tensor, or a dict with one of those keys; read weights-only).

    Returns
    -------
    (N_SAMPLE, C, S...) float32 or complex64 (S: any spatial shape)
    """
    p = Path(path)
    if not p.is_file():
        raise CaptureError(f"--input {str(p)!r} does not exist")
    try:
        if p.suffix in (".pt", ".pth"):
            obj = load_weights_only(p)
            if isinstance(obj, dict):
                obj = next((obj[k] for k in INPUT_KEYS if k in obj), obj)
            if not isinstance(obj, torch.Tensor):
                raise CaptureError(f"--input {str(p)!r} holds no tensor (nor one under {', '.join(INPUT_KEYS)})")
            x = obj.numpy()
        elif p.suffix == ".npy":
            x = np.load(p, allow_pickle=False)
        else:
            with np.load(p, allow_pickle=False) as f:
                key = next((k for k in INPUT_KEYS if k in f.files), f.files[0] if len(f.files) == 1 else None)
                if key is None:
                    raise CaptureError(
                        f"--input {str(p)!r} holds {', '.join(f.files) or 'no arrays'}; "
                        "name the input x (or pass one array)"
                    )
                x = f[key]
    except CaptureError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise CaptureError(
            f"--input {str(p)!r} is not a readable .npy / .npz / .pt file ({_first_line(exc)})"
        ) from None
    x = np.asarray(x)
    if x.ndim < 2:
        raise CaptureError(f"--input must be (n, C, ...) samples, channel first; got shape {x.shape}")
    return np.ascontiguousarray(x, dtype=np.complex64 if np.iscomplexobj(x) else np.float32)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
