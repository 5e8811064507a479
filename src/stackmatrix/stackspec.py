"""A stack named on the command line or in a policy: ``triton=26.04``, ``vllm=0.22.1,transformers=5.6.0``,
``triton=26.03,vllm=0.22.1`` (a Triton release with upgrades inside the container). Resolved against the
catalog and the index into a concrete Stack: omitted pins get the same defaults as ``check``."""

from __future__ import annotations

import re
from dataclasses import dataclass

from stackmatrix.domain import Stack, StackKind, Target
from stackmatrix.errors import BadInput
from stackmatrix.expand import transformers_for
from stackmatrix.pipeline import Loaded, Session
from stackmatrix.wheels.index import VersionNotFound

KEYS = ("triton", "vllm", "transformers", "kind")


@dataclass(frozen=True)
class StackSpec:
    triton: str | None = None
    vllm: str | None = None
    transformers: str | None = None
    kind: str | None = None  # "triton-python": Triton's Python backend with transformers (no vLLM)

    def __str__(self) -> str:
        return ",".join(f"{k}={getattr(self, k)}" for k in KEYS if getattr(self, k)) or "(newest vllm)"


def parse_spec(text: str, where: str = "--candidate") -> StackSpec:
    pins: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = (s.strip() for s in part.partition("="))
        if not sep or key not in KEYS or not value:
            raise BadInput(where, key or part, part, f"key=value pairs with keys {', '.join(KEYS)}")
        if key in pins:
            raise BadInput(where, key, part, "each key once")
        pins[key] = value
    if not pins:
        raise BadInput(where, "stack", text, "e.g. triton=26.04, or vllm=0.22.1,transformers=5.6.0")
    return StackSpec(**pins)


def check_version(session: Session, project: str, version: str, python: str, where: str) -> None:
    try:
        session.facts.wheel(project, version, python)
    except VersionNotFound as exc:
        raise BadInput(
            where,
            project,
            version,
            f"a {project} version on the index (version-not-found; newest: {', '.join(exc.known[-3:])})",
        ) from None


def resolve_stack(spec: StackSpec, session: Session, loaded: Loaded, where: str = "--candidate") -> Stack:
    """No triton: vLLM's own server (default the newest vLLM and the newest transformers it accepts); triton
    alone: the stock container; triton with vllm and/or transformers: the upgrade inside that container;
    kind triton-python: Triton's Python backend with transformers (default the newest)."""
    py = loaded.spec.settings.python
    if spec.kind is not None and spec.kind not in {str(k) for k in StackKind}:
        raise BadInput(where, "kind", spec.kind, ", ".join(str(k) for k in StackKind))
    if spec.triton is None:
        if spec.kind not in (None, StackKind.VLLM):
            raise BadInput(where, "triton", None, f"a Triton release for a {spec.kind} stack")
        vllm = spec.vllm or session.facts.versions("vllm")[-1]
        check_version(session, "vllm", vllm, py, where)
        tf = spec.transformers or transformers_for(session.facts, vllm, "@newest-allowed", py)
        if tf is None:
            raise BadInput(where, "vllm", vllm, "a vLLM whose transformers bound some release satisfies")
        check_version(session, "transformers", tf, py, where)
        return Stack(StackKind.VLLM, vllm, tf, py)
    rel = loaded.catalog.triton.get(spec.triton)
    if rel is None:
        raise BadInput(where, "triton", spec.triton, f"a catalog release ({', '.join(loaded.catalog.triton)})")
    rpy = ".".join(rel.python.split(".")[:2]) if rel.python else py
    if spec.kind == StackKind.TRITON_PYTHON:
        if spec.vllm is not None:
            raise BadInput(where, "vllm", spec.vllm, "no vLLM in a triton-python stack (Python backend + transformers)")
        tf = spec.transformers or session.facts.versions("transformers")[-1]
        check_version(session, "transformers", tf, rpy, where)
        return Stack(StackKind.TRITON_PYTHON, None, tf, rpy, triton=rel.release)
    if spec.vllm is None and spec.transformers is None:
        stock_tf = (
            transformers_for(session.facts, rel.vllm_public, "@release-day", rpy, before=rel.cutoff)
            if rel.vllm_public
            else None
        )
        return Stack(
            StackKind.TRITON_VLLM, rel.vllm_public, stock_tf, rpy, triton=rel.release, transformers_rule="@release-day"
        )
    inside = spec.vllm or rel.vllm_public
    if inside is None:
        raise BadInput(where, "vllm", None, f"a vLLM version (the one in Triton {rel.release} is not known)")
    check_version(session, "vllm", inside, rpy, where)
    tf = spec.transformers or transformers_for(session.facts, inside, "@newest-allowed", rpy)
    if tf is None:
        raise BadInput(where, "transformers", None, "a transformers version")
    check_version(session, "transformers", tf, rpy, where)
    return Stack(StackKind.TRITON_VLLM, inside, tf, rpy, triton=rel.release)


_TARGET = re.compile(r"^(?P<gpu>.+?)x(?P<count>\d+)$")


def parse_target(text: str, loaded: Loaded, where: str = "--gpu") -> Target:
    """A matrix target name, or ``<gpu>x<count>`` with a catalog GPU (tp = count)."""
    spec = loaded.spec.targets.get(text)
    catalog = loaded.catalog
    if spec is not None:
        return Target(text, catalog.gpus[spec.gpu], spec.count, spec.tp)
    m = _TARGET.match(text.lower())
    if m:
        norm = m.group("gpu").replace("-", "")
        hits = [g for g in catalog.gpus.values() if g.name.lower().replace("-", "").startswith(norm)]
        if len(hits) == 1:
            count = int(m.group("count"))
            return Target(text.lower(), hits[0], count, count)
    raise BadInput(
        where,
        "gpu",
        text,
        f"a matrix target ({', '.join(loaded.spec.targets)}) or <gpu>x<count> with a GPU of the "
        f"catalog ({', '.join(catalog.gpus)})",
    )
