"""What each Triton release's image ships, read from its registry before the matrix expands: a release that was
read carries its image's facts (its stock stack's versions and its backend come from them); one that could not be
read carries why (``registry-unreachable``, or no such image), and the catalog is the fallback."""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Iterable
from dataclasses import replace

from stackmatrix.domain import Reason, Stack, StackKind
from stackmatrix.kinds import KINDS, Kind, kind_named
from stackmatrix.matrix.loaded import Loaded
from stackmatrix.pipeline.expand import releases_of
from stackmatrix.pipeline.session import Session
from stackmatrix.pipeline.stackspec import StackSpec
from stackmatrix.registry.client import DigestMismatch, ImageNotFound, RegistryUnreachable
from stackmatrix.registry.reference import parse_ref
from stackmatrix.runners.images import VLLM_VARIANT, TritonImages

NOT_READ = "this site reads no registry (images = none)"
SILENCE = 'a site without a registry sets images = "none" (STACKMATRIX_IMAGES=none) and is not warned'


def reads_backend(kind: Kind) -> bool:
    """A kind whose static tier checks Triton's vLLM backend: its image holds that backend and its versions."""
    return "import_sets" in kind.CATALOG


def matrix_releases(loaded: Loaded) -> list[str]:
    """The releases the matrix's Triton vLLM-backend stacks are made of."""
    out: set[str] = set()
    for rule in loaded.spec.stack:
        if reads_backend(KINDS[StackKind(rule.kind)]):
            out.update(r.release for r in releases_of(rule, loaded.catalog))
    return sorted(out)


def spec_releases(*specs: StackSpec | None) -> list[str]:
    """The releases ``check``'s flags or a gate's stacks name for such a kind."""
    return [s.triton for s in specs if s is not None and s.triton and reads_backend(kind_named(s.kind, s.triton))]


def reads_backend_releases(stacks: Iterable[Stack]) -> list[str]:
    """The releases of those stacks (a task's cells) whose kind reads Triton's vLLM backend."""
    return sorted({s.triton for s in stacks if s.triton and reads_backend(KINDS[s.kind])})


def backend_modules(loaded: Loaded) -> set[str]:
    """The vLLM modules any known backend imports or calls into: worth keeping when an image's vLLM is read."""
    out: set[str] = set()
    for iset in loaded.catalog.import_sets.values():
        out.update(i.module for i in iset.imports)
        out.update(c.target.split(":")[0] for c in (*iset.calls, *iset.attributes))
    return out


def with_images(session: Session, loaded: Loaded, releases: Iterable[str]) -> Loaded:
    """``loaded`` with each of ``releases`` carrying its image's facts or why they are missing; the image
    digests join the catalog's hash (a new image is a new fingerprint for its cells)."""
    wanted = sorted({r for r in releases if r in loaded.catalog.triton})
    if not wanted:
        return loaded
    if session.settings.images == "none":  # said once, by the site: the catalog, no warning, the records say so
        problem = (str(Reason.UNKNOWN), NOT_READ)
        triton = {n: replace(r, image_problem=problem) if n in wanted else r for n, r in loaded.catalog.triton.items()}
        digest = hashlib.sha256(f"{loaded.catalog_hash}\nimages=none".encode()).hexdigest()[:20]
        return replace(loaded, catalog=replace(loaded.catalog, triton=triton), catalog_hash=digest)
    reader = session.images()
    reader.modules = frozenset(backend_modules(loaded))
    images = TritonImages(session.settings.triton_image)
    triton = dict(loaded.catalog.triton)
    learnt: list[str] = []
    missing: dict[str, list[str]] = {}
    for name in wanted:
        rel = triton[name]
        ref = parse_ref(images.ref(name, VLLM_VARIANT), "--triton-image")
        try:
            facts = reader.facts(ref)
        except RegistryUnreachable as exc:
            problem = (str(Reason.REGISTRY_UNREACHABLE), str(exc))
        except ImageNotFound:
            problem = (str(Reason.UNKNOWN), f"no image {ref} in its registry")
        except DigestMismatch as exc:
            problem = (str(Reason.UNKNOWN), str(exc))
        else:
            triton[name] = replace(rel, image=facts)
            learnt.append(f"{name}={facts.digest}")
            continue
        triton[name] = replace(rel, image_problem=problem)
        missing.setdefault(problem[1] if problem[0] == Reason.REGISTRY_UNREACHABLE else problem[0], []).append(name)
    if missing and not session.settings.offline:  # offline: the user said so; each record says what was not read
        n, why = sum(len(v) for v in missing.values()), next(iter(missing))
        print(
            f"stackmatrix: warning: {n} Triton image{'s' * (n != 1)} not read ({why}"
            f"{'; and other reasons' if len(missing) > 1 else ''}): the catalog is the fallback; {SILENCE}",
            file=sys.stderr,
        )
    digest = hashlib.sha256("\n".join([loaded.catalog_hash, *learnt]).encode()).hexdigest()[:20]
    return replace(
        loaded, catalog=replace(loaded.catalog, triton=triton), catalog_hash=digest if learnt else loaded.catalog_hash
    )
