"""The parser, generated from records: ``build_parser`` is the one place that turns Option records into argparse
arguments (cli/commands.py says which records each command takes), and ``request_of`` the one place that turns a
parse into the Request every step reads (nox's habit: the options are data, the parser is built from them)."""

from __future__ import annotations

import argparse
import textwrap
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from stackmatrix import __version__
from stackmatrix.cli.commands import COMMANDS, DESCRIPTION, EXAMPLES, GROUPS, Command
from stackmatrix.errors import BadInput
from stackmatrix.options import Check, Option
from stackmatrix.request import Request

GIVEN = "given_options"  # the namespace's set of the names the command line gave
COMMAND = "command_record"  # the namespace's Command (set by its subparser's defaults)


class Parser(argparse.ArgumentParser):
    """argparse with a usage error on one line (flag, value, what was expected), like every other bad input;
    ``--help`` still shows the usage."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")

    def _get_values(self, action: argparse.Action, arg_strings: list[str]) -> Any:
        # Python 3.11's argparse drops a "--" given as a value (``--model=--``) and hands the command an empty
        # list where a string belongs: refuse it here, naming the flag.
        value = super()._get_values(action, list(arg_strings))
        if action.nargs is None and isinstance(value, list):
            name = "/".join(action.option_strings) or action.dest
            self.error(f"argument {name}: got {' '.join(arg_strings)!r}; expected one value")
        return value


def argparse_type(check: Check[Any]) -> Callable[[str], Any]:
    """A record's check as an argparse type: bad input is a usage error naming the flag (argparse adds it)."""

    def convert(text: str) -> Any:
        try:
            return check("argument", text)
        except BadInput as exc:
            raise argparse.ArgumentTypeError(f"got {text!r}; expected {exc.expected}") from None

    return convert


class _Recorded(argparse.Action):
    """Stores a value as its record says (one value, a switch, a repeatable flag, an optional value) and notes
    that the command line gave it: run.json says where each value came from."""

    def __init__(self, option_strings: Sequence[str], dest: str, record: Option[Any], **kwargs: Any) -> None:
        super().__init__(option_strings, dest, **kwargs)
        self.record = record

    def __call__(
        self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any, option: str | None = None
    ) -> None:
        if not self.option_strings:  # a positional argument: argparse calls this with its default when absent
            setattr(namespace, self.dest, values)
            if values not in (None, []):
                setattr(namespace, GIVEN, getattr(namespace, GIVEN, frozenset()) | {self.dest})
            return
        if self.record.action == "switch":
            values = True
        elif self.record.action == "append":
            values = [*(getattr(namespace, self.dest, None) or []), values]
        setattr(namespace, self.dest, values)
        setattr(namespace, GIVEN, getattr(namespace, GIVEN, frozenset()) | {self.dest})


_NARGS: dict[str, Any] = {"store": None, "switch": 0, "append": None, "optional": "?"}


def add_option(p: argparse.ArgumentParser, opt: Option[Any]) -> None:
    """One record's argument. A setting (it has an env var) is parsed as text and checked when the settings
    resolve, its flag and its variable by one check with one message; a flag is checked by argparse, with the
    record's choices."""
    if opt.action == "version":
        p.add_argument(opt.flag, action="version", version=f"stackmatrix {__version__}", help=opt.help)
        return
    kwargs: dict[str, Any] = {"action": _Recorded, "record": opt, "help": opt.help}
    if opt.metavar:
        kwargs["metavar"] = opt.metavar
    if opt.positional:
        many = opt.action == "append"
        nargs = ("+" if opt.required else "*") if many else (None if opt.required else "?")
        p.add_argument(opt.name, nargs=nargs, type=argparse_type(opt.check), default=[] if many else None, **kwargs)
        return
    kwargs.update(dest=opt.name, nargs=_NARGS[opt.action])
    if opt.required:
        kwargs["required"] = True
    if opt.env:
        kwargs.update(default=None, help=f"{opt.help} [env {opt.env}]")
    else:
        default: object = [] if opt.action == "append" else False if opt.action == "switch" else opt.default
        kwargs.update(default=default, type=argparse_type(opt.check), choices=opt.allowed() or None)
    if opt.action == "optional":
        kwargs["const"] = ""
    p.add_argument(opt.flag, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    first = "\n".join(f"  {EXAMPLES[name]}" for name in list(EXAMPLES)[:5])
    parser = Parser(
        prog="stackmatrix",
        description=textwrap.fill(DESCRIPTION, 79),
        epilog=f"examples:\n{first}\n\n'stackmatrix COMMAND --help' says what a command answers, with an example.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_option(parser, Request.version)
    sub = parser.add_subparsers(dest="command", required=True)
    groups: dict[str, Any] = {}
    for command in COMMANDS:
        where, name = sub, command.name
        if " " in name:  # a command of a group (``tiny build``): the group's own parser holds it
            group, name = name.split(" ", 1)
            if group not in groups:
                g = sub.add_parser(group, help=GROUPS[group])
                groups[group] = g.add_subparsers(dest=f"{group}_command", required=True)
            where = groups[group]
        p = where.add_parser(
            name,
            help=command.help,
            description=textwrap.fill(command.help[0].upper() + command.help[1:] + ".", 79),
            epilog=f"example:\n  {command.example}",
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        p.set_defaults(**{COMMAND: command})
        for opt in command.takes:
            add_option(p, opt)
    return parser


def request_of(namespace: argparse.Namespace) -> Request:
    """The parse as a Request: each flag's value (a repeatable one as a tuple), the settings as given (text)."""
    command: Command = getattr(namespace, COMMAND)
    values: dict[str, object] = {}
    texts: dict[str, object] = {}
    for opt in command.takes:
        value = getattr(namespace, opt.name)
        if opt.env:
            texts[opt.name] = value
        else:
            values[opt.name] = tuple(value) if opt.action == "append" else value
    request = Request(command.name, values, getattr(namespace, GIVEN, ()), texts)
    return request if command.stores else request.answered_here()
