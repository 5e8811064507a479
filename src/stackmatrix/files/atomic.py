"""Atomic file writes: a reader (or an interrupted run) never sees half a file."""

from __future__ import annotations

import errno
import os
import stat
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


def remove_partial(directory: Path, older_than: float | None = None) -> None:
    """Drop temporary files an interruption left behind (a signal can land inside ``mkstemp`` itself);
    ``older_than`` (seconds): only those, where another process may be writing its own right now."""
    import time

    for leftover in directory.glob(f".*{TMP_SUFFIX}"):
        try:
            if older_than is None or time.time() - leftover.lstat().st_mtime > older_than:
                leftover.unlink(missing_ok=True)
        except OSError:
            continue


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def write_output(path: Path, text: str, flag: str) -> None:
    """A file the user named (``--output``, ``--summary``): a bad path is exit 2 naming the flag, a machine fault
    (full disk, read-only) exit 4. A regular file (or a new one) is replaced atomically, through a symlink to it
    (the link stays); anything else that is there (``/dev/stdout``, ``/dev/null``, a FIFO, a device) is opened and
    written, never replaced: as root, a replace would turn a device into a file."""
    from stackmatrix.errors import BadInput, path_faults

    with path_faults(flag):
        try:
            st = os.stat(path)  # through links
        except FileNotFoundError:
            st = None
        if st is None and path.is_symlink():  # a link to nothing: followed, it would make files where it points
            raise BadInput(flag, "<path>", f"{path} -> {os.readlink(path)}", "a file, or a link to an existing one")
        if st is None or stat.S_ISREG(st.st_mode):
            atomic_write_text(Path(os.path.realpath(path)) if path.is_symlink() else path, text)
            return
        if stat.S_ISDIR(st.st_mode):
            raise BadInput(flag, "<path>", str(path), "a file path, not a directory")
        try:  # a FIFO nobody reads would block the open: refused at once instead
            fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as exc:
            if exc.errno == errno.ENXIO:
                raise BadInput(flag, "<path>", str(path), "a FIFO something reads (none has it open)") from None
            raise
        os.set_blocking(fd, True)
        with os.fdopen(fd, "wb") as fh:
            fh.write(text.encode())
