"""The command line: parse, dispatch, and end every run with an exit code and at most one line. The commands are
records (cli/commands.py), the parser is built from them (cli/args.py); exit codes are typed (errors.py)."""

from __future__ import annotations

import importlib
import os
import sys
import tempfile
import traceback
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

from stackmatrix import __version__
from stackmatrix.cli.args import build_parser, request_of
from stackmatrix.cli.commands import COMMANDS
from stackmatrix.errors import Interrupted, StackmatrixError, path_fault
from stackmatrix.inert import term_text
from stackmatrix.redact import redact
from stackmatrix.request import Request


def command(name: str) -> Callable[[Request], int]:
    """The function that answers a command, imported now (``module:function`` under stackmatrix.cli)."""
    module, func = next(c.run for c in COMMANDS if c.name == name).split(":")
    fn: Callable[[Request], int] = getattr(importlib.import_module(f"stackmatrix.cli.{module}"), func)
    return fn


def crash_log(exc: BaseException, argv: Sequence[str], cache_dir: str | None = None) -> Path | None:
    """The traceback of an unexpected error, redacted, in ``<cache>/crash/`` (the --cache-dir given, else
    STACKMATRIX_CACHE_DIR, else the default; the temp dir when none can be written): the user gets one line and
    this path, never the traceback itself."""
    from stackmatrix.options import default_cache_dir

    text = redact(f"stackmatrix {__version__}\nargv: {list(argv)!r}\n\n" + "".join(traceback.format_exception(exc)))
    name = f"crash-{datetime.now(UTC):%Y%m%dT%H%M%S}-{os.getpid()}.log"
    cache_dir = cache_dir or os.environ.get("STACKMATRIX_CACHE_DIR")
    for folder in (
        Path(cache_dir) / "crash" if cache_dir else default_cache_dir() / "crash",
        Path(tempfile.gettempdir()),
    ):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / name
            path.write_text(text, errors="backslashreplace")
            return path
        except (OSError, ValueError):
            continue
    return None


def _say(message: str) -> None:
    """One line on stderr: the first line of the message, redacted."""
    line = redact(message).splitlines()[0] if message.strip() else message
    print(term_text(f"stackmatrix: {line}"), file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Every ending is an exit code and at most one line on stderr; no traceback reaches the user."""
    argv = list(sys.argv[1:] if argv is None else argv)
    for stream in (sys.stdout, sys.stderr):  # paths and ids with odd bytes print, escaped, instead of raising
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    request = None
    try:
        request = request_of(build_parser().parse_args(argv))
    except SystemExit as exc:  # argparse: a usage error (already printed) is 2, --help and --version are 0
        return exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 2
    try:
        return command(request.command)(request)
    except StackmatrixError as exc:
        _say(str(exc))
        return exc.exit_code
    except KeyboardInterrupt:
        _say("interrupted")
        return Interrupted.exit_code
    except BrokenPipeError:  # the reader of our output went away (``| head``): nothing more to say to it
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except OSError as exc:  # a fault of the machine on a path (full disk, read-only, not a directory)
        fault = path_fault(exc)
        _say(str(fault))
        return fault.exit_code
    except Exception as exc:  # a bug (a RecursionError or MemoryError too): one line and where the traceback is
        given = request.texts.get("cache_dir") if request is not None else None
        path = crash_log(exc, argv, given if isinstance(given, str) else None)
        where = f"; traceback in {path}" if path else ""
        _say(f"internal error: {type(exc).__name__}: {str(exc)[:200]}{where}")
        return 1
