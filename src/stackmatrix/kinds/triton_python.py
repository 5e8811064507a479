"""``triton-python``: Triton's Python backend running transformers (the decoupled-streaming design of a simple
Gemma-on-Triton server), on the release's ``py3`` image. No vLLM: transformers runs the architecture itself, so the
static tier has no ``arch`` or ``backend-imports`` rung, and the runtime tier serves through a real tritonserver."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING

import stackmatrix.kinds.tritonbase as tritonbase
from stackmatrix.domain import Cell, Outcome, Stack, StackKind
from stackmatrix.errors import BadInput
from stackmatrix.kinds.vllm import own_server
from stackmatrix.matrix.pins import (
    IndexView,
    StackChange,
    WheelView,
    check_version,
    known_transformers,
    newer,
    python_of,
)
from stackmatrix.runners.images import PYTHON_VARIANT, ImagePlan, TritonImages

if TYPE_CHECKING:
    from stackmatrix.domain import TritonRelease
    from stackmatrix.ladder.runtime import Ladder, Placement, RuntimeContext
    from stackmatrix.ladder.static import StaticRung
    from stackmatrix.matrix.file import StackRule
    from stackmatrix.runners import Env, Traits
    from stackmatrix.wheels.stage import Target

KIND = StackKind.TRITON_PYTHON
IMAGE = "triton-python"
VARIANT = PYTHON_VARIANT  # the Triton image with the Python backend only
CATALOG: tuple[str, ...] = ("models", "gpus", "triton")
# No vLLM bound to pick by: the one rule is the newest release (check's default too).
DEFAULT_TRANSFORMERS = "@newest"


def _transformers(index: IndexView, item: str, where: str, key: str) -> str:
    if item == DEFAULT_TRANSFORMERS:
        return index.newest("transformers")
    if item.startswith("@"):
        raise BadInput(where, key, item, f"a transformers version or {DEFAULT_TRANSFORMERS} (no vLLM bound to pick by)")
    return item


def check_rule(rule: StackRule, where: str, key: str) -> None:
    if rule.vllm is not None or not rule.transformers:
        raise BadInput(
            where, key, str(rule.kind), "kind 'triton-python' with 'triton' and 'transformers' and no 'vllm'"
        )
    tritonbase.check_releases(rule, where, key)


def expand(
    rule: StackRule, releases: Sequence[TritonRelease], index: IndexView, python: str, where: str, key: str
) -> Iterator[Stack]:
    known = set(index.versions("transformers"))
    for release, rpy in tritonbase.releases_with_python(releases, python):
        for t in rule.transformers or []:
            known_transformers(t, known, where, f"{key}.transformers")
            yield Stack(KIND, None, _transformers(index, t, where, f"{key}.transformers"), rpy, triton=release.release)


def resolve(
    release: TritonRelease | None,
    vllm: str | None,
    transformers: str | None,
    index: WheelView,
    python: str,
    where: str,
) -> Stack:
    release = tritonbase.need(release)
    rpy = python_of(release.python, python)
    if vllm is not None:
        raise BadInput(where, "vllm", vllm, "no vLLM in a triton-python stack (Python backend + transformers)")
    tf = _transformers(index, transformers or DEFAULT_TRANSFORMERS, where, "transformers")
    return Stack(KIND, None, check_version(index, "transformers", tf, rpy, where), rpy, triton=release.release)


def static_rungs() -> tuple[StaticRung, ...]:
    from stackmatrix.ladder import driver, static  # the probes read wheels: only the ladder pays for their imports

    # no kernel rung: transformers, not vLLM, runs the checkpoint (vLLM's quantization kernels are not used)
    return (static.RESOLVE_PYTHON_BACKEND, static.MODEL_TYPE, static.FIT, driver.DRIVER)


def requirements(stack: Stack, device: str) -> list[str]:
    """transformers, a torch (the newest the index has unless overridden, e.g. ``torch==2.13.0+cpu``) and numpy<2
    (FACTS §7: numpy 2 breaks the Python backend of Triton 2.51.0)."""
    return [f"transformers=={stack.transformers}", "torch", "numpy<2"]


def image(stack: Stack, triton: TritonImages) -> ImagePlan | None:
    # On Triton's own image, in a venv made by the image's python3 (the libpython the backend's stub links).
    return ImagePlan(IMAGE, triton.ref(stack.triton or "", VARIANT))


def derived_image(stack: Stack, triton: TritonImages) -> ImagePlan | None:
    return ImagePlan(IMAGE, triton.ref(stack.triton or "", VARIANT))


def changes(
    stack: Stack, releases: Sequence[str], vllms: Sequence[str], transformers: Sequence[str]
) -> Iterator[StackChange]:
    r = stack.triton or ""
    for later in releases[releases.index(r) + 1 :] if r in releases else []:
        yield StackChange(f"Triton {later}, Python backend", triton=later, kind=str(KIND))
    for t in newer(transformers, stack.transformers):
        yield StackChange(f"transformers {t} in Triton {r}'s Python backend", triton=r, transformers=t, kind=str(KIND))
    yield from own_server(None, vllms[-1:], " instead of Triton")


def stage_target(stack: Stack, base_python: str) -> Target | None:
    return tritonbase.stage_target(stack, stack.stock)


def not_runnable(cell: Cell, runner: Traits, cpu_builds: Callable[[], list[str]]) -> Outcome | None:
    return None if runner.containers else tritonbase.needs_container(cell)


def observed_with(stack: Stack, rctx: RuntimeContext) -> str:
    return ""


def runtime_ladder(env: Env, rctx: RuntimeContext, ladder: Ladder, placement: Placement) -> list[Outcome]:
    from stackmatrix.ladder.triton_serve import python_backend_rungs

    return python_backend_rungs(env, rctx, ladder, placement)
