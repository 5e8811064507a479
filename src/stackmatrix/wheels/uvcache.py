"""Where ``uv`` keeps its cache: ``<cache>/uv``, except when an index URL carries a secret in its query string.

uv strips ``user:password@`` from what it caches, but keeps the URLs it fetched, query strings included: a mirror
that takes ``?token=`` would leave the token in uv's cache. Such runs give uv a private cache that is removed when
the process ends (slower, never a secret on disk).
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from functools import cache
from pathlib import Path

from stackmatrix.redact import split_secrets


@cache
def _private() -> Path:
    path = Path(tempfile.mkdtemp(prefix="stackmatrix-uv-"))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


def uv_cache_dir(cache_dir: Path, *index_urls: str | None) -> Path:
    if any(url and split_secrets(url)[2] for url in index_urls):
        return _private()
    return cache_dir / "uv"
