"""A stack named on the command line or in a policy: ``triton=26.04``, ``vllm=0.22.1,transformers=5.6.0``,
``triton=26.03,vllm=0.22.1`` (a Triton release with upgrades inside the container). Resolved against the
catalog and the index into a concrete Stack: omitted pins get the same defaults as ``check``."""

from __future__ import annotations

import re
from dataclasses import dataclass

from stackmatrix.domain import Gpu, Stack, Target
from stackmatrix.errors import BadInput
from stackmatrix.ids import check_id_part
from stackmatrix.kinds import KINDS, kind_named, release_for
from stackmatrix.matrix import pins
from stackmatrix.matrix.file import target_of
from stackmatrix.matrix.loaded import Loaded
from stackmatrix.pipeline.session import Session
from stackmatrix.versions import release_text, version_text

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
    kinds = [str(k) for k in KINDS]
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
    return pins.check_version(session.facts, project, version, python, where)


def resolve_stack(spec: StackSpec, session: Session, loaded: Loaded, where: str = "--candidate") -> Stack:
    """The concrete stack ``spec`` names, by its kind's rules (the matrix expansion's); its id is checked like
    every id part."""
    stack = _resolve(spec, session, loaded, where)
    check_id_part(stack.id, where, "stack")
    return stack


def _resolve(spec: StackSpec, session: Session, loaded: Loaded, where: str) -> Stack:
    """No triton: vLLM's own server; a triton release: Triton's vLLM backend, unless the kind says otherwise."""
    spec = stack_spec(spec.triton, spec.vllm, spec.transformers, spec.kind, where)
    kind = kind_named(spec.kind, spec.triton)
    release = release_for(kind, spec.triton, loaded.catalog, where)
    return kind.resolve(release, spec.vllm, spec.transformers, session.facts, loaded.spec.settings.python, where)


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
        return target_of(text, spec, catalog, str(loaded.path), loaded.host)
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
