"""Sphinx configuration of the fnodiag documentation (``make docs``; MyST Markdown, numpydoc, pydata theme).

The build is offline: no intersphinx inventories are fetched and every image is a file in ``docs/img/``.
The committed, executed notebooks are rendered as they are (``nb_execution_mode = "off"``); nbval checks
them in the test suite. The command-line reference is generated from ``fnodiag.cli.build_parser()`` by the
local extension ``docs/_ext/fnodiag_cli.py``.
"""

from __future__ import annotations

import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS.parent))  # the checkout's fnodiag, whatever the installed copy is
sys.path.insert(0, str(DOCS / "_ext"))

import fnodiag  # noqa: E402  (after the path: document this checkout)

project = "fnodiag"
author = "the fnodiag maintainers"
copyright = "2026, the fnodiag maintainers"
version = release = fnodiag.__version__

extensions = [
    "myst_nb",  # MyST Markdown pages and the committed notebooks (it loads myst_parser)
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "numpydoc",
    "sphinx_design",
    "fnodiag_cli",  # docs/_ext: the CLI reference from the real argument parser
]

# .rst first: autosummary names its generated (reStructuredText) stubs with the first suffix.
source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}
root_doc = "index"
exclude_patterns = ["_build", "notebooks/README.md", "**/.ipynb_checkpoints", "README.md"]
templates_path = ["_templates"]

# MyST: ::: fences for directives, definition lists, GitHub-style anchors for "#section" links.
myst_enable_extensions = ["colon_fence", "deflist", "attrs_inline"]
myst_heading_anchors = 3

# Notebooks: rendered from their committed outputs, never executed by the docs build.
nb_execution_mode = "off"
nb_merge_streams = True
# HoloViews cells also carry its JavaScript loader outputs (application/vnd.holoviews_*), which a static
# page cannot run; the plot itself renders from the cell's text/html output.
suppress_warnings = ["mystnb.unknown_mime_type"]

# API pages: autosummary writes one page per module into reference/api/generated/ (not committed).
autosummary_generate = True
autosummary_imported_members = False
autodoc_default_options = {"member-order": "bysource"}
autodoc_typehints = "none"  # the numpydoc sections say the types (with array shapes)
autodoc_mock_imports: list[str] = []
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False
numpydoc_validation_checks: set[str] = set()

html_theme = "pydata_sphinx_theme"
html_title = "fnodiag"
html_static_path = ["_static"]
html_css_files = ["fnodiag.css"]
html_theme_options = {
    "navbar_align": "left",
    "show_toc_level": 2,
    "navigation_with_keys": False,
    "header_links_before_dropdown": 7,
    "secondary_sidebar_items": ["page-toc"],
    "footer_start": ["copyright"],
    "footer_end": ["sphinx-version"],
}
html_sidebars = {"index": []}
html_show_sourcelink = False
