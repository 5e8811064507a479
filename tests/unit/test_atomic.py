"""Writes the user names (``--output``, ``--summary``): a regular file is replaced atomically, through a link to
it; a device, a FIFO or ``/dev/stdout`` is opened and written, never replaced (as root, a replace turns a device
into a file). Made in a temp dir: a device node (root can make one: CI and this machine run as root), a FIFO, a
link."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import pytest

from stackmatrix.errors import BadInput, InfraUnavailable
from stackmatrix.files.atomic import write_output


def test_a_regular_file_is_replaced_and_a_link_to_it_stays_a_link(tmp_path: Path) -> None:
    target = tmp_path / "summary.md"
    target.write_text("old")
    link = tmp_path / "link.md"
    link.symlink_to(target)
    write_output(link, "new", "--summary")
    assert link.is_symlink() and target.read_text() == "new"
    write_output(tmp_path / "fresh.md", "x", "--summary")
    assert (tmp_path / "fresh.md").read_text() == "x"


def test_a_device_node_is_written_not_replaced(tmp_path: Path) -> None:
    null = tmp_path / "null"
    os.mknod(null, stat.S_IFCHR | 0o666, os.makedev(1, 3))  # what /dev/null is
    write_output(null, "gate summary", "--summary")
    assert stat.S_ISCHR(null.stat().st_mode)
    full = tmp_path / "full"
    os.mknod(full, stat.S_IFCHR | 0o666, os.makedev(1, 7))  # /dev/full: every write fails ENOSPC
    with pytest.raises(InfraUnavailable, match="No space left"):
        write_output(full, "x", "--output")
    assert stat.S_ISCHR(full.stat().st_mode)


def test_a_fifo_is_written_to_its_reader_and_one_without_a_reader_is_refused_at_once(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(BadInput, match="FIFO") as exc:
        write_output(fifo, "x", "--output")  # nobody reads it: refused, never a hang
    assert exc.value.where == "--output"
    got: list[bytes] = []

    def read() -> None:
        with open(fifo, "rb") as fh:
            got.append(fh.read())

    reader = threading.Thread(target=read)
    reader.start()
    for _ in range(100):  # the reader's open blocks until a writer comes: retry until it is there
        try:
            write_output(fifo, "the report", "--output")
            break
        except BadInput:
            threading.Event().wait(0.02)
    reader.join(5)
    assert got == [b"the report"] and stat.S_ISFIFO(fifo.stat().st_mode)


def test_a_directory_or_a_link_to_nothing_is_bad_input(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="not a directory"):
        write_output(tmp_path, "x", "--output")
    (tmp_path / "dangling").symlink_to(tmp_path / "no" / "such" / "dir" / "x")
    with pytest.raises(BadInput, match="a link to an existing one"):
        write_output(tmp_path / "dangling", "x", "--output")
    assert not (tmp_path / "no").exists()  # nothing made where it pointed


def test_a_killed_renders_temporary_files_are_swept_by_the_next_render(tmp_path: Path) -> None:
    """A kill during rendering leaves latest/.readiness.csv.*.tmp: the next render into that folder removes it,
    but not a young one (another process may be writing it now)."""
    import time

    from stackmatrix.reports.render import write_reports
    from stackmatrix.reports.table import Report

    latest = tmp_path / "latest"
    latest.mkdir()
    stale, young = latest / ".readiness.csv.abc.tmp", latest / ".readiness.md.def.tmp"
    stale.write_text("half")
    young.write_text("half")
    an_hour_ago = time.time() - 3600
    os.utime(stale, (an_hour_ago, an_hour_ago))
    write_reports(Report.of([], {"run_id": "r"}), latest, ["csv"])
    assert not stale.exists() and young.exists() and (latest / "readiness.csv").is_file()
