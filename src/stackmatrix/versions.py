"""Version strings that enter from outside (flags, matrix files, policies, candidate specs), checked where they
enter: a PEP 440 version (normalized, as the index spells it) or a Triton release ``YY.MM``."""

from __future__ import annotations

import re

from packaging.version import InvalidVersion, Version

from stackmatrix.errors import BadInput

RELEASE = re.compile(r"\d\d\.\d\d")
MAX_LEN = 40  # versions become parts of ids (ids.MAX_PART); no release on PyPI comes near


def normalized(text: str) -> str | None:
    """``text`` as the index spells the version (``v0.19.0`` -> ``0.19.0``), or None when it is not PEP 440."""
    if len(text) > MAX_LEN:
        return None
    try:
        return str(Version(text))
    except InvalidVersion:
        return None


def version_text(text: object, where: str, key: str) -> str:
    out = normalized(text) if isinstance(text, str) else None
    if out is None:
        raise BadInput(where, key, text, "a PEP 440 version, e.g. 0.19.0")
    return out


def release_text(text: object, where: str, key: str) -> str:
    if not isinstance(text, str) or RELEASE.fullmatch(text) is None:
        raise BadInput(where, key, text, "a Triton release YY.MM, e.g. 26.03")
    return text
