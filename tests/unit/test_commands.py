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
