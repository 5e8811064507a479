"""One exception class per exit code (cibuildwheel's habit): the CLI maps them to exit statuses."""

from __future__ import annotations

import errno
import os
import reprlib
from collections.abc import Iterator
from contextlib import contextmanager


class StackmatrixError(Exception):
    exit_code = 1


class GateRegression(StackmatrixError):
    """A probe failed where the user asked for a pass."""

    exit_code = 1


class BadInput(StackmatrixError):
    """Matrix, catalog or CLI input is wrong: says which file, key, value and what was expected."""

    exit_code = 2

    def __init__(self, where: str, key: str, value: object, expected: str) -> None:
        self.where, self.key, self.value, self.expected = where, key, value, expected
        super().__init__(f"{where}: key {key!r}: got {_short(value)}; expected {expected}")


class NothingSelected(StackmatrixError):
    exit_code = 3


class InfraUnavailable(StackmatrixError):
    """The package index, Docker or Slurm cannot be reached; the store, cache or an output cannot be written."""

    exit_code = 4


class MachineFault(InfraUnavailable):
    """A tool run for us (uv, a docker build) failed because this host's disk is full, over quota or read-only: no
    verdict on the stack can be made here, so the run ends (exit 4) instead of recording one."""


# What uv and docker say (their own words, or the OS's text of the errno) when the disk failed them; uv's errno
# with its parentheses, as it prints it ("os error 30" alone would also match an "os error 301").
_DISK_WORDS = {
    "no space left on device": errno.ENOSPC,
    "(os error 28)": errno.ENOSPC,
    "disk quota exceeded": errno.EDQUOT,
    "(os error 122)": errno.EDQUOT,
    "read-only file system": errno.EROFS,
    "(os error 30)": errno.EROFS,
}


def disk_fault(output: str, where: object, doing: str) -> MachineFault | None:
    """``output`` of a tool that failed ``doing`` something under ``where``, as a machine fault if the disk was
    why; None if the output names no disk fault (the failure is the stack's, or the network's)."""
    low = output.lower()
    code = next((c for words, c in _DISK_WORDS.items() if words in low), None)
    if code is None:
        return None
    return MachineFault(f"{where}: {os.strerror(code)} ({errno.errorcode[code]}): {doing}")


class Interrupted(StackmatrixError):
    exit_code = 130


class Terminated(Interrupted):
    """SIGTERM (a CI job cancelled, a scheduler's time limit): 128 + 15, as a shell reports it."""

    exit_code = 143


_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxdict, _REPR.maxlist, _REPR.maxstring, _REPR.maxother = 3, 8, 8, 300, 300


def _short(value: object, limit: int = 300) -> str:
    """A value as the message shows it: repr, cut in depth and length (a 3,000-term expression or a table nested
    5,000 deep is not echoed whole, and never recursed into)."""
    try:
        text = _REPR.repr(value)
    except (ValueError, RecursionError):  # an int of more than 4,300 digits has no repr
        text = f"<{type(value).__name__} too large to show>"
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


# Where the path itself is wrong (a file where a directory must be, a directory where a file must be): the
# user named a bad path (exit 2). Any other OS error on a path is the machine's (exit 4): no space, read-only,
# no permission, I/O error.
_BAD_PATH = {
    errno.ENOTDIR: "a path whose parents are directories (a file stands in the way)",
    errno.EISDIR: "a file path, not a directory",
    errno.EEXIST: "a directory (a file stands there)",
    errno.ENAMETOOLONG: "a shorter path",
    errno.ELOOP: "a path without a symlink loop",
}


def path_fault(exc: OSError, where: str | None = None) -> StackmatrixError:
    """An OS error on a path as the exit it stands for, naming the path (and the flag, if known)."""
    path = os.fsdecode(exc.filename) if exc.filename is not None else "?"
    what = exc.strerror or type(exc).__name__
    code = errno.errorcode.get(exc.errno or 0, "")
    if exc.errno in _BAD_PATH:
        return BadInput(where or path, "<path>", f"{path}: {what}", _BAD_PATH[exc.errno or 0])
    prefix = f"{where}: " if where else ""
    return InfraUnavailable(f"{prefix}{path}: {what}" + (f" ({code})" if code else ""))


@contextmanager
def path_faults(where: str | None) -> Iterator[None]:
    """OS errors on paths inside the block as ``path_fault``, naming ``where`` (the flag of a path the user gave)."""
    try:
        yield
    except OSError as exc:
        raise path_fault(exc, where) from None
