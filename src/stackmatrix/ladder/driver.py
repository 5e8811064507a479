"""The ``driver`` rung: does the target's NVIDIA driver run the stack's CUDA?

What the stack needs comes from two places, each with its source (FACTS-style, in ``matrix/``):
- a Triton container: the CUDA its release is based on and the driver NVIDIA's release notes require, with the
  older branches its forward-compatibility package allows on data-centre GPUs (``matrix/triton.toml``);
- a vLLM installed from the index (vLLM's own server, or the upgrade inside a container): the CUDA runtime of the
  torch wheel it pins, read from that wheel's requirements, and NVIDIA's table of the driver each CUDA toolkit
  needs, with its minor-version compatibility floor (``matrix/cuda.toml``).

A target that declares no driver is not judged: the rung says what the stack would need and does not block
(vllm-project/vllm#4940 and #5283: error 804 on driver 535 with a CUDA 12.4 image on a GPU without forward
compatibility is the failure this rung predicts).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from stackmatrix.domain import Cell, Outcome, Reason, Rung, Status, Target
from stackmatrix.ladder.static import Context, StaticRung

# torch's CUDA: nvidia-cuda-runtime-cu12==12.8.90 (torch <= 2.10), cuda-toolkit[cudart,...]==13.0.2 (torch >= 2.11)
_RUNTIME = re.compile(r"^(nvidia-cuda-runtime(-cu\d+)?|cuda-toolkit)$")
_LOCAL_CUDA = re.compile(r"\+cu(\d+)(\d)\b")  # a wheel's local version, "+cu129" -> CUDA 12.9


@dataclass(frozen=True)
class Need:
    """What one part of the stack needs of the driver."""

    what: str  # "Triton 25.01's container (CUDA 12.8.0.038)"
    cuda: str
    driver: str  # the minimum driver, a version or a branch ("570")
    source: str
    forward_compat: tuple[str, ...] = ()  # older drivers its forward compatibility allows on data-centre GPUs
    minor_compat: str | None = None  # its CUDA major's floor through minor-version compatibility, where it applies


@dataclass(frozen=True)
class Judged:
    status: Status
    detail: str
    caveat: str = ""


def _version(text: str) -> Version | None:
    try:
        return Version(text)
    except InvalidVersion:
        return None


def at_least(driver: str, minimum: str) -> bool:
    """``driver`` is ``minimum`` or newer: a bare branch ("570") is its first release."""
    d, m = _version(driver), _version(minimum)
    return d is not None and m is not None and d >= m


def branch(driver: str) -> str:
    return driver.split(".")[0]


def cuda_minor(version: str) -> str:
    """``12.8.0.038`` or ``12.8.90`` -> ``12.8``."""
    return ".".join(version.split(".")[:2])


def judge(need: Need, target: Target) -> Judged:
    """One need against the target's driver (which the caller checked is declared)."""
    driver = target.driver or ""
    said = f"the target's driver {driver}"  # where it was declared: the evidence
    if at_least(driver, need.driver):
        return Judged(Status.PASS, f"{said} runs {need.what}: it needs {need.driver} or later ({cite(need.source)})")
    allowed = [f for f in need.forward_compat if branch(f) == branch(driver) and at_least(driver, f)]
    if allowed and target.gpu.datacenter:
        why = (
            f"{need.what} needs {need.driver}, but its forward compatibility allows R{branch(driver)} from "
            f"{allowed[0]} on a data-centre GPU ({target.gpu.name}) ({cite(need.source)})"
        )
        caveat = f"driver {driver} runs {need.what} through forward compatibility (R{branch(driver)}, data-centre GPU)"
        return Judged(Status.PASS, f"{said}: {why}", caveat)
    if need.minor_compat is not None and at_least(driver, need.minor_compat):
        why = (
            f"{need.what} needs {need.driver} for every feature; CUDA minor-version compatibility runs it from "
            f"{need.minor_compat} without PTX JIT ({cite(need.source)})"
        )
        caveat = (
            f"driver {driver} runs CUDA {need.cuda} through minor-version compatibility "
            f"({need.driver} for every feature; no PTX JIT)"
        )
        return Judged(Status.PASS, f"{said}: {why}", caveat)
    branches = ", ".join(f"R{branch(f)} from {f}" for f in need.forward_compat)
    also = ""
    if branches:
        gpu = target.gpu.name + ("" if target.gpu.datacenter else ", not a data-centre GPU")
        also = f"; forward compatibility allows {branches} on data-centre GPUs ({gpu})"
    if need.minor_compat is not None:
        also += f"; CUDA minor-version compatibility needs {need.minor_compat} or later"
    return Judged(Status.FAIL, f"{said} is older than the {need.driver} {need.what} needs ({cite(need.source)}){also}")


def cite(source: str) -> str:
    """A source as a message names it: without the sentence it quotes (the evidence keeps that)."""
    return source.split(": '", 1)[0]


# -- what the stack needs ------------------------------------------------------------------------------
def container_need(cell: Cell, ctx: Context) -> Need | str:
    """The Triton release's container: NVIDIA's release notes (the driver, and the older branches its forward
    compatibility allows); where they give no number ("Please see CUDA Compatibility", 26.06 on), the driver the
    container's CUDA ships with, with that CUDA family's minor-version compatibility."""
    rel = ctx.catalog.triton[cell.stack.triton or ""]
    what = f"Triton {rel.release}'s container (CUDA {rel.cuda})"
    if rel.min_driver:
        return Need(what, rel.cuda or "unknown", rel.min_driver, rel.driver_source, rel.forward_compat)
    if rel.cuda is None:
        return f"the CUDA of Triton {rel.release} is not in the catalog ({rel.source})"
    toolkit = ctx.catalog.cuda.get(cuda_minor(rel.cuda))
    driver, source = (toolkit.driver, toolkit.source) if toolkit else (rel.driver, f"the catalog's row: {rel.source}")
    if driver is None:
        return f"the driver CUDA {rel.cuda} needs is not in the catalog (matrix/cuda.toml, matrix/triton.toml)"
    family = ctx.catalog.cuda_families.get(rel.cuda.split(".")[0])
    source += f"; NVIDIA's notes for {rel.release} name no driver"
    if family is None:
        return Need(what, rel.cuda, driver, source)
    return Need(what, rel.cuda, driver, f"{source}; {family.source}", minor_compat=family.driver)


def torch_pin(cell: Cell, ctx: Context) -> str | None:
    """The torch the stack's vLLM wheel pins: its ``==`` version, else the newest the index has in its bound."""
    s = cell.stack
    assert s.vllm is not None
    spec = ctx.facts.dependency_spec("vllm", s.vllm, "torch", s.python)
    if spec is None:
        return None
    pinned = [x.version for x in spec if x.operator in ("==", "===") and "*" not in x.version]
    if pinned:
        return pinned[0]
    fits = [v for v in ctx.facts.versions("torch") if SpecifierSet(str(spec)).contains(v)]
    return fits[-1] if fits else None


def wheel_cuda(cell: Cell, ctx: Context) -> tuple[str, str] | str:
    """(the CUDA of the stack's vLLM from the index, how it was read): the wheel's ``+cuXY`` tag, else the
    CUDA runtime its torch requires; a text saying why not otherwise."""
    s = cell.stack
    assert s.vllm is not None
    vw = ctx.facts.wheel("vllm", s.vllm, s.python)
    local = _LOCAL_CUDA.search(vw.filename)
    if local:
        return f"{local.group(1)}.{local.group(2)}", f"the tag of {vw.filename}"
    torch = torch_pin(cell, ctx)
    if torch is None:
        return f"vllm {s.vllm} declares no torch the index has"
    tw = ctx.facts.wheel("torch", torch, s.python)
    for req in ctx.facts.requirements(tw, s.python):
        pins = [x.version for x in req.specifier if x.operator == "=="]
        if _RUNTIME.match(canonicalize_name(req.name)) and pins:
            return cuda_minor(pins[0]), f"vllm {s.vllm} pins torch {torch}, which requires {req.name}=={pins[0]}"
    return f"torch {torch} ({tw.filename}) requires no CUDA runtime on this platform"


def wheel_need(cell: Cell, ctx: Context) -> Need | str:
    found = wheel_cuda(cell, ctx)
    if isinstance(found, str):
        return found
    cuda, how = found
    what = f"vllm {cell.stack.vllm}'s CUDA {cuda}"
    toolkit = ctx.catalog.cuda.get(cuda)
    if toolkit is None:
        return f"the driver CUDA {cuda} needs is not in the catalog (matrix/cuda.toml; {how})"
    family = ctx.catalog.cuda_families.get(cuda.split(".")[0])
    source = f"{how}; {toolkit.source}"
    if family is None:
        return Need(what, cuda, toolkit.driver, source)
    return Need(what, cuda, toolkit.driver, f"{source}; {family.source}", minor_compat=family.driver)


def installs_vllm(cell: Cell, ctx: Context) -> bool:
    """The stack installs a vLLM from the index: its own server, or a container whose vLLM it replaces."""
    s = cell.stack
    if s.vllm is None:
        return False
    if not s.in_triton:
        return True
    rel = ctx.catalog.triton[s.triton or ""]
    return not s.stock and s.vllm != (rel.vllm_in_image or rel.vllm_public)


def needs(cell: Cell, ctx: Context) -> list[Need | str]:
    out: list[Need | str] = []
    if cell.stack.in_triton:
        out.append(container_need(cell, ctx))
    if installs_vllm(cell, ctx):
        out.append(wheel_need(cell, ctx))
    return out


# -- the rung ------------------------------------------------------------------------------------------
def probe_driver(cell: Cell, ctx: Context) -> Outcome:
    t = cell.target
    found = needs(cell, ctx)
    known = [n for n in found if isinstance(n, Need)]
    unknown = [n for n in found if isinstance(n, str)]
    evidence: dict[str, object] = {
        "driver": t.driver,
        "driver_source": t.driver_source,
        "gpu": t.gpu.name,
        "datacenter": t.gpu.datacenter,
        "needs": [
            {"what": n.what, "driver": n.driver, "forward_compat": list(n.forward_compat), "source": n.source}
            | ({"minor_compat": n.minor_compat} if n.minor_compat else {})
            for n in known
        ],
        "unknown": unknown,
    }
    wants = "; ".join(f"{n.what} needs {n.driver} or later" for n in known)
    if not t.driver:
        detail = f"driver not declared for {t.name}" + (f": {wants}" if wants else "")
        return Outcome(Rung.DRIVER, Status.SKIP, None, detail, evidence)
    judged = [judge(n, t) for n in known]
    failed = [j for j in judged if j.status is Status.FAIL]
    if failed:
        return Outcome(Rung.DRIVER, Status.FAIL, Reason.DRIVER_TOO_OLD, failed[0].detail, evidence)
    if unknown:  # what is known passes; the rest cannot be judged: say so, block nothing
        detail = "; ".join([*(j.detail for j in judged), *unknown])
        return Outcome(Rung.DRIVER, Status.SKIP, None, detail, evidence)
    return _passed(judged, evidence)


def _passed(judged: Sequence[Judged], evidence: dict[str, object]) -> Outcome:
    caveats = [j.caveat for j in judged if j.caveat]
    if caveats:
        evidence = {**evidence, "caveat": "; ".join(caveats)}
    return Outcome(Rung.DRIVER, Status.PASS, None, "; ".join(j.detail for j in judged), evidence)


DRIVER = StaticRung(
    Rung.DRIVER,
    probe_driver,
    lambda c: (c.stack.id, c.target.gpu.name, c.target.driver, c.target.driver_source, c.target.name),
)
