"""The documentation: README links into the docs resolve, and the CLI reference covers the real parser.

The Sphinx build itself (``make docs``, with ``-W``) catches broken references between docs pages; these
tests are the fast part: no Sphinx build.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import pytest

from fnodiag.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent
# [text](target) and ![alt](target): the target up to a space (an optional "title") or the closing bracket
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")


def local_links(markdown: str) -> list[str]:
    """Link targets of ``markdown`` that point into the repository (no URL, no bare ``#anchor``), anchors cut."""
    out = []
    for target in LINK.findall(markdown):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I) or target.startswith("#"):
            continue
        out.append(target.split("#", 1)[0])
    return out


def broken_links(readme: Path) -> list[str]:
    """The README's repository links whose file or folder does not exist (relative to the README)."""
    return [t for t in local_links(readme.read_text(encoding="utf-8")) if not (readme.parent / t).exists()]


def test_readme_links_into_the_docs_exist():
    links = local_links((ROOT / "README.md").read_text(encoding="utf-8"))
    assert any(t.startswith("docs/") for t in links), "the README links into docs/"
    assert broken_links(ROOT / "README.md") == []


def test_a_broken_readme_link_is_found(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "here.md").write_text("# here\n")
    readme = tmp_path / "README.md"
    readme.write_text(
        "[ok](docs/here.md#a) [gone](docs/gone.md) ![img](docs/img/none.png) [web](https://x.org/a.md) [top](#x)\n"
    )
    assert broken_links(readme) == ["docs/gone.md", "docs/img/none.png"]


def _cli_extension():
    pytest.importorskip("sphinx", reason="the docs extra (make install has it)")
    sys.path.insert(0, str(ROOT / "docs" / "_ext"))
    try:
        import fnodiag_cli  # docs/_ext: not a package of the project
    finally:
        sys.path.remove(str(ROOT / "docs" / "_ext"))
    return fnodiag_cli


def test_cli_reference_has_every_subcommand_and_flag_of_the_parser():
    model = _cli_extension().describe_parser(build_parser())
    parser = build_parser()
    subs = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert [c["name"] for c in model["commands"]] == list(subs.choices)
    for command in model["commands"]:
        documented = {f for g in command["groups"] for o in g["options"] for f in o["flags"]}
        expected = {
            f
            for a in subs.choices[command["name"]]._actions
            if a.help is not argparse.SUPPRESS and not isinstance(a, argparse._HelpAction)
            for f in a.option_strings
        }
        assert documented == expected, command["name"]
        assert all(o["help"] for g in command["groups"] for o in g["options"]), command["name"]
    train = next(c for c in model["commands"] if c["name"] == "train")
    rows = {f: o for g in train["groups"] for o in g["options"] for f in o["flags"]}
    assert rows["--lr"]["invocation"].startswith("--lr ") and rows["--lr"]["help"]
