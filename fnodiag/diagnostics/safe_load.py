"""Read a checkpoint file without running anything it carries: weights-only unpickling and its allowlist.

Every checkpoint fnodiag opens (``fnodiag capture``, ``export-checkpoint``, ``import``, the dashboard)
is read here by :func:`load_weights_only`:

1. :func:`check_archive` refuses a zip archive whose records declare more bytes than the file can
   hold (a decompression bomb), before anything is inflated;
2. the pickle is scanned without running it (:func:`torch.serialization.get_unsafe_globals_in_checkpoint`)
   for the globals (functions, classes) it names beyond torch's own weights-only allowlist;
3. it is loaded with ``torch.load(weights_only=True)`` inside a
   :class:`torch.serialization.safe_globals` context that resolves each of those names to:

   * the function itself, when it is one of :data:`SAFE_TORCH_FUNCTIONS`: the allowlist, plain torch
     activation functions (pure tensor maths, no file, process or import side effect), the kind a
     model stores with its settings (neuraloperator keeps ``non_linearity=F.gelu``, pickled as
     ``torch._C._nn.gelu``, in its state dict's ``_metadata``);
   * otherwise an inert :class:`Unloaded` marker naming it: the module is never imported and the
     object never reached. A name kept only as a value (neuraloperator's ``conv_module=SpectralConv``
     in the same ``_metadata``) loads as the marker; a pickle that *calls* or instantiates one (how
     a hostile pickle runs ``os.system`` or ``builtins.exec``) is refused at that instruction
     (:class:`RefusedCall`), and nothing of it was executed.

Torch itself refuses names from ``os``, ``sys``, ``posix`` and ``nt`` outright. A legacy (non-zip)
torch file cannot be scanned: it loads when it names nothing beyond torch's allowlist.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import torch
import torch.nn.functional as F

from fnodiag.config import ConfigError
from fnodiag.files import no_file


class CaptureError(ConfigError):
    """A checkpoint or input that cannot be captured; the message names the problem and the fix."""


#: The torch functions a checkpoint may name and get as themselves: elementwise activations only, by
#: the name pickle gives them (``torch._C._nn.gelu``, ``torch.nn.functional.relu``, ...). Calling one (all
#: a pickle can do with it) computes on tensors and touches nothing else. (``torch.tanh`` and the like
#: pickle through ``getattr``, a call that stays refused.)
SAFE_TORCH_FUNCTIONS = (
    F.gelu,
    F.relu,
    F.relu6,
    F.silu,
    F.elu,
    F.selu,
    F.celu,
    F.leaky_relu,
    F.softplus,
    F.mish,
    F.hardswish,
    F.hardtanh,
    F.tanh,
    F.sigmoid,
)

# torch.save stores every record of its zip archive uncompressed, so the records of a real checkpoint
# add up to about the file's size; a file whose records declare more was compressed by someone else
# (a decompression bomb: a few MB inflating to GBs). Checked before anything is inflated.
MAX_INFLATION = 2.0
ARCHIVE_SLACK = 1 << 20  # bytes: zip headers and a small re-zipped file stay accepted


def pickle_name(obj) -> str:
    """The name under which pickle refers to a function: ``"<module>.<qualname>"`` (e.g. ``torch._C._nn.gelu``)."""
    return f"{obj.__module__}.{obj.__qualname__}"


def safe_names() -> dict[str, object]:
    """``{pickle name: function}`` of :data:`SAFE_TORCH_FUNCTIONS`."""
    return {pickle_name(f): f for f in SAFE_TORCH_FUNCTIONS}


class RefusedCall(Exception):
    """A pickle tried to call or instantiate a global that is not allowed (nothing was run)."""

    def __init__(self, path: str):
        super().__init__(path)
        self.path = path


class Unloaded:
    """What a checkpoint's reference to a global that is not allowed loads as: its name, nothing else.

    The named module is not imported and the object not reached; calling the marker, or
    instantiating it (the unpickler's ``NEWOBJ``), raises :class:`RefusedCall`.

    Attributes
    ----------
    path : str
        The global's name in the pickle, e.g. ``"neuralop.layers.spectral_convolution.SpectralConv"``.
    """

    __slots__ = ("path",)

    def __new__(cls, *args):
        if not isinstance(cls, type):  # NEWOBJ on a marker: the pickle instantiates the named class
            raise RefusedCall(cls.path)
        return super().__new__(cls)

    def __init__(self, path: str):
        self.path = path

    def __call__(self, *args, **kwargs):
        raise RefusedCall(self.path)

    def __repr__(self) -> str:
        return f"<not loaded: {self.path}>"


def check_archive(p: Path) -> None:
    """Refuse a checkpoint archive whose records would inflate beyond its size, before loading it.

    Raises
    ------
    CaptureError
        One line with the declared and the real size (nothing was inflated).
    """
    if not zipfile.is_zipfile(p):
        return  # a legacy (non-zip) torch file: pickled data read as it is, nothing to inflate
    size = p.stat().st_size
    try:
        with zipfile.ZipFile(p) as archive:
            declared = sum(info.file_size for info in archive.infolist())
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise CaptureError(f"{str(p)!r} is not a readable PyTorch checkpoint ({exc}); it may be truncated") from None
    if declared > MAX_INFLATION * size + ARCHIVE_SLACK:
        raise CaptureError(
            f"refused {str(p)!r}: its records declare {declared:,} bytes in a {size:,}-byte file (compressed "
            "records, which torch.save never writes); it was not inflated. Pass a checkpoint saved by torch.save"
        )


def named_globals(p: Path) -> list[str]:
    """Globals the pickle of ``p`` names beyond torch's weights-only allowlist, found without running it.

    Returns
    -------
    list of str
        Sorted names (``"module.qualname"``); empty for a legacy (non-zip) file or one that cannot be scanned.
    """
    if not zipfile.is_zipfile(p):
        return []
    try:
        return sorted(torch.serialization.get_unsafe_globals_in_checkpoint(str(p)))
    except Exception:  # not a torch.save archive, or an opcode the scan does not know: torch.load will say
        return []


def allowlist(names: list[str]) -> list[tuple[object, str]]:
    """The ``safe_globals`` entries for ``names``: allowed torch functions as themselves, the rest as markers."""
    safe = safe_names()
    return [(safe.get(name) or Unloaded(name), name) for name in names]


def load_weights_only(p: str | Path):
    """Unpickle a checkpoint file with nothing of it executed (see the module notes).

    Returns
    -------
    object
        What ``torch.save`` stored (tensors on the CPU); a global that is not allowed is an :class:`Unloaded`.

    Raises
    ------
    CaptureError
        Missing, empty, truncated or foreign file, an inflating archive, or a pickle that calls
        anything beyond tensors and the allowlist (one line; nothing was executed).
    """
    p = Path(p)
    if not p.is_file():
        raise CaptureError(no_file(p, "checkpoint"))
    if p.stat().st_size == 0:
        raise CaptureError(f"checkpoint {str(p)!r} is empty (0 bytes); pass a saved .ckpt or model.pt")
    check_archive(p)
    names = named_globals(p)
    refused = (
        f"refused {str(p)!r}: it carries Python objects that weights-only loading does not allow "
        "({what}), and it was not executed; pass a checkpoint of tensors"
    )
    try:
        with torch.serialization.safe_globals(allowlist(names)):
            return torch.load(p, map_location="cpu", weights_only=True)
    except RefusedCall as exc:
        raise CaptureError(refused.format(what=f"its pickle calls {exc.path}")) from None
    except pickle.UnpicklingError as exc:
        if "global" in str(exc).lower():  # a name torch blocks outright (os, sys, ...) or a legacy file's
            unsafe = [n for n in names if n not in safe_names()]
            what = f"it names {', '.join(unsafe[:3])}" if unsafe else "a class or function reference"
            raise CaptureError(refused.format(what=what)) from None
        raise CaptureError(
            f"{str(p)!r} is not a readable PyTorch checkpoint (bad pickle data); "
            "it may be truncated or another kind of file"
        ) from None
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError, TypeError, AttributeError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CaptureError(f"{str(p)!r} is not a readable PyTorch checkpoint ({reason}); it may be truncated") from None
