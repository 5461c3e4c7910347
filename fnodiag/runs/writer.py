"""The run-folder writer: one for every run fnodiag records (its own training, ``LiveCapture``, ``watch``).

:class:`RunWriter` is Lightning-free; thin adapters drive it (:class:`fnodiag.training.recorder.RunRecorder`
for fnodiag's own runs, :class:`fnodiag.LiveCapture` for any LightningModule, :func:`fnodiag.watch`
for any loop). It owns, in a run folder of the DESIGN.md contract:

* the claim: a foreign run (someone else's model) needs a folder that holds no training record
  (:meth:`fnodiag.runs.RunDir.training_record`), checked before anything is written; ``config.json``
  is then ``{"kind": "lightning" | "torch", "module": ..., ...}`` (:meth:`RunDir.read_origin`);
* ``effective_config.json`` (what the adapter read from the live objects, plus library versions);
* per-step scalars (names of :mod:`fnodiag.runs.names`, or any a user logs), buffered as device
  tensors (see *Flushes* below), ``grad/clipped`` derived from the two gradient norms;
* per epoch: ``history.json`` and ``epoch/<key>`` scalars;
* ``status.json``: ``running`` with a heartbeat (:class:`~fnodiag.runs.Heartbeat`), then the final
  state by the one rule :func:`fnodiag.runs.states.final_state` (finished / diverged / failed /
  interrupted; ``KeyboardInterrupt`` is interrupted); a capture error is noted in every later status
  message and in ``effective_config.json`` ``capture.error``.

Flushes (no host synchronisation between them): :meth:`RunWriter.log` keeps tensors as they are
(device tensors, never read); :meth:`RunWriter.flush` stacks every buffered tensor and brings them
to the host in ONE transfer (``.tolist()``), hands the rows to the store and commits it. A flush
happens every ``flush_every`` steps (:data:`FLUSH_EVERY` = 50 by default), at every capture (the
capture core passes its own statistics so both travel in the capture's one transfer), at every
epoch end and at the end of the run. Crash window: a process killed without reaching
:meth:`RunWriter.finish` (``kill -9``, out of memory) loses the steps buffered since the last flush
(at most ``flush_every - 1`` steps; fewer when a capture or an epoch end came in between); every
flushed row is committed.

Divergence: a flush that finds a non-finite ``train/loss`` records the first such step
(:attr:`RunWriter.diverged`) and the run ends ``diverged``. With ``stop_at_divergence`` (fnodiag's
own runs) nothing from that step on is written and ``on_diverged`` is called so the adapter can stop
training; the other steps of that flush window have already run (see the adapter for the bound).

This module imports torch, so :mod:`fnodiag.runs` does not import it (the dashboard reads runs
without torch): ``from fnodiag.runs.writer import RunWriter``.
"""

from __future__ import annotations

import math
import platform
import time
from collections.abc import Callable, Mapping
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np
import torch

from fnodiag.runs import states
from fnodiag.runs.liveness import Heartbeat
from fnodiag.runs.names import GRAD_CLIPPED, GRAD_NORM_POST, GRAD_NORM_PRE, TRAIN_LOSS
from fnodiag.runs.names import epoch as epoch_name
from fnodiag.runs.rundir import FOREIGN_KINDS, RunDir
from fnodiag.runs.store import RunStore

FLUSH_EVERY = 50  # steps between flushes when nothing else flushes (the crash window)
STATUS_EVERY_S = 2.0  # a step rewrites the running status at most this often (the heartbeat fills the gaps)
_SCALARS = "writer:scalars"  # the buffered scalars' key in a transfer shared with a capture


def versions() -> dict:
    """Versions of the libraries that decide what trains (read from package metadata: nothing is imported)."""

    def installed(name: str) -> str | None:
        try:
            return version(name)
        except PackageNotFoundError:
            return None

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "lightning": installed("lightning"),
        "numpy": np.__version__,
        "fnodiag": installed("fnodiag"),
    }


def clipped(pre: float, post: float) -> float:
    """``grad/clipped``: 1.0 when clipping shrank the global gradient norm (``post < pre``), else 0.0."""
    return float(post < pre * (1 - 1e-6))


class RunWriter:
    """Writes one run's records (see the module docstring); every method is a no-op when disabled.

    Parameters
    ----------
    run : RunDir or None
        The run folder; None writes only to ``store`` (layer statistics of a run whose folder
        another writer owns).
    store : RunStore, optional
        An open store (fnodiag's own runs); otherwise :meth:`open` opens the folder's own.
    history : dict, optional
        Per-epoch series to continue (a resumed run).
    history_keys : sequence of str
        The series of ``history.json``.
    flush_every : int
        Steps buffered before a flush (>= 1).
    stop_at_divergence : bool
        Write nothing from the first non-finite ``train/loss`` on, and call ``on_diverged``.
    enabled : bool
        False (DDP ranks > 0) makes the writer write nothing.
    """

    def __init__(
        self,
        run: RunDir | None,
        *,
        store: RunStore | None = None,
        history: Mapping[str, list] | None = None,
        history_keys=(),
        flush_every: int = FLUSH_EVERY,
        stop_at_divergence: bool = False,
        enabled: bool = True,
    ):
        if isinstance(flush_every, bool) or int(flush_every) < 1:
            raise ValueError(f"flush_every must be an integer >= 1 step, got {flush_every!r}")
        self.run, self.store, self.enabled = run, store, bool(enabled)
        self.flush_every, self.stop_at_divergence = int(flush_every), bool(stop_at_divergence)
        self.history: dict[str, list] = {k: list((history or {}).get(k, [])) for k in history_keys}
        self.origin: dict | None = None
        self.diverged: dict | None = None
        self.on_diverged: Callable[[dict], None] | None = None
        self.capture_error: str | None = None
        self._owns_store = False
        self._rows: dict[int, list] = {}  # step -> [epoch, {name: tensor or float}], in step order
        self._epoch_values: dict[str, list[float]] = {}
        self._last_status = 0.0
        self._where = (0, 0)  # (step, epoch) last logged: where a capture error is filed
        self._finished = False
        self.heartbeat = Heartbeat(self._write_running)

    # -- claim, open, start -----------------------------------------------------------------
    @classmethod
    def claim(cls, path, origin: Mapping, **kwargs) -> RunWriter:
        """A writer for a foreign run in ``path``, checked before anything is written.

        Parameters
        ----------
        path : str, Path or RunDir
            The run folder: absent, empty, or holding no training record (then its run files are
            replaced when :meth:`open` runs).
        origin : dict
            ``config.json``: ``{"kind": "lightning" | "torch", "module": "pkg.Class", ...}``.
        **kwargs
            As for :class:`RunWriter`.

        Raises
        ------
        FileExistsError
            The folder holds a training record or files that are not run files (nothing is touched).
        """
        run = path if isinstance(path, RunDir) else RunDir(Path(path))
        if origin.get("kind") not in FOREIGN_KINDS:
            raise ValueError(f"origin kind {origin.get('kind')!r} is not one of {', '.join(FOREIGN_KINDS)}")
        writer = cls(run, **kwargs)
        writer.origin = dict(origin)
        if writer.enabled:
            reason = run.training_record()
            if reason is not None:
                raise FileExistsError(f"{reason}; choose a new folder for this run")
        return writer

    def open(self) -> RunStore | None:
        """Create the claimed folder, write ``config.json`` and open its store (any frame channel names)."""
        if not self.enabled or self.store is not None:
            return self.store
        self.run.clear_unused()
        self.run.path.mkdir(parents=True, exist_ok=True)
        self.run.write_json("config.json", self.origin)
        self.store = self.run.open_store(frame_channels=None)
        self._owns_store = True
        return self.store

    def start(self, effective: Mapping, *, step: int = 0, epoch: int = 0) -> None:
        """Write ``effective_config.json`` (``effective`` plus library versions) and the running status."""
        if not self.enabled or self.run is None:
            return
        self.run.write_json("effective_config.json", {**effective, "versions": versions()})
        self.heartbeat.beat(step=step, epoch=epoch, message="training started")

    # -- per step ---------------------------------------------------------------------------
    def log(self, step: int, epoch: int, values: Mapping[str, torch.Tensor | float]) -> None:
        """Buffer one step's scalars (merged with what that step already logged); reads no tensor.

        Parameters
        ----------
        step, epoch : int
        values : dict of str to () tensor or float
            Tensors stay where they are until the next flush; each must hold one real value.
        """
        if not self.enabled or (self.diverged is not None and self.stop_at_divergence):
            return
        for name, value in values.items():
            if isinstance(value, torch.Tensor) and (value.numel() != 1 or value.is_complex()):
                raise ValueError(
                    f"scalar {name!r} must hold one real value, got a {tuple(value.shape)} {value.dtype} tensor; "
                    "log a reduction of it (e.g. .mean() or .abs())"
                )
        row = self._rows.get(step)
        if row is None:
            row = self._rows[step] = [epoch, {}]
        row[1].update(values)
        self._where = (step, epoch)
        now = time.monotonic()
        if self.run is not None and now - self._last_status > STATUS_EVERY_S:
            self._last_status = now
            self.heartbeat.beat(step=step, epoch=epoch, message="")

    def due(self) -> bool:
        """True when ``flush_every`` steps are buffered."""
        return len(self._rows) >= self.flush_every

    def accepts(self, step: int) -> bool:
        """Whether records of ``step`` are still written (False from a stopping divergence on)."""
        return self.enabled and not (self.stop_at_divergence and self.diverged and step >= self.diverged["step"])

    def flush(self, extra: Mapping[str, torch.Tensor] | None = None, *, transfer=None, commit: bool = True) -> dict:
        """Bring the buffered scalars (and ``extra``) to the host in one transfer and write them.

        Parameters
        ----------
        extra : dict of str to Tensor, optional
            More device tensors to bring in the same transfer (a capture's statistics).
        transfer : callable, optional
            ``transfer(named) -> {key: numpy array}`` doing one transfer for tensors of any shape
            (:func:`fnodiag.diagnostics.stats.to_host`); required with ``extra``. Without it the
            buffered scalars travel as one stacked tensor and one ``.tolist()``.
        commit : bool
            Commit the store (False: the caller adds rows and calls :meth:`commit` itself).

        Returns
        -------
        dict
            The host copies of ``extra``.
        """
        keys, tensors = [], []
        for step, (_, values) in self._rows.items():
            for name, value in values.items():
                if isinstance(value, torch.Tensor):
                    keys.append((step, name))
                    tensors.append(value)
        named = dict(extra or {})
        if tensors:
            named[_SCALARS] = _stack(tensors)
        if transfer is None:
            if extra:
                raise ValueError("RunWriter.flush: pass transfer= to bring extra tensors to the host")
            host = {_SCALARS: named[_SCALARS].tolist()} if tensors else {}  # the one transfer of this flush
        else:
            host = transfer(named) if named else {}
        rows, self._rows = self._rows, {}  # taken only once the transfer worked: a failed one loses nothing
        if self.enabled and rows:
            got = dict(zip(keys, np.asarray(host.get(_SCALARS, []), dtype=float).reshape(-1).tolist()))
            self._write_rows(rows, got)
        if commit:
            self.commit()  # every flushed row is committed: the crash window is the unflushed buffer
        return {k: host[k] for k in (extra or {})}

    def _write_rows(self, rows: dict, got: dict) -> None:
        for step, (epoch, values) in rows.items():
            if not self.accepts(step):
                break
            row = {name: got[(step, name)] if (step, name) in got else float(value) for name, value in values.items()}
            if GRAD_NORM_PRE in row and GRAD_NORM_POST in row and GRAD_CLIPPED not in row:
                row[GRAD_CLIPPED] = clipped(row[GRAD_NORM_PRE], row[GRAD_NORM_POST])
            loss = row.get(TRAIN_LOSS)
            if self.diverged is None and loss is not None and not math.isfinite(loss):
                self.diverged = {"step": int(step), "epoch": int(epoch), "loss": loss}
                if self.on_diverged is not None:
                    self.on_diverged(self.diverged)
                if self.stop_at_divergence:
                    break
            if self.store is not None:
                self.store.log_scalars(step, epoch, row)
            for name, value in row.items():
                self._epoch_values.setdefault(name, []).append(value)

    def commit(self) -> None:
        """Commit what was handed to the store since the last flush (a capture's layer rows)."""
        if self.enabled and self.store is not None:
            self.store.flush()

    def epoch_values(self, name: str) -> list[float]:
        """Host values of per-step scalar ``name`` flushed since the last :meth:`end_epoch`."""
        return list(self._epoch_values.get(name, []))

    # -- captures ---------------------------------------------------------------------------
    def log_layers(self, step: int, epoch: int, source: str, values: Mapping[tuple[str, str], float]) -> None:
        """Per-layer statistics of a capture (:meth:`fnodiag.runs.RunStore.log_layer_stats`)."""
        if self.accepts(step) and self.store is not None:
            self.store.log_layer_stats(step, epoch, source, values)

    def log_frame(self, step: int, epoch: int, channels: Mapping[str, np.ndarray], *, role: str = "pred") -> None:
        """Live images of a capture (:meth:`fnodiag.runs.RunStore.log_frame`)."""
        if self.accepts(step) and self.store is not None:
            self.store.log_frame(step, epoch, channels, role=role)

    def update_effective(self, section: str, values: Mapping) -> None:
        """Merge ``values`` into ``effective_config.json[section]`` (a setting known only once training ran)."""
        if not self.enabled or self.run is None:
            return
        effective = self.run.read_json("effective_config.json", default={}) or {}
        current = effective.get(section) if isinstance(effective.get(section), dict) else {}
        effective[section] = {**current, **values}
        self.run.write_json("effective_config.json", effective)

    def note_capture_error(self, message: str, *, step: int) -> None:
        """Record why capture stopped: ``effective_config.json`` ``capture.error`` and every later status message."""
        self.capture_error = f"capture disabled at step {step}: {message}"
        if not self.enabled or self.run is None:
            return
        self.update_effective("capture", {"error": message, "disabled_at_step": int(step)})
        self.heartbeat.beat(step=step, epoch=self._where[1], message="")

    def _write_running(self, *, step: int, epoch: int, message: str = "") -> None:
        note = self.capture_error or ""
        self.run.write_status("running", step=step, epoch=epoch, message="; ".join(m for m in (message, note) if m))

    # -- epochs and end ---------------------------------------------------------------------
    def end_epoch(
        self,
        step: int,
        epoch: int,
        values: Mapping[str, float],
        *,
        scalars: Mapping[str, float] | None = None,
        message="",
    ) -> None:
        """Flush, append ``values`` to the history, write ``epoch/<key>`` scalars and ``history.json``.

        Parameters
        ----------
        step : int
            Step the epoch scalars are filed under (its last optimizer step).
        epoch : int
            The epoch that ended (0-based).
        values : dict of str to float
            This epoch's history values (keys outside ``history_keys`` become epoch scalars only).
        scalars : dict of str to float, optional
            More epoch scalars (``epoch/<name>``) that are not history series.
        message : str
            The running status message.
        """
        if not self.enabled:
            return
        self.flush()
        self._epoch_values = {}
        for key in self.history:
            self.history[key].append(float(values.get(key, math.nan)))
        epoch_scalars = {epoch_name(k): float(v) for k, v in {**(scalars or {}), **values}.items()}
        if self.store is not None:
            self.store.log_scalars(step, epoch, epoch_scalars, scope="epoch")
            self.store.flush()
        if self.run is not None:
            self.run.write_history(self.history)
            self.heartbeat.beat(step=step + 1, epoch=epoch + 1, message=message)

    def finish(
        self,
        state: str | None = None,
        *,
        step: int,
        epoch: int,
        exception: BaseException | None = None,
        message: str | None = None,
    ) -> dict | None:
        """Flush and write the final status (once); returns it.

        Parameters
        ----------
        state : str, optional
            The final state; default :func:`~fnodiag.runs.states.final_state` of ``exception`` and
            :attr:`diverged`.
        step, epoch : int
            Where training ended (a diverged run is filed at its first non-finite step).
        exception : BaseException, optional
            What ended training, if it raised (its text becomes the message).
        message : str, optional
            The status message (default: says what happened).
        """
        self.heartbeat.stop()  # before the final state, so no heartbeat overwrites it
        if not self.enabled or self._finished:
            return None
        try:
            self.flush()
        except Exception:
            if exception is None:
                raise
            # training already failed: its own error is the one to record (the buffered steps are lost)
        self._finished = True
        if self.run is None:
            return None
        state = state or states.final_state(exception, diverged=self.diverged is not None)
        if state == states.DIVERGED and self.diverged is not None:
            step, epoch = self.diverged["step"], self.diverged["epoch"]
        if message is None:
            message = {
                states.FINISHED: "training finished",
                states.DIVERGED: f"non-finite training loss ({(self.diverged or {}).get('loss')}) at step {step}",
            }.get(state) or (f"{type(exception).__name__}: {exception}"[:500] if exception is not None else state)
        if self.capture_error:
            message = f"{message}; {self.capture_error}"
        self.commit()
        return self.run.write_status(state, step=step, epoch=epoch, message=message)

    def close(self) -> None:
        """Stop the heartbeat and close the store this writer opened (idempotent)."""
        self.heartbeat.stop()
        if self._owns_store and self.store is not None:
            self.store.close()
            self.store = None
            self._owns_store = False


def _stack(tensors: list[torch.Tensor]) -> torch.Tensor:
    """One ``(K,)`` tensor of buffered scalars on the first one's device (float64 when any is)."""
    device = tensors[0].device
    dtype = torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32
    return torch.stack([t.detach().reshape(()).to(device=device, dtype=dtype) for t in tensors])
