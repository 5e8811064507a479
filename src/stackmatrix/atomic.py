"""Atomic file writes: a reader (or an interrupted run) never sees half a file."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

TMP_SUFFIX = ".tmp"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# mkstemp creates 0600 files; results and reports are meant to be read by others (a web server, CI artifacts),
# so they get the mode a plain open() would give.
FILE_MODE = 0o666 & ~_umask()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp: str | None = None
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TMP_SUFFIX)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            os.fchmod(fh.fileno(), FILE_MODE)
        os.replace(tmp, path)
    except BaseException as exc:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):  # name the file being written, not the temporary one (or none at all)
            exc.filename = str(path)
        raise


def remove_partial(directory: Path) -> None:
    """Drop temporary files an interruption left behind (a signal can land inside ``mkstemp`` itself)."""
    for leftover in directory.glob(f".*{TMP_SUFFIX}"):
        leftover.unlink(missing_ok=True)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def write_output(path: Path, text: str, flag: str) -> None:
    """A file the user named (``--output``, ``--summary``): a bad path is exit 2 naming the flag, a machine fault
    (full disk, read-only) exit 4."""
    from stackmatrix.errors import path_faults

    with path_faults(flag):
        atomic_write_text(path, text)
