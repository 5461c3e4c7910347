"""``fnodiag.dashboard.kernel``: a notebook view's page messages applied on one thread, its stylesheets inline.

Without a browser: the message dispatch of :class:`KernelColumn` (a message arriving on another thread,
as ipykernel 7's subshell delivers it, is applied on the event loop the view was built on, without the
streamed columns the page echoes), and :func:`inline_stylesheets` over real Panel components rendered
into a Bokeh document (before and after it is called).
"""

from __future__ import annotations

import asyncio
import base64
import threading

import panel as pn
from bokeh.document import Document
from bokeh.models import ImportedStyleSheet
from panel.io.resources import CDN_DIST, DIST_DIR

from fnodiag.dashboard.kernel import KernelColumn, dist_file, inline_stylesheets


def test_a_page_message_from_another_thread_is_applied_on_the_views_event_loop_without_streamed_columns():
    applied = []

    async def scenario():
        column = KernelColumn(pn.pane.Markdown("x"))
        column._apply = lambda ref, manager, msg: applied.append((threading.get_ident(), ref, msg))
        children = {"kind": "ModelChanged", "attr": "children", "new": [{"type": "object", "name": "Div", "id": "p9"}]}
        events = [
            {"kind": "ColumnsStreamed", "attr": "data"},  # the page echoes what the kernel streamed
            {"kind": "ModelChanged", "attr": "value", "new": "spatial_std", "model": {"id": "p1"}},
            children,  # and the kernel's children, with every model in them
            {"kind": "ModelChanged", "attr": "stylesheets", "new": [{"id": "p7"}]},
            {"kind": "ModelChanged", "attr": "indices", "new": {"type": "ndarray", "array": {"id": 0}}},  # a buffer
        ]
        msg = {"content": {"events": events}}
        sender = threading.Thread(target=column._on_msg, args=("ref", None, msg))
        sender.start()
        sender.join()
        assert applied == []  # not applied on the sending thread: waits for the loop
        for _ in range(100):
            if applied:
                break
            await asyncio.sleep(0.01)
        column._on_msg("ref2", None, {"content": {"events": []}})  # on the loop's own thread: applied at once
        return threading.get_ident()

    loop_thread = asyncio.run(scenario())
    assert [(t, ref) for t, ref, _ in applied] == [(loop_thread, "ref"), (loop_thread, "ref2")]
    assert [e["attr"] for e in applied[0][2]["content"]["events"]] == ["value", "indices"]  # what the page changed


def test_a_column_built_without_an_event_loop_applies_messages_where_they_arrive():
    column = KernelColumn()
    applied = []
    column._apply = lambda ref, manager, msg: applied.append(threading.get_ident())
    column._on_msg("ref", None, {"content": {"events": []}})
    assert applied == [threading.get_ident()]


def _sheets(doc) -> list[str]:
    return [s.url for s in doc.select({"type": ImportedStyleSheet})]


def test_inline_stylesheets_points_panels_files_at_their_content_now_and_for_components_added_later():
    assert dist_file(f"{CDN_DIST}css/markdown.css") == DIST_DIR / "css" / "markdown.css"
    assert dist_file("https://example.org/x.css") is None and dist_file(f"{CDN_DIST}css/no-such.css") is None
    doc = Document()
    root = pn.Column(pn.pane.Markdown("first")).get_root(doc)
    doc.add_root(root)
    assert any(u.startswith(CDN_DIST) for u in _sheets(doc))  # Panel links its CDN (what a page offline cannot load)
    assert inline_stylesheets(doc) > 0
    assert _sheets(doc) and all(u.startswith("data:text/css;base64,") for u in _sheets(doc))
    markdown = next(u for u in _sheets(doc) if base64.b64decode(u.split(",", 1)[1]) == dist_file_bytes("markdown"))
    assert markdown
    later = pn.pane.Markdown("added later", styles={"color": "red"})
    doc.add_root(later.get_root(doc))  # a component rendered into the same document afterwards
    assert all(u.startswith("data:") for u in _sheets(doc)), _sheets(doc)
    assert inline_stylesheets(doc) == 0  # nothing left to change


def dist_file_bytes(name: str) -> bytes:
    return (DIST_DIR / "css" / f"{name}.css").read_bytes()
