"""Matrix file -> cells. Version rules resolve against the index (through :class:`IndexView`)."""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from typing import Protocol

from packaging.specifiers import SpecifierSet
from packaging.version import Version

from stackmatrix.catalog import Catalog
from stackmatrix.domain import Cell, Stack, StackKind, Target
from stackmatrix.errors import BadInput
from stackmatrix.ids import check_id_part
from stackmatrix.matrixfile import MatrixFile, Range
from stackmatrix.wheels.index import VersionNotFound


class IndexView(Protocol):
    def versions(self, project: str) -> list[str]: ...
    def newest(self, project: str) -> str: ...
    def upload_time(self, project: str, version: str) -> str | None: ...
    def dependency_spec(self, project: str, version: str, dependency: str, python: str) -> SpecifierSet | None: ...


@dataclass(frozen=True)
class Expansion:
    cells: tuple[Cell, ...]
    excluded: tuple[tuple[str, str], ...]  # (cell id, reason)


@cache
def _v(text: str) -> Version:
    return Version(text)


def _newest(
    versions: Iterable[str],
    spec: SpecifierSet | None = None,
    before: str | None = None,
    index: IndexView | None = None,
    project: str = "",
) -> str | None:
    ok = []
    for v in versions:
        if spec is not None and not spec.contains(_v(v), prereleases=False):
            continue
        if before is not None and index is not None:
            t = index.upload_time(project, v)
            if t is None or t >= before:
                continue
        ok.append(v)
    return max(ok, key=_v) if ok else None


def transformers_for(index: IndexView, vllm: str, rule: str, python: str, before: str | None = None) -> str | None:
    """The transformers a symbolic rule picks for a vLLM release.

    ``@release-day``: what ``pip install vllm==X`` resolved the day X was uploaded (newest allowed by its declared
    bound, uploaded before it, or before ``before`` for a container). ``@newest-allowed``: newest allowed today.
    ``@newest``: newest final release, allowed or not (an override when the bound excludes it).
    """
    tf = index.versions("transformers")
    if rule == "@newest":
        return _newest(tf)
    try:
        spec = index.dependency_spec("vllm", vllm, "transformers", python)
    except VersionNotFound:  # no wheel of this vLLM for the Python: no pick (its resolve probe says why)
        return None
    if rule == "@newest-allowed":
        return _newest(tf, spec)
    cutoff = before or index.upload_time("vllm", vllm)
    return _newest(tf, spec, cutoff, index, "transformers") if cutoff else _newest(tf, spec)


def _vllm_versions(index: IndexView, items: list[str] | Range, where: str, key: str) -> list[str]:
    index.newest("vllm")  # an index listing no vLLM at all is the index's fault (exit 4), not the matrix's
    known = index.versions("vllm")
    if isinstance(items, Range):
        lo, hi = Version(items.from_), Version(items.to) if items.to else None
        return [v for v in known if Version(v) >= lo and (hi is None or Version(v) <= hi)]
    out = []
    for item in items:
        if item == "@newest":
            out.append(index.newest("vllm"))
        elif item not in known:
            raise BadInput(where, key, item, "a vllm version on the index (version-not-found)")
        else:
            out.append(item)
    return out


def _python(release_python: str | None, default: str) -> str:
    return ".".join(release_python.split(".")[:2]) if release_python else default


def expand_stacks(spec: MatrixFile, catalog: Catalog, index: IndexView, where: str) -> list[Stack]:
    py = spec.settings.python
    tf_known = set(index.versions("transformers"))
    stacks: dict[str, Stack] = {}
    for i, rule in enumerate(spec.stack):
        key = f"stack[{i}]"
        if rule.kind == "vllm":
            assert rule.vllm is not None and rule.transformers
            for v in _vllm_versions(index, rule.vllm, where, f"{key}.vllm"):
                for t in rule.transformers:
                    tf = transformers_for(index, v, t, py) if t.startswith("@") else t
                    if not t.startswith("@") and t not in tf_known:
                        raise BadInput(where, f"{key}.transformers", t, "a transformers version on the index")
                    if tf is None:
                        continue
                    s = Stack(StackKind.VLLM, v, tf, py)
                    stacks.setdefault(s.id, s)
            continue
        releases = list(catalog.triton)
        if isinstance(rule.triton, Range):
            lo, hi = rule.triton.from_, rule.triton.to or releases[-1]
            chosen = [r for r in releases if lo <= r <= hi]
        else:
            chosen = list(rule.triton or [])
        for r in chosen:
            rel = catalog.triton[r]
            rpy = _python(rel.python, py)
            if rule.kind == "triton-python":  # Triton's Python backend running transformers: no vLLM
                for t in rule.transformers or []:
                    tf = index.newest("transformers") if t == "@newest" else t
                    if not t.startswith("@") and t not in tf_known:
                        raise BadInput(where, f"{key}.transformers", t, "a transformers version on the index")
                    s = Stack(StackKind.TRITON_PYTHON, None, tf, rpy, triton=r)
                    stacks.setdefault(s.id, s)
                continue
            if rule.vllm is None and rule.transformers is None:  # the stock container
                tf = (
                    transformers_for(index, rel.vllm_public, "@release-day", rpy, before=rel.cutoff)
                    if rel.vllm_public
                    else None
                )
                s = Stack(StackKind.TRITON_VLLM, rel.vllm_public, tf, rpy, triton=r, transformers_rule="@release-day")
                stacks.setdefault(s.id, s)
                continue
            if rule.vllm:
                vllms = _vllm_versions(index, rule.vllm, where, f"{key}.vllm")
            else:  # only transformers replaced: the container's vLLM stays
                vllms = [rel.vllm_public] if rel.vllm_public else []
            for v in vllms:
                for t in rule.transformers or ["@newest-allowed"]:
                    tf = transformers_for(index, v, t, rpy) if t.startswith("@") else t
                    if tf is None:
                        continue
                    s = Stack(StackKind.TRITON_VLLM, v, tf, rpy, triton=r)
                    stacks.setdefault(s.id, s)
    return list(stacks.values())


def expand(spec: MatrixFile, catalog: Catalog, index: IndexView, where: str) -> Expansion:
    stacks = expand_stacks(spec, catalog, index, where)
    for stack in stacks:  # made of checked versions and releases; its length is checked here
        check_id_part(stack.id, where, "stack")
    models = catalog.models_matching(spec.models.include)
    targets = [Target(name, catalog.gpus[t.gpu], t.count, t.tp) for name, t in spec.targets.items()]
    cells: list[Cell] = []
    excluded: list[tuple[str, str]] = []
    for stack in stacks:
        for model in models:
            for target in targets:
                cell = Cell(stack, model, target)
                hit = next((e for e in spec.exclude if fnmatch.fnmatchcase(cell.id, e.cells)), None)
                if hit:
                    excluded.append((cell.id, hit.reason))
                else:
                    cells.append(cell)
    cells.sort(key=lambda c: c.id)
    return Expansion(tuple(cells), tuple(excluded))
