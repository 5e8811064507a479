"""``backend-imports`` from the image as its registry serves it (``registry/``): the Triton vLLM backend's own
source, checked against the vLLM the image ships (its own modules, read from the same layers) or, for a cell that
replaces vLLM, against the replacement's wheel. No Docker engine, no pull."""

from __future__ import annotations

import time
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, cast

from stackmatrix.domain import Cell, Outcome, TritonRelease
from stackmatrix.ladder.facts import Facts
from stackmatrix.ladder.static import (
    BackendSource,
    Context,
    WheelVllm,
    backend_outcome,
    parsed_backend,
    wheel_problems,
    wheel_vllm,
)
from stackmatrix.registry.image import BACKEND_DIR, ImageFacts, parse_backend
from stackmatrix.wheels.index import Index, WheelFile
from stackmatrix.wheels.reader import WheelReader


class _Tree:
    """The image's vLLM modules as a wheel reader's members (what ``Facts`` reads symbols and signatures from)."""

    def __init__(self, files: dict[str, str]) -> None:
        self.files = files

    def lock(self, wheel: WheelFile) -> Any:
        return nullcontext()

    def member(self, wheel: WheelFile, name: str) -> bytes | None:
        text = self.files.get(name)
        return None if text is None else text.encode()

    def fact(self, wheel: WheelFile, key: str, compute: Any) -> Any:
        return compute()


@dataclass
class ImageVllm:
    """The image's own vLLM. A callable its captured modules do not define (a re-export from a module not read)
    is looked up in the public wheel it was built from, and the evidence says so."""

    image: ImageFacts
    fallback: WheelVllm | None

    def __post_init__(self) -> None:
        tree = cast(WheelReader, _Tree(dict(self.image.vllm_modules)))
        self.facts = Facts(cast(Index, None), tree)
        version = self.image.version("vllm") or "?"
        self.wheel = WheelFile("vllm", version, f"image:{self.image.digest}", "", None, None, None, None, False)
        self.from_wheel: list[str] = []

    @property
    def name(self) -> str:
        return f"the image's vllm {self.wheel.version}"

    def symbols(self, module: str) -> dict[str, Any] | None:
        return self.facts.symbols(self.wheel, module)

    def signature(self, target: str) -> dict[str, Any] | None:
        sig = self.facts.signature(self.wheel, target)
        if sig is None and self.fallback is not None:
            self.from_wheel.append(target)
            return self.fallback.signature(target)
        return sig

    def declared(self) -> set[str]:
        from packaging.requirements import InvalidRequirement, Requirement
        from packaging.utils import canonicalize_name

        out: set[str] = set()
        for line in self.image.vllm_requires:
            try:
                req = Requirement(line)
            except InvalidRequirement:
                continue
            if req.marker is None or "extra" not in str(req.marker):
                out.add(canonicalize_name(req.name))
        return out


def image_source(release: TritonRelease, image: ImageFacts) -> BackendSource:
    found = parse_backend(image.backend_files)
    where = f"/{BACKEND_DIR} in {image.ref} ({image.digest}, layer {image.backend_layer})"
    return parsed_backend(f"image {image.digest[:19]}", found, where)


def from_registry(cell: Cell, ctx: Context, release: TritonRelease) -> Outcome:
    t0 = time.perf_counter()
    image = release.image
    assert image is not None
    s = cell.stack
    src = image_source(release, image)
    own = s.stock or s.vllm == release.vllm_in_image  # the vLLM the image ships stays
    evidence: dict[str, Any] = {
        "image": image.ref,
        "digest": image.digest,
        "layer": image.backend_layer,
        "dir": f"/{BACKEND_DIR}",
        "files": [n for n, _ in image.backend_files],
        "source_sha256": image.backend_sha256,
        "imports": {m: list(n) for m, n in src.imports},
    }
    what = f"the vLLM backend in {image.ref}"
    if own and image.vllm_modules:
        shipped = image.where("vllm")
        view = ImageVllm(image, wheel_vllm(cell, ctx) if s.vllm else None)
        problems, checked, _ = wheel_problems(cell, ctx, src, view)
        evidence["vllm"] = {
            "version": view.wheel.version,
            "file": shipped.path if shipped else None,
            "layer": shipped.layer if shipped else None,
            "modules": len(image.vllm_modules),
        }
        if view.from_wheel:
            evidence["read_from_public_wheel"] = view.from_wheel
        out = backend_outcome(what, f"{view.name} (read from the image)", problems, checked, evidence)
    else:
        problems, checked, wheel = wheel_problems(cell, ctx, src)
        note = " (the image's own vLLM modules were not found: its public wheel)" if own else ""
        out = backend_outcome(what, f"vllm {s.vllm}{note}", problems, checked, {**evidence, "wheel": wheel})
    return Outcome(out.probe, out.status, out.reason, out.detail, out.evidence, time.perf_counter() - t0, out.override)
