"""A run's journal: ``journal.jsonl``, one finished cell's record per line, appended with one ``write`` each.

Why not a file per cell: one ``write`` to an ``O_APPEND`` descriptor is in the kernel once it returns, so a
``kill -9`` loses no finished cell, and 5,664 appends cost milliseconds where 5,664 atomic files cost a second.
``fsync`` runs at most once per ``SYNC_EVERY_S`` and after every slow cell, so a lost machine loses at most a
second of cheap cells. A torn last line is ignored and cut off on reopening; any other line that does not parse
is exit 2 naming the file and the line.
"""

from __future__ import annotations

import errno
import json
import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from stackmatrix.errors import BadInput
from stackmatrix.ids import is_cell_id

JOURNAL = "journal.jsonl"
SYNC_EVERY_S = 1.0
SLOW_CELL_S = 1.0  # a cell that took this long is made durable at once: probing it again would cost as much


class Journal:
    """The appending end. Not thread-safe by design: the executor appends from one thread."""

    def __init__(self, path: Path) -> None:
        self.path = path
        _cut_torn_tail(path)
        # O_NOFOLLOW: a journal planted as a link out of the store is refused, never appended to
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o666)
        if not stat.S_ISREG(os.fstat(self.fd).st_mode):
            os.close(self.fd)
            raise BadInput(str(path), "<path>", "not a regular file", "the run's journal (a regular file)")
        self._synced = time.monotonic()

    def append(self, line: bytes, *, slow: bool = False) -> int:
        """One record (JSON without a newline) as one write; its offset in the journal."""
        data = line + b"\n"
        written = os.write(self.fd, data)
        if written != len(data):  # a full disk mid-write: cut the partial record, then say so
            _cut_torn_tail(self.path)
            raise OSError(28, "No space left on device", str(self.path))
        end = os.lseek(self.fd, 0, os.SEEK_CUR)  # O_APPEND: the write landed just before the end
        if slow or time.monotonic() - self._synced >= SYNC_EVERY_S:
            self.sync()
        return end - len(data)

    def sync(self) -> None:
        os.fsync(self.fd)
        self._synced = time.monotonic()

    def close(self) -> None:
        if self.fd >= 0:
            try:
                os.fsync(self.fd)
            finally:
                os.close(self.fd)
                self.fd = -1


def _cut_torn_tail(path: Path) -> None:
    """Truncate a last line that has no newline (a write the machine lost half of)."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        return
    except OSError as exc:  # a link (ELOOP), a directory: the open for appending names it
        if exc.errno in (errno.ELOOP, errno.EISDIR, errno.ENXIO):
            return
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        return
    try:
        with os.fdopen(fd, "rb+") as fh:
            size = fh.seek(0, os.SEEK_END)
            if size == 0:
                return
            fh.seek(max(0, size - 1))
            if fh.read(1) == b"\n":
                return
            keep = _last_newline(fh, size)
            fh.truncate(keep)
    except FileNotFoundError:
        return


def _last_newline(fh: BinaryIO, size: int) -> int:
    """The offset just past the last newline before ``size`` (0 when there is none)."""
    pos = size
    while pos > 0:
        start = max(0, pos - 65536)
        fh.seek(start)
        chunk = fh.read(pos - start)
        i = chunk.rfind(b"\n")
        if i >= 0:
            return start + i + 1
        pos = start
    return 0


MAX_JOURNAL_BYTES = 1 << 30


# What one record of the journal may take (a static record is about 2 KB: 525,000 cells made a journal over the
# reader's 1 GiB): a run whose journal could not be read back is refused before it probes.
RECORD_BYTES = 4096


def check_readable(cells: int) -> None:
    most = MAX_JOURNAL_BYTES // RECORD_BYTES
    if cells > most:
        raise BadInput(
            "selection",
            "cells",
            cells,
            f"at most {most} cells in one run (its journal must stay readable, under "
            f"{MAX_JOURNAL_BYTES >> 30} GiB): split it with --shard i/n, or select fewer with -k/--only",
        )


def read_records(path: Path) -> Iterator[tuple[str, dict[str, Any], bytes, int, int]]:
    """(cell id, record, the record's JSON bytes, its offset, its line number) per complete line, in the order
    written. A line whose record is not an object with a cell id is exit 2 naming the file and the line. A journal
    that is a link is refused: the store reads what it wrote, nothing a link points at."""
    from stackmatrix.files.readfile import read_bytes

    if os.path.islink(path):
        raise BadInput(str(path), "<path>", "a symbolic link", "the run's journal (a regular file)")
    lines = read_bytes(path, "a run journal", MAX_JOURNAL_BYTES).split(b"\n")
    offset = 0
    for number, line in enumerate(lines[:-1], 1):  # the last element: "" or a torn line
        if line.strip():
            cell, record = _parse(path, number, line)
            yield cell, record, line, offset, number
        offset += len(line) + 1


def count_records(path: Path) -> int:
    """The records a reader will find, counted without parsing them: complete, non-blank lines (each one is a
    record or exit 2 naming its line); 0 for no journal. Refuses what ``read_records`` refuses (a link, a FIFO, a
    directory), naming the journal: this count is what a run's ``cells_written`` is checked against."""
    from stackmatrix.files.readfile import Unreadable, open_regular

    if not os.path.lexists(path):
        return 0
    if os.path.islink(path):
        raise BadInput(str(path), "<path>", "a symbolic link", "the run's journal (a regular file)")
    count, content = 0, False
    try:
        with open_regular(path) as fh:
            while chunk := fh.read(1 << 20):
                *ended, rest = chunk.split(b"\n")
                for line in ended:
                    count += content or bool(line.strip())
                    content = False
                content = content or bool(rest.strip())
    except Unreadable as exc:
        raise BadInput(str(path), "<path>", exc.value, "the run's journal (" + exc.expected + ")") from None
    return count


def _parse(path: Path, number: int, line: bytes) -> tuple[str, dict[str, Any]]:
    try:
        record = json.loads(line)
    except (ValueError, RecursionError):
        record = None
    cell = record.get("cell") if isinstance(record, dict) else None
    if not isinstance(record, dict) or not isinstance(cell, str) or not is_cell_id(cell):
        # the line itself is not echoed: a planted or damaged journal may hold anything, a secret too
        raise BadInput(f"{path}:{number}", "cell", f"a line of {len(line)} bytes", "a cell record (a JSON object)")
    return cell, record
