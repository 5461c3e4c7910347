"""``CheckpointMirror``: every checkpoint file the Trainer writes is handed on once it is complete.

A cluster worker trains in a scratch folder on its own disk; its checkpoints must reach the sweep's
storage location (:mod:`fnodiag.runs.storage`) so that a retry on another node can resume from them.
The callback wraps the strategy's checkpoint IO (whatever it is: Lightning's own, or one given as a
plugin) so that each ``save_checkpoint`` is followed by ``on_saved(path)``, on the rank that wrote
the file; loading and removing go to the wrapped IO unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from lightning.fabric.plugins import CheckpointIO
from lightning.pytorch.callbacks import Callback
from typing_extensions import override


class _Mirrored(CheckpointIO):
    """``inner``'s checkpoint IO, calling ``on_saved(path)`` after each completed save."""

    def __init__(self, inner: CheckpointIO, on_saved: Callable[[Path], None]):
        self.inner, self.on_saved = inner, on_saved

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        self.inner.save_checkpoint(checkpoint, path, storage_options=storage_options)
        self.on_saved(Path(path))

    def load_checkpoint(self, path, *args, **kwargs):  # the wrapped IO's own defaults (e.g. map_location)
        return self.inner.load_checkpoint(path, *args, **kwargs)

    def remove_checkpoint(self, path) -> None:
        self.inner.remove_checkpoint(path)

    def teardown(self) -> None:
        self.inner.teardown()


class CheckpointMirror(Callback):
    """Call ``on_saved(path)`` after every checkpoint file the Trainer writes (see the module docstring).

    Parameters
    ----------
    on_saved : callable
        ``on_saved(path)`` with the local path of the complete checkpoint file (``last.ckpt``,
        ``best.ckpt``); an exception it raises fails training, like a failed save.
    """

    def __init__(self, on_saved: Callable[[Path], None]):
        self.on_saved = on_saved

    @override
    def setup(self, trainer, pl_module, stage: str) -> None:
        io = trainer.strategy.checkpoint_io
        if not isinstance(io, _Mirrored):
            trainer.strategy.checkpoint_io = _Mirrored(io, self.on_saved)
