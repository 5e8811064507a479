"""Every command is a record: its flags are declared records (or their variants), its function exists, and every
declared flag is taken by some command."""

from __future__ import annotations

import importlib

from stackmatrix.cli.commands import COMMANDS, GROUPS
from stackmatrix.options import OPTIONS
from stackmatrix.request import FLAGS


def test_each_command_takes_declared_records_once() -> None:
    for command in COMMANDS:
        names = [opt.name for opt in command.takes]
        assert len(names) == len(set(names)), command.name
        flags = [opt.flag for opt in command.takes]
        assert len(flags) == len(set(flags)), command.name
        for opt in command.takes:
            declared = OPTIONS.get(opt.name) or FLAGS.get(opt.name)
            assert declared is not None, (command.name, opt.name)
            assert type(opt) is type(declared) and opt.action == declared.action, (command.name, opt.name)
            assert opt.positional == (opt.flag == opt.name), (command.name, opt.name)


def test_each_command_runs_a_function_that_exists() -> None:
    for command in COMMANDS:
        module, func = command.run.split(":")
        assert callable(getattr(importlib.import_module(f"stackmatrix.cli.{module}"), func)), command.name
        group = command.name.split(" ")[0] if " " in command.name else None
        assert group is None or group in GROUPS


def test_every_flag_is_taken_by_some_command() -> None:
    taken = {opt.name for command in COMMANDS for opt in command.takes} | {"version"}
    assert set(FLAGS) <= taken, set(FLAGS) - taken
    assert set(OPTIONS) <= taken


def test_every_help_says_what_it_answers_with_an_example_that_parses() -> None:
    """``--help`` of the program and of each command: what it answers and one example (which the parser takes),
    never a module's docstring."""
    import contextlib
    import io
    import shlex

    import pytest

    import stackmatrix.cli.args
    import stackmatrix.cli.main
    from stackmatrix.cli.args import build_parser, request_of

    docstrings = [m.__doc__.split("\n")[0] for m in (stackmatrix.cli.main, stackmatrix.cli.args) if m.__doc__]

    def help_of(argv: list[str]) -> str:
        out = io.StringIO()
        with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
            build_parser().parse_args([*argv, "--help"])
        return out.getvalue()

    top = help_of([])
    assert "examples:" in top and not any(d in top for d in docstrings)
    for command in COMMANDS:
        text = help_of(command.name.split())
        assert command.example.startswith(f"stackmatrix {command.name} ") and command.example in text
        assert command.help.split()[0] in text.lower() and not any(d in text for d in docstrings)
        assert request_of(build_parser().parse_args(shlex.split(command.example)[1:])).command == command.name
