from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from stackmatrix.cli.main import main
from tests.frozen import AS_OF, AS_OF_ENV

pytestmark = pytest.mark.network


@pytest.fixture(scope="package", autouse=True)
def frozen_index() -> Iterator[None]:
    """Every integration test reads the index as of the suite's one date (tests/frozen.py), so an upstream release
    cannot change its outcome; package-wide, so the module fixtures that run the tool see it too (a test of the
    newest view would say so by deleting the variable)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(AS_OF_ENV, AS_OF)
        yield


@contextmanager
def module_cache(factory: pytest.TempPathFactory, name: str) -> Iterator[Path]:
    """A module's own cache (its uv cache and environments: gigabytes), removed once the module's tests are done,
    whatever they did: a CI machine's disk then holds the suite's peak, not the sum of every module's caches (a full
    disk once failed CI's environment builds)."""
    path = factory.mktemp(name)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache for the whole session: the first test pays the cold reads, the rest are warm."""
    return tmp_path_factory.mktemp("cache")


CheckFn = Callable[..., tuple[int, dict[str, Any]]]


@pytest.fixture
def check(cache_dir: Path, capsys: pytest.CaptureFixture[str]) -> CheckFn:
    """``stackmatrix check ... --format json`` in-process: (exit code, parsed JSON or {})."""

    def run(*args: str) -> tuple[int, dict[str, Any]]:
        code = main(["check", "--cache-dir", str(cache_dir), "--format", "json", *args])
        out = capsys.readouterr().out
        return code, json.loads(out) if out.strip() else {}

    return run


def probe(result: dict[str, Any], name: str) -> dict[str, Any]:
    return next(p for p in result["probes"] if p["name"] == name)
