"""The README a newcomer reads in five minutes, and the documentation site beside it: the README's examples parse,
its links resolve, every page of docs/ is in the site's nav (``nox -s docs`` builds the site with ``--strict``, which
checks the pages' own links and anchors)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from stackmatrix.cli.args import build_parser, request_of

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)\s]*)?\)")


def _fenced(text: str) -> list[str]:
    """The lines of the sh code blocks."""
    return [line for block in re.findall(r"```sh\n(.*?)```", text, re.S) for line in block.splitlines()]


def test_the_readme_is_short() -> None:
    """What it answers, the quickstart, five commands, where the rest is: under 80 lines, 600 words."""
    assert len(README.splitlines()) <= 80 and len(README.split()) <= 600, (
        len(README.splitlines()),
        len(README.split()),
    )


def test_the_readmes_commands_parse() -> None:
    commands = [line.split("#", 1)[0].strip() for line in _fenced(README) if line.startswith("stackmatrix ")]
    assert len(commands) == 5
    names = []
    for command in commands:
        names.append(request_of(build_parser().parse_args(shlex.split(command)[1:])).command)
    assert names == ["run", "report", "check", "advise", "gate"]


def test_the_readmes_links_resolve_and_every_page_is_in_the_nav() -> None:
    local = [target for target in LINK.findall(README) if "://" not in target]
    assert local and all((ROOT / target).is_file() for target in local), local
    nav = (ROOT / "mkdocs.yml").read_text()
    pages = sorted(p.name for p in (ROOT / "docs").glob("*.md"))
    assert all(re.search(rf":\s+{re.escape(page)}$", nav, re.M) for page in pages), pages
    assert {f"docs/{page}" for page in pages} <= set(local)  # the README names every page
