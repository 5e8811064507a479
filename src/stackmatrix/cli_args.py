"""Options and flags several commands share, declared once (nox's habit), and the values they resolve to."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from stackmatrix.errors import BadInput
from stackmatrix.options import OPTIONS, Settings, expand_user, resolve_settings

if TYPE_CHECKING:
    from stackmatrix.pipeline import Loaded


def path_arg(text: str) -> Path:
    """An argparse type: a non-empty path, ~ expanded (an empty one would silently mean the working directory)."""
    if not text.strip():
        raise argparse.ArgumentTypeError(f"got {text!r}; expected a path")
    return _expanded(text)


def _expanded(text: str) -> Path:
    try:
        return expand_user("argument", text)
    except BadInput as exc:
        raise argparse.ArgumentTypeError(f"got {text!r}; expected {exc.expected}") from None


def existing_file(text: str) -> Path:
    """An argparse type: a regular file that is there (a FIFO or a directory is refused before anything waits)."""
    path = _expanded(text)
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"got {text!r}; expected an existing regular file")
    return path


def common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--matrix", type=path_arg, default=None, help="matrix file (default: the embedded matrix/default.toml)"
    )
    for key, opt in OPTIONS.items():
        if key == "offline":
            p.add_argument(opt.flag, action="store_true", default=None, help=f"{opt.help} [env {opt.env}]")
        else:
            p.add_argument(opt.flag, dest=key, default=None, help=f"{opt.help} [env {opt.env}]")


def selection(p: argparse.ArgumentParser) -> None:
    p.add_argument("-k", dest="keyword", default=None, help="keyword expression over cell ids (pytest -k grammar)")
    p.add_argument("--only", action="append", default=[], help="glob over cell ids (repeatable)")
    p.add_argument("--shard", default=None, help="i/n: the i-th of n round-robin shards of the selection")


def tier(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--tier",
        choices=["static", "runtime"],
        default="static",
        help="static: published artifacts only; runtime: also build the environment, load, generate and serve",
    )
    runtime_flags(p)


def requirement(text: str) -> str:
    """An argparse type: a PEP 508 requirement (uv overrides are requirements)."""
    from packaging.requirements import InvalidRequirement, Requirement

    try:
        Requirement(text)
    except InvalidRequirement:
        raise argparse.ArgumentTypeError(f"got {text!r}; expected a requirement such as torch==2.13.0") from None
    return text


def runtime_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--override",
        action="append",
        type=requirement,
        default=[],
        metavar="REQ",
        help="runtime: a uv override for the environment (repeatable), e.g. torch==2.13.0",
    )
    p.add_argument(
        "--full-class",
        action="store_true",
        help="runtime: tiny checkpoints of the catalog's own class, vision/audio towers included "
        "(default: the text class)",
    )


def resolve(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--resolve",
        choices=["declared", "full"],
        default="declared",
        help="declared: the pins' declared requirements (packaging); full: uv resolves the whole tree",
    )


def settings_of(args: argparse.Namespace) -> Settings:
    return resolve_settings({k: getattr(args, k, None) for k in OPTIONS})


def loaded_of(args: argparse.Namespace) -> Loaded:
    from stackmatrix.matrixfile import default_matrix_path
    from stackmatrix.pipeline import load

    return load(args.matrix or default_matrix_path())
