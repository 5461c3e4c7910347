"""Sphinx extension: the command-line reference, generated from the real argument parser.

``.. fnodiag-cli::`` (in MyST: a ``{fnodiag-cli}`` fence) imports ``fnodiag.cli.build_parser`` (or the
``:parser:`` named ``module:function``), walks the parser and writes, for the program and for every
subcommand, a section with its help line, its description, its usage and a table of every option
(flags, metavar, choices, default and help, as ``--help`` prints them). Nothing is written by hand,
so the page cannot drift from the code: a flag added to the parser (or to a registry the parser reads)
is in the next build.

:func:`describe_parser` is the pure part (a parser -> plain dicts), tested in ``tests/test_docs.py``.
"""

from __future__ import annotations

import argparse
import importlib
import os
from contextlib import contextmanager

from docutils import nodes
from docutils.parsers.rst import directives
from sphinx.util.docutils import SphinxDirective

USAGE_WIDTH = "100"  # argparse wraps the usage at $COLUMNS: fixed, so the page does not depend on the terminal


@contextmanager
def _columns(width: str):
    old = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = width
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = old


def _subparsers(parser: argparse.ArgumentParser) -> list[tuple[str, str, argparse.ArgumentParser]]:
    """``(name, help, parser)`` of each subcommand, in the order they were added."""
    out = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help or "" for a in action._choices_actions}
            for name, sub in action.choices.items():
                out.append((name, helps.get(name, ""), sub))
    return out


def _option(parser: argparse.ArgumentParser, action: argparse.Action) -> dict:
    """One row of the options table: what ``--help`` prints for ``action``."""
    formatter = parser._get_formatter()
    if action.option_strings:
        if action.nargs == 0:
            invocation = ", ".join(action.option_strings)
        else:
            meta = formatter._format_args(action, formatter._get_default_metavar_for_optional(action))
            invocation = ", ".join(f"{s} {meta}" for s in action.option_strings)
    else:
        invocation = formatter._format_args(action, formatter._get_default_metavar_for_positional(action))
    help_text = formatter._expand_help(action) if action.help else ""
    return {
        "flags": list(action.option_strings),
        "dest": action.dest,
        "invocation": invocation,
        "help": " ".join(help_text.split()),
        "required": bool(getattr(action, "required", False)) and bool(action.option_strings),
    }


def _groups(parser: argparse.ArgumentParser) -> list[dict]:
    groups = []
    for group in parser._action_groups:
        rows = [
            _option(parser, a)
            for a in group._group_actions
            if a.help is not argparse.SUPPRESS and not isinstance(a, (argparse._SubParsersAction, argparse._HelpAction))
        ]
        if rows:
            groups.append({"title": group.title or "options", "description": group.description or "", "options": rows})
    return groups


def describe_parser(parser: argparse.ArgumentParser) -> dict:
    """The program and every subcommand of ``parser`` as plain data (what the page shows).

    Returns
    -------
    dict
        ``{"prog", "description", "usage", "groups", "commands": [{"name", "help", "description",
        "usage", "groups"}, ...]}``; each group is ``{"title", "description", "options": [{"flags",
        "dest", "invocation", "help", "required"}, ...]}``.
    """
    with _columns(USAGE_WIDTH):
        return {
            "prog": parser.prog,
            "description": parser.description or "",
            "usage": parser.format_usage().strip(),
            "groups": _groups(parser),
            "commands": [
                {
                    "name": name,
                    "help": help_,
                    "description": sub.description or "",
                    "usage": sub.format_usage().strip(),
                    "groups": _groups(sub),
                }
                for name, help_, sub in _subparsers(parser)
            ],
        }


def _para(text: str) -> nodes.paragraph:
    return nodes.paragraph(text, text)


def _table(rows: list[dict]) -> nodes.table:
    table = nodes.table(classes=["fnodiag-cli"])
    tgroup = nodes.tgroup(cols=2)
    table += tgroup
    tgroup += nodes.colspec(colwidth=35)
    tgroup += nodes.colspec(colwidth=65)
    head = nodes.thead()
    tgroup += head
    head += nodes.row("", *(nodes.entry("", _para(t)) for t in ("flag", "what it sets")))
    body = nodes.tbody()
    tgroup += body
    for r in rows:
        flag = nodes.paragraph()
        flag += nodes.literal(r["invocation"], r["invocation"])
        if r["required"]:
            flag += nodes.Text(" (required)")
        body += nodes.row("", nodes.entry("", flag), nodes.entry("", _para(r["help"])))
    return table


class FnodiagCli(SphinxDirective):
    """``.. fnodiag-cli::`` with optional ``:parser: module:function`` (default ``fnodiag.cli:build_parser``)."""

    has_content = False
    option_spec = {"parser": directives.unchanged}

    def run(self):
        module, _, func = self.options.get("parser", "fnodiag.cli:build_parser").partition(":")
        self.env.note_dependency(importlib.import_module(module).__file__)
        model = describe_parser(getattr(importlib.import_module(module), func)())
        out = [_para(model["description"]), nodes.literal_block(model["usage"], model["usage"], language="text")]
        commands = nodes.bullet_list()
        for c in model["commands"]:
            item = nodes.paragraph()
            ref = nodes.reference("", "", internal=True, refid=f"cli-{c['name']}")
            ref += nodes.literal(c["name"], f"{model['prog']} {c['name']}")
            item += ref
            item += nodes.Text(f": {c['help']}")
            commands += nodes.list_item("", item)
        out.append(commands)
        for c in model["commands"]:
            section = nodes.section(ids=[f"cli-{c['name']}"], names=[f"fnodiag {c['name']}"])
            title = f"{model['prog']} {c['name']}"
            section += nodes.title(title, "", nodes.literal(title, title))
            section += _para(c["help"][:1].upper() + c["help"][1:] + ".")
            if c["description"]:
                section += _para(c["description"])
            section += nodes.literal_block(c["usage"], c["usage"], language="text")
            for g in c["groups"]:
                if len(c["groups"]) > 1:
                    section += nodes.rubric(g["title"], g["title"])
                if g["description"]:
                    section += _para(g["description"])
                section += _table(g["options"])
            self.state.document.note_implicit_target(section, section)
            # a label per command, so that pages can write {ref}`cli-train`
            self.env.get_domain("std").note_hyperlink_target(
                f"cli-{c['name']}", self.env.docname, f"cli-{c['name']}", title
            )
            out.append(section)
        return out


def setup(app):
    app.add_directive("fnodiag-cli", FnodiagCli)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
