"""Version strings from outside: PEP 440 (normalized) or a Triton release, else exit 2 naming where."""

from __future__ import annotations

import pytest

from stackmatrix.errors import BadInput
from stackmatrix.versions import normalized, release_text, version_text


def test_versions() -> None:
    assert version_text("v0.19.0", "--vllm", "vllm") == "0.19.0"
    assert normalized("2.13.0+CPU") == "2.13.0+cpu"
    for bad in ("", "latest", "0.19/../../x", "1.0 beta", "x" * 100, "0.19.0/"):
        with pytest.raises(BadInput) as exc:
            version_text(bad, "--vllm", "vllm")
        assert (exc.value.where, exc.value.key) == ("--vllm", "vllm")


def test_releases() -> None:
    assert release_text("26.03", "--triton", "triton") == "26.03"
    for bad in ("26.3", "2026.03", "26.03.1", "../26.03", ""):
        with pytest.raises(BadInput):
            release_text(bad, "--triton", "triton")
