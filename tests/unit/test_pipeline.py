"""The expansion's metadata prefetch: once every release on the listing has its metadata cached, a run that finds
the same listing skips the lookups; a new listing, a release not fetched or another Python looks again. And the
bulk steps' garbage collection of young objects only."""

from __future__ import annotations

import gc
import os
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from stackmatrix.errors import InfraUnavailable
from stackmatrix.pipeline.session import prefetch_metadata, young_only
from stackmatrix.wheels.index import VersionNotFound


@dataclass(frozen=True)
class File:
    filename: str
    key: str
    yanked: bool = False


@dataclass
class Facts:
    versions_: list[str]
    platform: str = "x86_64"
    asked: list[tuple[str, str]] = field(default_factory=list)
    failing: dict[str, type[Exception]] = field(default_factory=dict)

    def versions(self, project: str) -> list[str]:
        return self.versions_

    def wheel(self, project: str, version: str, python: str) -> str:
        if version in self.failing:
            error = self.failing[version]
            raise error(project, version, []) if error is VersionNotFound else error("index unreachable")
        return f"{project}-{version}-{python}"

    def requires(self, wheel: str) -> dict[str, Any]:
        self.asked.append((wheel, "requires"))
        return {}


def session(tmp_path: Path, facts: Facts, files: list[File]) -> Any:
    index = SimpleNamespace(files=lambda project: files)
    return SimpleNamespace(
        facts=facts, index=index, reader=SimpleNamespace(root=tmp_path), settings=SimpleNamespace(jobs=2)
    )


def test_a_warm_listing_is_not_looked_up_again(tmp_path: Path) -> None:
    files = [File("vllm-1.0-py3-none-any.whl", "a"), File("vllm-1.1-py3-none-any.whl", "b")]
    facts = Facts(["1.0", "1.1"], failing={"1.1": VersionNotFound})  # no wheel for it: nothing to fetch, ever
    prefetch_metadata(session(tmp_path, facts, files), "vllm", "3.12")
    assert len(facts.asked) == 1
    prefetch_metadata(session(tmp_path, facts, files), "vllm", "3.12")
    assert len(facts.asked) == 1  # the marker: every release's metadata is cached
    prefetch_metadata(session(tmp_path, facts, files), "vllm", "3.10")
    assert len(facts.asked) == 2  # another Python picks other wheels
    newer = [*files, File("vllm-1.2-py3-none-any.whl", "c")]
    facts.versions_.append("1.2")
    prefetch_metadata(session(tmp_path, facts, newer), "vllm", "3.12")
    assert len(facts.asked) == 4  # a new release on the listing: looked up again


def test_a_release_not_fetched_is_fetched_next_time(tmp_path: Path) -> None:
    files = [File("vllm-1.0-py3-none-any.whl", "a"), File("vllm-1.1-py3-none-any.whl", "b")]
    facts = Facts(["1.0", "1.1"], failing={"1.1": InfraUnavailable})
    prefetch_metadata(session(tmp_path, facts, files), "vllm", "3.12")
    facts.failing.clear()
    prefetch_metadata(session(tmp_path, facts, files), "vllm", "3.12")
    assert len(facts.asked) == 3
    prefetch_metadata(session(tmp_path, facts, files), "vllm", "3.12")
    assert len(facts.asked) == 3


def test_a_fifo_planted_as_the_marker_never_hangs(tmp_path: Path) -> None:
    (tmp_path / "prefetched").mkdir()
    os.mkfifo(tmp_path / "prefetched" / "vllm-3.12-x86_64")
    facts = Facts(["1.0"])
    prefetch_metadata(session(tmp_path, facts, [File("vllm-1.0-py3-none-any.whl", "a")]), "vllm", "3.12")
    assert len(facts.asked) == 1


def test_young_only_leaves_the_heap_out_and_an_outer_freeze_alone() -> None:
    before = gc.get_freeze_count()
    with young_only():
        assert gc.get_freeze_count() > before
    assert gc.get_freeze_count() == before
    gc.freeze()
    try:
        frozen = gc.get_freeze_count()
        with young_only():
            pass
        assert gc.get_freeze_count() == frozen
    finally:
        gc.unfreeze()
