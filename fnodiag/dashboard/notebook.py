"""The dashboard inside a notebook: :func:`show` (``fnodiag.show``) and :func:`train_in_background`.

:func:`show` builds the same :class:`~fnodiag.dashboard.dashboard.Dashboard` that ``panel serve app``
serves (one store, the same views and tabs, the same live tick) and wraps it in a :class:`LiveDashboard`
that displays in JupyterLab, Jupyter Notebook 7 and VS Code (which needs ``jupyter_bokeh``, as Panel
says when it is missing).

How it stays live in a kernel. There is no Bokeh server: Panel runs a periodic callback in a Jupyter
kernel as an asyncio task on the kernel's own event loop (:meth:`panel.io.callbacks.PeriodicCallback.start`
takes that path when no server session is current). Every ``period_ms`` the task calls
:meth:`LiveDashboard.tick`: the dashboard's tick streams new store rows into its Bokeh figures, and
:func:`panel.io.notebook.push_notebook` sends those changes through the notebook's comm (Panel sends
its own widgets' changes itself, but a Bokeh model changed directly only when pushed). Widgets work
through the same comm. The event loop only turns while the kernel is idle, or while a cell *awaits*:

- a run in another process, or one trained in this kernel in a background thread
  (:func:`train_in_background`), updates the view while you keep working in other cells;
- a cell that trains synchronously (``trainer.fit(...)`` or a plain loop in the cell itself) blocks the
  kernel: nothing updates until the cell ends, then the view catches up in one batch;
- ``await training`` (a :class:`BackgroundTraining`) waits for a background run in a cell and lets the
  view update meanwhile; ``training.wait()`` waits too but blocks the updates.

The notebook extension is loaded by :func:`show` with Panel's resources inline (BokehJS and Panel's
JavaScript and CSS travel inside the notebook output), so nothing is fetched from a CDN. The view's root
is a :class:`~fnodiag.dashboard.kernel.KernelColumn`: the page's messages, which ipykernel 7 delivers on
a subshell thread, are applied on the kernel's main event loop (the tick's), and every tick leaves with
Panel's stylesheets inline (:mod:`fnodiag.dashboard.kernel` says why).
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import panel as pn
import param
from panel.io.notebook import block_comm, push_notebook
from panel.viewable import Viewer

from fnodiag.dashboard.catalog import RunEntry
from fnodiag.dashboard.dashboard import TICK_MS, Dashboard
from fnodiag.dashboard.kernel import KernelColumn, inline_stylesheets
from fnodiag.dashboard.launch import LaunchView
from fnodiag.dashboard.store import DashboardStore
from fnodiag.runs import RunDir

__all__ = ["BackgroundTraining", "LiveDashboard", "load_extension", "show", "train_in_background"]

EXTENSIONS = ("tabulator",)  # what the served app loads (session_page)
MAX_TICK_ERRORS = 20  # consecutive failed ticks after which the live updates stop (the error is shown)


def load_extension() -> None:
    """Load Panel's notebook extension once per kernel, with its resources inline (offline, no CDN).

    What :func:`show` does first; in one line: ``pn.extension("tabulator", inline=True)``.
    """
    if not pn.config.inline or any(e not in pn.extension._loaded_extensions for e in EXTENSIONS):
        pn.extension(*EXTENSIONS, inline=True, notifications=False)


def _run_paths(runs) -> tuple[Path, list[Path]]:
    """``(runs folder, run folders to select)`` from what :func:`show` was given."""
    items = list(runs) if isinstance(runs, (list, tuple, set)) else [runs]
    if not items:
        raise ValueError("fnodiag.show() needs a runs folder, a run folder or a list of run folders")
    paths = []
    for item in items:
        if isinstance(item, RunDir):
            paths.append(Path(item.path).expanduser().resolve())
        elif isinstance(item, (str, Path)):
            paths.append(Path(item).expanduser().resolve())
        else:
            raise TypeError(f"fnodiag.show() takes folders (str, Path or RunDir), not {type(item).__name__}")
    if len(paths) == 1 and not RunDir(paths[0]).config_path.is_file():
        return paths[0], []  # a runs folder (it may not exist yet: runs appear as they start)
    return Path(os.path.commonpath([str(p.parent) for p in paths])), paths


def select_runs(store: DashboardStore, paths: list[Path]) -> list[RunEntry]:
    """Select the runs at ``paths`` in ``store``: the sweep of the first one found, and the arms and seeds
    of those in it. Returns the entries found (runs that do not exist yet are skipped)."""
    want = {Path(p).resolve() for p in paths}
    found = [e for entries in store.catalog.sweeps.values() for e in entries if e.run.path.resolve() in want]
    if found:
        chosen = [e for e in found if e.sweep == found[0].sweep]
        store.sweep = found[0].sweep
        with param.parameterized.batch_call_watchers(store):
            store.arms = list(dict.fromkeys(e.arm for e in chosen))
            seeds = sorted({e.seed for e in chosen if e.seed is not None})
            if seeds and set(seeds) <= set(store.param.seeds.objects):
                store.seeds = seeds
    return found


class LiveDashboard(Viewer):
    """The dashboard as a notebook object: displays as the served page does, and ticks while displayed.

    Attributes
    ----------
    dashboard : Dashboard
        The served page's layout and tick (``dashboard.views``, ``dashboard.tabs``).
    store : DashboardStore
        The selection (``store.arms``, ``store.seeds``, ``store.act_stat``...): setting it from code
        does what the widgets do.
    callback : PeriodicCallback or None
        The live tick (None when no event loop runs, e.g. a plain script: call :meth:`tick` yourself).
    """

    def __init__(self, dashboard: Dashboard, *, select: list[Path] = (), period_ms: int = TICK_MS):
        super().__init__()
        self.dashboard = dashboard
        self.store = dashboard.store
        self._wanted = list(select)
        self._found = 0
        self.errors = 0
        self.error: str | None = None
        self._alert = pn.pane.Alert("", alert_type="danger", visible=False, sizing_mode="stretch_width")
        self._layout = KernelColumn(self._alert, dashboard.layout(), sizing_mode="stretch_width")
        self._shown = False
        self._select()
        self.callback = None
        self.period_ms = int(period_ms)

    def __panel__(self):
        return self._layout

    def _repr_mimebundle_(self, include=None, exclude=None):
        bundle = super()._repr_mimebundle_(include, exclude)
        self._inline()  # from the first render on: what is added later links no CDN file
        return bundle

    def _docs(self) -> list:
        """The documents of the displayed copies (Panel's records, ``state._views``)."""
        return [pn.state._views[ref][2] for ref in list(self._layout._models) if ref in pn.state._views]

    def _inline(self) -> None:
        for doc in self._docs():
            inline_stylesheets(doc)

    def _select(self) -> None:
        """Select the runs :func:`show` was given as they appear (once all are found, the choice is the user's)."""
        if not self._wanted:
            return
        want = {p.resolve() for p in self._wanted}
        found = sum(e.run.path.resolve() in want for entries in self.store.catalog.sweeps.values() for e in entries)
        if found > self._found:
            select_runs(self.store, self._wanted)
            self._found = found
        if self._found >= len(self._wanted):
            self._wanted = []

    def tick(self) -> int:
        """One live update: stream new rows into the open tab and push the changes to every displayed copy.

        Returns
        -------
        int, the points sent.
        """
        with block_comm():  # the tick's changes leave together, once their stylesheets are inline
            sent = self.dashboard.tick()
            self._select()
            self._inline()
        push_notebook(self._layout)
        return sent

    def _connected(self) -> bool:
        """A displayed copy's comm is open: a notebook page shows it now (Panel's records, ``state._views``)."""
        for ref in list(self._layout._models):
            comm = (pn.state._views.get(ref) or (None,) * 4)[3]
            if comm is not None and getattr(comm, "_comm", None) is not None:
                return True
        return False

    def _safe_tick(self) -> None:
        """The periodic callback: an error is shown above the dashboard (an asyncio task would end silently).

        In a notebook it ticks only while a page shows the dashboard: with no page (``nbval``, ``jupyter
        execute``) Panel would queue every change and retry its push forever; the first tick after a page
        connects catches up in one batch. Once every displayed copy is deleted (its cell cleared or run
        again) the tick stops. Served (``panel serve``), it always ticks.
        """
        doc = pn.state.curdoc
        if doc is None or doc.session_context is None:
            if self._layout._models:
                self._shown = True
            elif self._shown:
                self.stop()
                return
            if not self._connected():
                return
        try:
            self.tick()
            self.errors = 0
        except Exception as exc:  # a failed tick must not end the live updates (nor go unseen)
            self.errors += 1
            self.error = f"{type(exc).__name__}: {exc}".splitlines()[0]
            self._alert.param.update(object=f"fnodiag live update failed: {self.error}", visible=True)
            if self.errors >= MAX_TICK_ERRORS:
                self._alert.object += f" ({self.errors} times in a row: live updates stopped; `.start()` retries)"
                self.stop()
            push_notebook(self._layout)

    @property
    def running(self) -> bool:
        """The live tick is scheduled."""
        return self.callback is not None and self.callback.running

    def start(self) -> LiveDashboard:
        """Start (or restart) the live tick; returns self."""
        if not self.running:
            self.errors, self._shown = 0, False
            self.callback = pn.state.add_periodic_callback(self._safe_tick, period=self.period_ms)
        return self

    def stop(self) -> None:
        """Stop the live tick (the view stays as it is; :meth:`start` resumes it)."""
        if self.callback is not None:
            self.callback.stop()


def show(runs, *, tabs=None, read_only: bool = True, live: bool = True, period_ms: int = TICK_MS) -> LiveDashboard:
    """The dashboard's views in a notebook cell, live while runs train: ``fnodiag.show(folder)``.

    The same page as ``panel serve app --args --runs FOLDER --read-only`` (run picker, Overview,
    Activations, Gradients, Reconstructions, Compare, Checkpoint), built by the same code.

    Parameters
    ----------
    runs : str, Path, RunDir, or a list of them
        A runs folder (every run and sweep under it is offered; it may not exist yet, runs appear as
        they start), or one or more run folders: their runs folder is shown with them selected (a run
        that has not started yet is selected when it appears).
    tabs : str or sequence of str, optional
        Titles of the tabs to show (default all), e.g. ``tabs=["Overview", "Activations"]``.
    read_only : bool
        No Launch tab (default). ``False`` adds it: runs started there are separate processes.
    live : bool
        Start the live tick (every ``period_ms`` ms while the kernel is idle); :meth:`LiveDashboard.stop`
        stops it.

    Returns
    -------
    LiveDashboard, which displays as the last expression of a cell (or ``display(...)``).

    Raises
    ------
    ValueError
        An unknown tab title (the message lists them), or no folder given.
    """
    tabs = [tabs] if isinstance(tabs, str) else tabs
    if tabs is not None and not tabs:
        raise ValueError("fnodiag.show(tabs=[]) shows nothing: name one or more tabs, or leave tabs out for all")
    if read_only and tabs is not None and LaunchView.title in tabs:
        raise ValueError("fnodiag.show(tabs=[..., 'Launch']) needs read_only=False (the Launch tab starts runs)")
    load_extension()
    root, selected = _run_paths(runs)
    dashboard = Dashboard(root, read_only=read_only, tabs=tabs)
    view = LiveDashboard(dashboard, select=selected, period_ms=period_ms)
    return view.start() if live else view


class BackgroundTraining:
    """A training running in a daemon thread of this process (:func:`train_in_background`).

    ``await training`` in a cell waits for it while the live views keep updating; :meth:`wait` waits
    and blocks them. An exception in the training is kept in ``error`` (one line is printed) and raised
    again by :meth:`wait` / ``await``.
    """

    def __init__(self, target: Callable, args: tuple, kwargs: dict, name: str):
        self.target, self.name = target, name
        self.result = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(args, kwargs), name=name, daemon=True)

    def _run(self, args, kwargs) -> None:
        try:
            self.result = self.target(*args, **kwargs)
        except BaseException as exc:  # kept for wait(); the thread itself has no one to raise to
            self.error = exc
            print(f"fnodiag: background training {self.name!r} failed: {type(exc).__name__}: {exc}", file=sys.stderr)

    @property
    def running(self) -> bool:
        return self.thread.is_alive()

    def wait(self, timeout: float | None = None):
        """Block until the training ends; returns what the target returned (raises its exception).

        Raises
        ------
        TimeoutError
            Still training after ``timeout`` seconds.
        """
        self.thread.join(timeout)
        if self.thread.is_alive():
            raise TimeoutError(f"background training {self.name!r} still running after {timeout} s")
        if self.error is not None:
            raise self.error
        return self.result

    async def finished(self, poll_s: float = 0.2):
        """Wait without blocking the kernel's event loop (the live views update meanwhile); ``await training``."""
        while self.thread.is_alive():
            await asyncio.sleep(poll_s)
        return self.wait()

    def __await__(self):
        return self.finished().__await__()

    def __repr__(self) -> str:
        state = "running" if self.running else ("failed" if self.error is not None else "finished")
        return f"<BackgroundTraining {self.name!r} {state}>"


def train_in_background(target: Callable, *args, name: str | None = None, **kwargs) -> BackgroundTraining:
    """Run ``target(*args, **kwargs)`` (a training: ``trainer.fit(...)`` with ``fnodiag.LiveCapture``, a
    plain loop, :func:`fnodiag.training.run.train`) in a daemon thread, so that the kernel stays free and
    :func:`show` updates while it trains. Also ``fnodiag.show.train_in_background``.

    Parameters
    ----------
    target : callable
        The training; it writes its run folder as it would in the foreground.
    name : str, optional
        The thread's name (default ``fnodiag-<target name>``).

    Returns
    -------
    BackgroundTraining, already started.
    """
    handle = BackgroundTraining(target, args, kwargs, name or f"fnodiag-{getattr(target, '__name__', 'training')}")
    handle.thread.start()
    return handle


show.train_in_background = train_in_background
