"""The parser's arguments, generated from the option records (options.py): each option and each flag several
commands share is declared once there and added here to every command that takes it (nox's habit)."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stackmatrix.errors import BadInput
from stackmatrix.options import (
    CONFIG_ENV,
    CONFIG_FLAG,
    FLAGS,
    GIVEN,
    OPTIONS,
    Check,
    Option,
    Settings,
    expand_user,
    given_path,
    option_sources,
    resolve_settings,
)
from stackmatrix.options import requirement as _requirement

if TYPE_CHECKING:
    from stackmatrix.matrix.loaded import Loaded


def argparse_type(check: Check[Any]) -> Callable[[str], Any]:
    """A record's check as an argparse type: bad input is a usage error naming the flag (argparse adds it)."""

    def convert(text: str) -> Any:
        try:
            return check("argument", text)
        except BadInput as exc:
            raise argparse.ArgumentTypeError(f"got {text!r}; expected {exc.expected}") from None

    return convert


path_arg = argparse_type(given_path)
requirement = argparse_type(_requirement)


def existing_file(text: str) -> Path:
    """An argparse type: a regular file that is there (a FIFO or a directory is refused before anything waits)."""
    try:
        path = expand_user("argument", text)
    except BadInput as exc:
        raise argparse.ArgumentTypeError(f"got {text!r}; expected {exc.expected}") from None
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"got {text!r}; expected an existing regular file")
    return path


class _Recorded(argparse.Action):
    """Stores an option's value as its record says (one value, a switch, a list, an optional value) and notes
    that the command line gave it: run.json says where each value came from."""

    def __init__(self, option_strings: Sequence[str], dest: str, record: Option[Any], **kwargs: Any) -> None:
        super().__init__(option_strings, dest, **kwargs)
        self.record = record

    def __call__(
        self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any, option: str | None = None
    ) -> None:
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
    kwargs: dict[str, Any] = {"dest": opt.name, "action": _Recorded, "record": opt, "nargs": _NARGS[opt.action]}
    if opt.env:
        kwargs.update(default=None, help=f"{opt.help} [env {opt.env}]")
    else:
        default: object = [] if opt.action == "append" else False if opt.action == "switch" else opt.default
        kwargs.update(default=default, help=opt.help, type=argparse_type(opt.check), choices=opt.allowed() or None)
    if opt.action == "optional":
        kwargs["const"] = ""
    if opt.metavar:
        kwargs["metavar"] = opt.metavar
    p.add_argument(opt.flag, **kwargs)


def add_flags(p: argparse.ArgumentParser, *names: str) -> None:
    for name in names:
        add_option(p, FLAGS[name])


def common(p: argparse.ArgumentParser) -> None:
    """The matrix, a configuration file and every setting."""
    add_flags(p, "matrix")
    p.add_argument(
        CONFIG_FLAG,
        dest="config",
        default=None,
        metavar="FILE",
        help="a TOML file of settings, one key per option (slurm_partition = 'gpu'); env and flags override it "
        f"[env {CONFIG_ENV}]",
    )
    for opt in OPTIONS.values():
        add_option(p, opt)


def selection(p: argparse.ArgumentParser) -> None:
    add_flags(p, "keyword", "only", "shard")


def tier(p: argparse.ArgumentParser) -> None:
    add_flags(p, "tier")
    runtime_flags(p)


def runtime_flags(p: argparse.ArgumentParser) -> None:
    add_flags(p, "override", "full_class")


def resolve(p: argparse.ArgumentParser) -> None:
    add_flags(p, "resolve")


def settings_of(args: argparse.Namespace) -> Settings:
    return resolve_settings({**{k: getattr(args, k, None) for k in OPTIONS}, "config": getattr(args, "config", None)})


def recorded_options(
    args: argparse.Namespace, loaded: Loaded | None = None, settings: Settings | None = None
) -> dict[str, dict[str, object]]:
    """run.json's ``options``: each setting, each shared flag this command took and (given ``loaded``) the
    matrix file's [settings], with its value and where it came from."""
    settings = settings or settings_of(args)
    if loaded is None:
        return option_sources(settings, vars(args))
    return option_sources(settings, vars(args), loaded.path, loaded.spec.settings)


def loaded_of(args: argparse.Namespace) -> Loaded:
    from stackmatrix.matrix.file import default_matrix_path
    from stackmatrix.matrix.loaded import load

    return load(args.matrix or default_matrix_path(), as_of=settings_of(args).as_of)
