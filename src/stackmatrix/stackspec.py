"""A stack named on the command line or in a policy: ``triton=26.04``, ``vllm=0.22.1,transformers=5.6.0``,
``triton=26.03,vllm=0.22.1`` (a Triton release with upgrades inside the container). Resolved against the
catalog and the index into a concrete Stack: omitted pins get the same defaults as ``check``."""

from __future__ import annotations

import re
from dataclasses import dataclass

from stackmatrix.domain import Gpu, Stack, StackKind, Target
from stackmatrix.errors import BadInput
from stackmatrix.expand import transformers_for
from stackmatrix.ids import check_id_part
from stackmatrix.pipeline import Loaded, Session
from stackmatrix.versions import release_text, version_text
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


def stack_spec(
    triton: str | None, vllm: str | None, transformers: str | None, kind: str | None, where: str
) -> StackSpec:
    """A spec whose pins are checked where they enter: a Triton release YY.MM, PEP 440 versions (normalized),
    a known kind."""
    kinds = [str(k) for k in StackKind]
    if kind is not None and kind not in kinds:
        raise BadInput(where, "kind", kind, ", ".join(kinds))
    return StackSpec(
        release_text(triton, where, "triton") if triton is not None else None,
        version_text(vllm, where, "vllm") if vllm is not None else None,
        version_text(transformers, where, "transformers") if transformers is not None else None,
        kind,
    )


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
    return stack_spec(pins.get("triton"), pins.get("vllm"), pins.get("transformers"), pins.get("kind"), where)


def check_version(session: Session, project: str, version: str, python: str, where: str) -> str:
    """The version as the index spells it (``0.19`` -> ``0.19.0``), or exit 2 when the index has no wheel of it."""
    version = version_text(version, where, project)
    session.facts.newest(project)  # an index listing no release at all is the index's fault (exit 4), not the flag's
    try:
        return session.facts.wheel(project, version, python).version
    except VersionNotFound as exc:
        raise BadInput(
            where,
            project,
            version,
            f"a {project} version on the index (version-not-found; newest: {', '.join(exc.known[-3:])})",
        ) from None


def resolve_stack(spec: StackSpec, session: Session, loaded: Loaded, where: str = "--candidate") -> Stack:
    """The concrete stack ``spec`` names (see ``_resolve``); its id is checked like every id part."""
    stack = _resolve(spec, session, loaded, where)
    check_id_part(stack.id, where, "stack")
    return stack


def _resolve(spec: StackSpec, session: Session, loaded: Loaded, where: str) -> Stack:
    """No triton: vLLM's own server (default the newest vLLM and the newest transformers it accepts); triton
    alone: the stock container; triton with vllm and/or transformers: the upgrade inside that container;
    kind triton-python: Triton's Python backend with transformers (default the newest)."""
    py = loaded.spec.settings.python
    spec = stack_spec(spec.triton, spec.vllm, spec.transformers, spec.kind, where)
    if spec.triton is None:
        if spec.kind not in (None, StackKind.VLLM):
            raise BadInput(where, "triton", None, f"a Triton release for a {spec.kind} stack")
        vllm = check_version(session, "vllm", spec.vllm or session.facts.newest("vllm"), py, where)
        tf = spec.transformers or transformers_for(session.facts, vllm, "@newest-allowed", py)
        if tf is None:
            raise BadInput(where, "vllm", vllm, "a vLLM whose transformers bound some release satisfies")
        return Stack(StackKind.VLLM, vllm, check_version(session, "transformers", tf, py, where), py)
    rel = loaded.catalog.triton.get(spec.triton)
    if rel is None:
        raise BadInput(where, "triton", spec.triton, f"a catalog release ({', '.join(loaded.catalog.triton)})")
    rpy = ".".join(rel.python.split(".")[:2]) if rel.python else py
    if spec.kind == StackKind.TRITON_PYTHON:
        if spec.vllm is not None:
            raise BadInput(where, "vllm", spec.vllm, "no vLLM in a triton-python stack (Python backend + transformers)")
        tf = check_version(
            session, "transformers", spec.transformers or session.facts.newest("transformers"), rpy, where
        )
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
    inside = check_version(session, "vllm", inside, rpy, where)
    tf = spec.transformers or transformers_for(session.facts, inside, "@newest-allowed", rpy)
    if tf is None:
        raise BadInput(where, "transformers", None, "a transformers version")
    return Stack(
        StackKind.TRITON_VLLM, inside, check_version(session, "transformers", tf, rpy, where), rpy, triton=rel.release
    )


_TARGET = re.compile(r"^(?P<gpu>.+?)x(?P<count>[1-9]\d{0,2})$")


def _gpu_named(name: str, loaded: Loaded) -> Gpu | None:
    """The catalog GPU ``name`` names: exactly (``l4`` is L4, not L40S), else as the one GPU it is a prefix of."""
    norm = name.replace("-", "")
    gpus = {g.name.lower().replace("-", ""): g for g in loaded.catalog.gpus.values()}
    if norm in gpus:
        return gpus[norm]
    hits = [g for key, g in gpus.items() if key.startswith(norm)]
    return hits[0] if len(hits) == 1 else None


def parse_target(text: str, loaded: Loaded, where: str = "--gpu") -> Target:
    """A matrix target name, or ``<gpu>x<count>`` with a catalog GPU (tp = count, 1 to 999)."""
    spec = loaded.spec.targets.get(text)
    catalog = loaded.catalog
    if spec is not None:
        return Target(text, catalog.gpus[spec.gpu], spec.count, spec.tp)
    m = _TARGET.match(text.lower())
    gpu = _gpu_named(m.group("gpu"), loaded) if m else None
    if m and gpu is not None:
        count = int(m.group("count"))
        return Target(check_id_part(text.lower(), where, "gpu"), gpu, count, count)
    raise BadInput(
        where,
        "gpu",
        text,
        f"a matrix target ({', '.join(loaded.spec.targets)}) or <gpu>x<count> (count 1-999) with a GPU of the "
        f"catalog ({', '.join(catalog.gpus)})",
    )
