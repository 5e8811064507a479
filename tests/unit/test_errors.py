"""OS faults on paths as exits: a path that is wrong is the user's (2), a machine that fails is infrastructure (4)."""

from __future__ import annotations

import errno

import pytest

from stackmatrix.errors import BadInput, InfraUnavailable, path_fault


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
