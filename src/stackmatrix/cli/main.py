"""The command line: the parser and the dispatch. Commands live in cli/probe.py (``list``, ``run``, ``check``,
``tiny``) and cli/stored.py (``history``, ``diff``, ``report``, ``merge``, ``gate``), imported only when run: the
tool starts often (CI shards, gates, diffs) and a diff should not pay for pandas. Exit codes are typed (errors.py).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import tempfile
import traceback
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

from stackmatrix import __version__
from stackmatrix.cli import stored
from stackmatrix.cli.answers import add_advise, add_bisect
from stackmatrix.cli.args import add_flags, common, existing_file, path_arg, resolve, runtime_flags, selection, tier
from stackmatrix.errors import Interrupted, StackmatrixError, path_fault
from stackmatrix.inert import term_text
from stackmatrix.redact import redact
from stackmatrix.reports.formats import choices


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


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="stackmatrix", description=__doc__)
    parser.add_argument("--version", action="version", version=f"stackmatrix {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("list", help="expand the matrix and list the selected cell ids")
    common(p)
    selection(p)
    add_flags(p, "plan")
    p.add_argument("--json", action="store_true", help="one JSON array of cells with their pins")

    p = sub.add_parser("run", help="probe the selected cells, store the run, render the readiness table")
    common(p)
    selection(p)
    tier(p)
    resolve(p)
    add_flags(p, "plan", "resume", "fresh", "detach")
    p.add_argument("--quiet", action="store_true", help="no progress: print only the summary and the report paths")
    p.add_argument("--table", action="store_true", help="also print the readiness grid (it is always in readiness.txt)")

    add_advise(sub)
    add_bisect(sub)

    p = sub.add_parser("collect", help="wait for a run's Slurm job arrays, fold their records in, store and render")
    common(p)
    p.add_argument("run", nargs="?", default=None, metavar="RUN", help="run id or prefix (default: the newest)")
    p.add_argument("--quiet", action="store_true", help="no progress: print only the summary and the report paths")
    p.add_argument("--table", action="store_true", help="also print the readiness grid (it is always in readiness.txt)")

    p = sub.add_parser("worker", help="run one task of a submitted Slurm array (its batch script calls this)")
    common(p)
    p.add_argument("submission", type=path_arg, help="the submission's directory, <run>/slurm/<k>")
    p.add_argument("--task", type=_task_index, required=True, help="the task, 0-based ($SLURM_ARRAY_TASK_ID + offset)")

    p = sub.add_parser("tiny", help="tiny random-weight checkpoints of a catalog model's architecture")
    tiny_sub = p.add_subparsers(dest="tiny_command", required=True)
    t = tiny_sub.add_parser("build", help="build (or reuse) one, inside an environment with that transformers")
    common(t)
    t.add_argument("model", help="catalog model id, case-insensitive, org optional")
    t.add_argument("--transformers", default=None, help="transformers version (default: the newest)")
    runtime_flags(t)

    p = sub.add_parser("image", help="what a container image holds, read from its registry (no Docker, no pull)")
    image_sub = p.add_subparsers(dest="image_command", required=True)
    i = image_sub.add_parser("facts", help="the versions an image ships and its Triton vLLM backend's imports")
    common(i)
    i.add_argument("ref", help="an image reference, e.g. nvcr.io/nvidia/tritonserver:26.04-vllm-python-py3")
    i.add_argument("--format", choices=choices("image"), default="table")

    p = sub.add_parser("check", help="one cell, the question a release gate asks")
    common(p)
    p.add_argument("--model", required=True, help="catalog model id, case-insensitive, org optional")
    p.add_argument("--triton", default=None, help="Triton release YY.MM (stock container unless --vllm/--transformers)")
    p.add_argument("--vllm", default=None, help="vLLM version (default: the container's, or the newest)")
    p.add_argument(
        "--transformers",
        default=None,
        help="transformers version (default: the newest the vLLM release declares it accepts)",
    )
    p.add_argument(
        "--kind",
        choices=[str(k) for k in importlib.import_module("stackmatrix.kinds").KINDS],  # the kind registry
        default=None,
        help="stack kind (default: triton-vllm with --triton, else vllm); triton-python: Triton's Python backend "
        "running transformers (needs --triton)",
    )
    p.add_argument("--gpu", default="l4x1", help="target: a matrix target name or <gpu>x<count> (tp=count)")
    p.add_argument("--format", choices=choices("check"), default="table")
    tier(p)
    resolve(p)
    add_flags(p, "fresh")

    p = sub.add_parser("stage", help="download every wheel the selected cells need into a wheelhouse (air-gapped)")
    common(p)
    selection(p)
    p.add_argument("--wheelhouse", type=path_arg, default=None, help="where the wheels go (default <cache>/wheelhouse)")
    p.add_argument("--cert", type=existing_file, default=None, help="a CA bundle for a TLS-intercepting proxy")
    add_flags(p, "override")
    stored.add_parsers(sub)
    return parser


def _task_index(text: str) -> int:
    if not text.isdigit() or len(text) > 9:
        raise argparse.ArgumentTypeError(f"got {text!r}; expected a task number (0, 1, ...)")
    return int(text)


COMMANDS = {
    "list": "probe:cmd_list",
    "run": "probe:cmd_run",
    "collect": "probe:cmd_collect",
    "advise": "probe:cmd_advise",
    "bisect": "probe:cmd_bisect",
    "worker": "probe:cmd_worker",
    "check": "probe:cmd_check",
    "tiny": "probe:cmd_tiny",
    "image": "image:cmd_image",
    "stage": "probe:cmd_stage",
    **{name: f"stored:{fn.__name__}" for name, fn in stored.COMMANDS.items()},
}


def command(name: str) -> Callable[[argparse.Namespace], int]:
    module, func = COMMANDS[name].split(":")
    fn: Callable[[argparse.Namespace], int] = getattr(importlib.import_module(f"stackmatrix.cli.{module}"), func)
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
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # argparse: a usage error (already printed) is 2, --help and --version are 0
        return exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 2
    try:
        return command(args.command)(args)
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
        path = crash_log(exc, argv, getattr(args, "cache_dir", None))
        where = f"; traceback in {path}" if path else ""
        _say(f"internal error: {type(exc).__name__}: {str(exc)[:200]}{where}")
        return 1
