"""The Panel dashboard over a runs folder: one param store (``store``), thin views, live tails.

Served by ``panel serve app`` (``app/main.py`` calls :func:`fnodiag.dashboard.app.session_page`) and by
``fnodiag serve`` (:mod:`fnodiag.dashboard.server`). It only reads run folders and starts training as
separate processes; it never imports Lightning.
"""
