"""Reading a file that came from outside (a flag, a matrix folder, a stored run, a cache) without ever hanging
or crashing: opened non-blocking and checked to be a regular file before a byte is read, so a FIFO, a device or a
directory is refused at once; size-capped; decoded and parsed with every failure named (file, what, expected).

Inputs (matrix, catalogs, policies, stored runs) fail as bad input (exit 2). Caches are derived data: a damaged
entry reads as absent (``cached_*``) and is rebuilt.
"""

from __future__ import annotations

import json
import os
import stat
import tomllib
from pathlib import Path
from typing import Any, BinaryIO

from stackmatrix.errors import BadInput

MAX_BYTES = 64 * 1024 * 1024  # no input or cache file of ours comes near this; /dev/zero and friends do


class Unreadable(Exception):
    """Why a file cannot be read: ``value`` (what was found) and ``expected``."""

    def __init__(self, value: str, expected: str) -> None:
        super().__init__(f"{value}; expected {expected}")
        self.value, self.expected = value, expected


def _open(path: Path) -> tuple[int, os.stat_result]:
    """A descriptor of ``path`` once it is known to be a regular file (the non-blocking open returns at once on a
    FIFO with no writer; the check refuses it, a directory and a device before anything is read)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise Unreadable("no such file", "an existing file") from None
    except (OSError, ValueError) as exc:  # ValueError: a NUL byte in the path
        raise Unreadable(getattr(exc, "strerror", None) or str(exc), "a readable file") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            kind = "a directory" if stat.S_ISDIR(st.st_mode) else "not a regular file (a FIFO, socket or device)"
            raise Unreadable(kind, "a regular file")
    except BaseException:
        os.close(fd)
        raise
    return fd, st


def open_regular(path: Path) -> BinaryIO:
    """``path`` opened for binary reading, if it is a regular file (else ``Unreadable``)."""
    fd, _ = _open(path)
    return os.fdopen(fd, "rb")


def _read(path: Path, limit: int) -> bytes:
    fd, st = _open(path)
    try:
        if st.st_size > limit:
            raise Unreadable(f"{st.st_size} bytes", f"a file of at most {limit} bytes")
        chunks, size = [], 0
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
            size += len(chunk)
            if size > limit:
                raise Unreadable(f"more than {limit} bytes", f"a file of at most {limit} bytes")
        return b"".join(chunks)
    except OSError as exc:
        raise Unreadable(exc.strerror or type(exc).__name__, "a readable file") from None
    finally:
        os.close(fd)


def read_capped(path: Path, limit: int) -> bytes:
    """A regular file's bytes, at most ``limit`` of them (else ``Unreadable``: the caller names the input)."""
    return _read(path, limit)


def _text(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Unreadable(f"byte 0x{data[exc.start]:02x} at offset {exc.start}", "UTF-8 text") from None


def _json(data: bytes) -> Any:
    try:
        return json.loads(_text(data))
    except ValueError as exc:  # JSONDecodeError, and an integer of more than 4,300 digits
        raise Unreadable(str(exc)[:200], "valid JSON") from None
    except RecursionError:
        raise Unreadable("JSON nested too deeply", "valid JSON") from None


def read_bytes(path: Path, what: str = "file", limit: int = MAX_BYTES) -> bytes:
    try:
        return _read(path, limit)
    except Unreadable as exc:
        raise BadInput(str(path), "<file>", exc.value, f"{exc.expected} ({what})") from None


def read_text(path: Path, what: str = "file") -> str:
    data = read_bytes(path, what)
    try:
        return _text(data)
    except Unreadable as exc:
        raise BadInput(str(path), "<encoding>", exc.value, exc.expected) from None


def read_json(path: Path, what: str = "JSON file") -> Any:
    return parse_json(path, read_bytes(path, what), what)


def parse_json(path: Path, data: bytes, what: str = "JSON file") -> Any:
    """``data`` (the bytes of the file at ``path``) as JSON, or exit 2 naming the file."""
    try:
        return _json(data)
    except Unreadable as exc:
        raise BadInput(str(path), "<json>", exc.value, f"{exc.expected} ({what})") from None


def parse_toml(path: Path | str, data: bytes) -> dict[str, Any]:
    try:
        return tomllib.loads(_text(data))
    except Unreadable as exc:
        raise BadInput(str(path), "<encoding>", exc.value, exc.expected) from None
    except tomllib.TOMLDecodeError as exc:
        raise BadInput(str(path), "<syntax>", str(exc), "valid TOML") from None
    except ValueError as exc:  # an integer of more than 4,300 digits (Python's int() limit)
        raise BadInput(str(path), "<syntax>", str(exc)[:200], "valid TOML with numbers of sane size") from None
    except RecursionError:
        raise BadInput(str(path), "<syntax>", "arrays or tables nested too deeply", "valid TOML") from None


def cached_json(path: Path) -> Any | None:
    """A cache entry, or None when it is missing or damaged in any way (the caller rebuilds it)."""
    try:
        return _json(_read(path, MAX_BYTES))
    except Unreadable:
        return None


def cached_bytes(path: Path) -> bytes | None:
    try:
        return _read(path, MAX_BYTES)
    except Unreadable:
        return None
