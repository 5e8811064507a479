"""The format registry (reports/formats.py): every answer's renderers in one table, every one loadable, and every
command's --format choices read from it; no module dispatches on a format's name by hand."""

from __future__ import annotations

import argparse
import ast
from pathlib import Path

import pytest

from stackmatrix.cli.args import build_parser
from stackmatrix.reports.formats import FORMATS, Format, choices, of

SRC = Path(__file__).resolve().parents[2] / "src" / "stackmatrix"
# command (and its subcommand) -> the answer its --format renders
COMMANDS = {
    ("history",): "history",
    ("diff",): "diff",
    ("check",): "check",
    ("image", "facts"): "image",
    ("advise",): "advise",
    ("bisect",): "bisect",
}


@pytest.mark.parametrize("fmt", FORMATS, ids=lambda f: f"{f.answer}-{f.name}")
def test_every_renderer_loads(fmt: Format) -> None:
    assert callable(fmt.load())


def test_names_are_unique_per_answer_and_reports_name_their_files() -> None:
    assert len({(f.answer, f.name) for f in FORMATS}) == len(FORMATS)
    assert all(f.filename for f in of("report").values())
    assert len({f.filename for f in of("report").values()}) == len(of("report"))


def _subparser(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    sub: argparse.ArgumentParser = action.choices[name]
    return sub


@pytest.mark.parametrize(("command", "answer"), COMMANDS.items())
def test_each_commands_format_choices_are_the_registrys(command: tuple[str, ...], answer: str) -> None:
    parser = build_parser()
    for name in command:
        parser = _subparser(parser, name)
    (action,) = [a for a in parser._actions if "--format" in a.option_strings]
    assert list(action.choices or []) == choices(answer)
    assert action.default in choices(answer)


def test_the_report_command_lists_the_registrys_formats() -> None:
    (action,) = [a for a in _subparser(build_parser(), "report")._actions if "--format" in a.option_strings]
    assert all(name in (action.help or "") for name in choices("report"))


def test_no_module_dispatches_on_a_format_name() -> None:
    """``args.format == "json"``, ``fmt == "md"``, ``RENDER = {...}``: the registry's job."""
    found = []
    for path in sorted(SRC.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Compare) and any(
                "format" in ast.unparse(s) or ast.unparse(s) == "fmt" for s in (node.left, *node.comparators)
            ):
                found.append(f"{path.relative_to(SRC)}:{node.lineno}")
            if isinstance(node, ast.Assign) and any(ast.unparse(t) == "RENDER" for t in node.targets):
                found.append(f"{path.relative_to(SRC)}:{node.lineno}")
    assert not found, found
