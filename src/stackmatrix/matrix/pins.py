"""How a kind picks its pins: the version rules (``@release-day``, ``@newest-allowed``, ``@newest``) over the
index, and the checks a pin gets where it enters (a matrix rule, a ``check`` flag). Shared by the kind modules;
no kind is named here.

Light on purpose: the CLI's parser reads the kind registry, so the index client (httpx) and the matrix file's
models (pydantic) are imported where a rule is applied, not here."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from functools import cache
from typing import TYPE_CHECKING, NamedTuple, Protocol

from packaging.version import Version

from stackmatrix.errors import BadInput
from stackmatrix.versions import version_text

if TYPE_CHECKING:
    from packaging.specifiers import SpecifierSet

    from stackmatrix.matrix.file import Range


class IndexView(Protocol):
    """What the matrix expansion reads of the index (the ladder's ``Facts``, or a fake in tests)."""

    def versions(self, project: str) -> list[str]: ...
    def newest(self, project: str) -> str: ...
    def upload_time(self, project: str, version: str) -> str | None: ...
    def dependency_spec(self, project: str, version: str, dependency: str, python: str) -> SpecifierSet | None: ...


class Wheel(Protocol):
    @property
    def version(self) -> str: ...


class WheelView(IndexView, Protocol):
    """What ``check``'s flags need besides: the wheel a version names, as the index spells it."""

    def wheel(self, project: str, version: str, python: str) -> Wheel: ...


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


def newest_before(index: IndexView, project: str, before: str) -> str | None:
    """The newest final release of ``project`` uploaded before ``before`` (an ISO date), whatever any bound says."""
    return _newest(index.versions(project), None, before, index, project)


def transformers_for(index: IndexView, vllm: str, rule: str, python: str, before: str | None = None) -> str | None:
    """The transformers a symbolic rule picks for a vLLM release.

    ``@release-day``: what ``pip install vllm==X`` resolved the day X was uploaded (newest allowed by its declared
    bound, uploaded before it, or before ``before`` for a container). ``@newest-allowed``: newest allowed today.
    ``@newest``: newest final release, allowed or not (an override when the bound excludes it).
    """
    from stackmatrix.wheels.index import VersionNotFound

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


def vllm_versions(index: IndexView, items: list[str] | Range, where: str, key: str) -> list[str]:
    """A matrix rule's vLLM list or range, each on the index (``@newest``: the newest)."""
    index.newest("vllm")  # an index listing no vLLM at all is the index's fault (exit 4), not the matrix's
    known = index.versions("vllm")
    if not isinstance(items, list):  # a Range: every release from ``from`` to ``to``
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


def pick_transformers(index: IndexView, vllm: str, item: str, python: str) -> str | None:
    """A transformers item beside ``vllm`` (a version, or a rule) as a version; None when the rule picks none."""
    return transformers_for(index, vllm, item, python) if item.startswith("@") else item


def known_transformers(item: str, known: set[str], where: str, key: str) -> None:
    """A matrix rule's explicit transformers version must be on the index (a rule is applied later)."""
    if not item.startswith("@") and item not in known:
        raise BadInput(where, key, item, "a transformers version on the index")


def python_of(release_python: str | None, default: str) -> str:
    """A Triton release's Python (``3.12.3`` -> ``3.12``), else the matrix's."""
    return ".".join(release_python.split(".")[:2]) if release_python else default


def check_version(index: WheelView, project: str, version: str, python: str, where: str) -> str:
    """The version as the index spells it (``0.19`` -> ``0.19.0``), or exit 2 when the index has no wheel of it."""
    from stackmatrix.wheels.index import VersionNotFound

    version = version_text(version, where, project)
    index.newest(project)  # an index listing no release at all is the index's fault (exit 4), not the flag's
    try:
        return index.wheel(project, version, python).version
    except VersionNotFound as exc:
        raise BadInput(
            where,
            project,
            version,
            f"a {project} version on the index (version-not-found; newest: {', '.join(exc.known[-3:])})",
        ) from None


class StackChange(NamedTuple):
    """A candidate change of a stack (``advise``): the pins of the stack it makes, as ``check``'s flags would
    name them (None: the kind's default), and what it is, in words."""

    text: str
    triton: str | None = None
    vllm: str | None = None
    transformers: str | None = None
    kind: str | None = None


def newer(versions: Sequence[str], than: str | None) -> list[str]:
    """The versions after ``than`` (all of them when there is none), in their order."""
    if than is None:
        return list(versions)
    base = Version(than)
    return [v for v in versions if Version(v) > base]
