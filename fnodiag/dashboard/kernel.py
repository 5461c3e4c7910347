"""A Panel view in a Jupyter kernel: one thread changes its document, and its stylesheets travel inline.

:func:`fnodiag.show` displays the dashboard through Panel's notebook comms, without a Bokeh server. Two
things Panel 1.9 leaves undone there (read in its source: ``panel/viewable.py``, ``panel/reactive.py``,
``panel/models/comm_manager.ts``), which this module does for the views :func:`fnodiag.show` builds:

- **One thread.** With ipykernel 7 and JupyterLab 4.6 the messages a page sends back (a widget change,
  a tab opened, the page's layout) are handled on a *subshell* thread, while the live tick and the
  cells run on the kernel's main thread. Panel applies a message to the document and sends the
  resulting changes from whichever thread handles it, and a Bokeh message leaves as several comm
  messages (header, metadata, content, then each binary buffer): two threads sending at once
  interleave them, and the page's Bokeh receiver fails ("Expected binary fragment but received text
  fragment"). :class:`KernelColumn` (the root of the displayed view) hands every such message to the
  main thread's event loop, so that every change of the document and every send happen there.
- **No echo.** The page's comm manager sends back the changes it received from the kernel (it does not
  skip them as Bokeh's own client does): Panel would append each streamed batch to the kernel's
  ``ColumnDataSource`` a second time (Bokeh then warns that its columns differ in length), and set
  children and stylesheets back to models it already has (Bokeh warns "reference already known"), or
  to an older list than the one it sent since. :class:`KernelColumn` drops the streamed columns a
  page sends and its changes that carry models (:func:`echoed`; in this dashboard the page adds no
  points and creates no models).
- **Stylesheets inline.** ``pn.extension(inline=True)`` inlines the stylesheets of the first render
  only; a component added later (a view redrawn for other runs) links Panel's stylesheets from its
  CDN, which an offline machine cannot load. :func:`inline_stylesheets` points every stylesheet of
  Panel's own files in the view's document at the file's content (a ``data:`` URL), now and for the
  components added later (Panel's per-document stylesheet cache, ``state._stylesheets``).
"""

from __future__ import annotations

import asyncio
import base64
import threading
from functools import cache
from pathlib import Path

import panel as pn
from bokeh.models import ImportedStyleSheet
from panel.io.notebook import push_on_root
from panel.io.resources import CDN_DIST, DIST_DIR, LOCAL_DIST

__all__ = ["InlineSheets", "KernelColumn", "data_url", "dist_file", "echoed", "inline_stylesheets"]

MAX_ERRORS = 20  # failed page messages a view keeps (KernelColumn.message_errors)


def dist_file(url: str) -> Path | None:
    """The file in Panel's ``dist`` folder that ``url`` (its CDN or its server path) names, or None."""
    for prefix in (CDN_DIST, LOCAL_DIST):
        if isinstance(url, str) and url.startswith(prefix):
            path = DIST_DIR / url[len(prefix) :].split("?")[0]
            return path if path.is_file() else None
    return None


@cache
def data_url(path: Path) -> str:
    """A stylesheet's content as a ``data:`` URL (read once per process)."""
    return "data:text/css;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


class InlineSheets(dict):
    """Panel's stylesheet cache of one document (``{url: ImportedStyleSheet}``) that answers a URL of
    Panel's own files with a stylesheet of their content: components added later get no CDN link."""

    def __contains__(self, url) -> bool:
        if not dict.__contains__(self, url) and (path := dist_file(url)) is not None:
            self[url] = ImportedStyleSheet(url=data_url(path))
        return dict.__contains__(self, url)


def inline_stylesheets(doc) -> int:
    """Point every stylesheet of Panel's files in ``doc`` at their content, now and for components added
    later (installs :class:`InlineSheets` as the document's stylesheet cache).

    Returns
    -------
    int, the stylesheets changed now.
    """
    if doc is None:
        return 0
    cache = pn.state._stylesheets.get(doc)
    if not isinstance(cache, InlineSheets):
        pn.state._stylesheets[doc] = cache = InlineSheets(cache or {})
    changed = 0
    for sheet in [*cache.values(), *doc.select({"type": ImportedStyleSheet})]:
        if (path := dist_file(sheet.url)) is not None:
            sheet.url = data_url(path)
            changed += 1
    return changed


def _holds_models(value) -> bool:
    """A serialized value holds Bokeh models (a reference ``{"id": "p12"}`` or a definition of one; a
    binary buffer's reference, ``{"id": 0}``, is no model)."""
    if isinstance(value, dict):
        if isinstance(value.get("id"), str) and set(value) <= {"type", "name", "id", "attributes"}:
            return True
        return any(_holds_models(v) for v in value.values())
    if isinstance(value, list):
        return any(_holds_models(v) for v in value)
    return False


def echoed(event: dict) -> bool:
    """A page's event that only sends back what the kernel sent it: streamed columns, or a property set to
    models (the page creates and moves no models in this dashboard; the kernel's own changes of children,
    stylesheets or renderers come back with every model in them, which Bokeh then warns are known)."""
    return event.get("kind") == "ColumnsStreamed" or (
        event.get("kind") == "ModelChanged" and _holds_models(event.get("new"))
    )


class KernelColumn(pn.Column):
    """The root of a view displayed in a notebook: the page's messages are applied on the thread of the
    event loop it was built on (the kernel's main thread), without the streamed columns it echoes."""

    def __init__(self, *objects, **params):
        super().__init__(*objects, **params)
        try:
            self._loop = asyncio.get_running_loop()
        except RuntimeError:  # built outside an event loop (a plain script): messages are applied where they arrive
            self._loop = None
        self._thread = threading.get_ident()
        self.message_errors: list[str] = []  # the last MAX_ERRORS page messages that failed to apply

    def _on_msg(self, ref: str, manager, msg) -> None:
        content = msg.get("content") if isinstance(msg, dict) else None
        if isinstance(content, dict) and isinstance(content.get("events"), list):
            content["events"] = [e for e in content["events"] if not echoed(e)]
        if self._loop is None or threading.get_ident() == self._thread or self._loop.is_closed():
            self._apply(ref, manager, msg)
        else:
            self._loop.call_soon_threadsafe(self._apply, ref, manager, msg)

    def _apply(self, ref: str, manager, msg) -> None:
        """Apply one page message (on the kernel's main thread)."""
        try:
            # Panel sends what the message changed as it applies it (holding those sends back would lose
            # them: its handler releases the document's held events when it ends); new components take
            # their stylesheets from the document's cache, which inline_stylesheets made inline
            super()._on_msg(ref, manager, msg)
        except Exception as exc:  # the page has no one to show it to: kept, and the next message goes on
            self.message_errors = [*self.message_errors, f"{type(exc).__name__}: {exc}".splitlines()[0]][-MAX_ERRORS:]
        if inline_stylesheets((pn.state._views.get(ref) or (None,) * 4)[2]):
            push_on_root(ref)
