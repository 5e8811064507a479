"""advise's pure parts: which releases are candidates, and the order of the answer."""

from __future__ import annotations

from stackmatrix.advise import _newest_patches
from stackmatrix.kinds.pins import newer as _newer


def test_the_newest_patch_of_each_newer_minor() -> None:
    versions = ["4.57.5", "4.57.6", "5.0.0", "5.5.0", "5.5.4", "5.6.0", "5.6.2", "5.10.1"]
    assert _newest_patches(versions) == ["4.57.6", "5.0.0", "5.5.4", "5.6.2", "5.10.1"]
    assert _newer(_newest_patches(versions), "5.5.0") == ["5.5.4", "5.6.2", "5.10.1"]
    assert _newer(versions, None) == versions
