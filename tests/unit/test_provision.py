"""The test services' provisioner: a pid file a dead dockerd left is cleared, so the engine can start again."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.provision import _clear_stale_pid_file


def test_a_pid_file_whose_dockerd_is_gone_is_removed(tmp_path: Path) -> None:
    gone = subprocess.Popen(["true"])
    gone.wait()  # its pid is no process now (reaped)
    for text in (str(gone.pid), "", "not a pid"):
        path = tmp_path / "docker.pid"
        path.write_text(text)
        _clear_stale_pid_file(path)
        assert not path.exists(), text
    _clear_stale_pid_file(tmp_path / "absent.pid")  # nothing there: nothing to do


def test_a_pid_file_of_another_living_process_is_stale_too(tmp_path: Path) -> None:
    """A pid reused by a process that is not dockerd (this test's) does not keep the file."""
    path = tmp_path / "docker.pid"
    path.write_text(str(os.getpid()))
    _clear_stale_pid_file(path)
    assert not path.exists()
