"""Stack kinds: one module per kind behind the ``Kind`` protocol, and the registry every caller reads
(cibuildwheel's ``platforms/`` + ``ALL_PLATFORM_MODULES`` habit).

A kind module holds everything that differs between kinds (``Kind`` lists it), so code outside this package looks
the kind up here instead of branching on it; ``tests/unit/test_kinds.py`` fails when a ``StackKind`` has no module
or a module lacks a part. Adding ``triton-trtllm`` or ``sglang`` is one module and one entry below.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Final, Protocol

from stackmatrix.domain import NAMING, StackKind
from stackmatrix.errors import BadInput
from stackmatrix.kinds import triton_python, triton_vllm, vllm

if TYPE_CHECKING:
    from stackmatrix.domain import Cell, Outcome, Stack, TritonRelease
    from stackmatrix.ladder.runtime import Ladder, Placement, RuntimeContext
    from stackmatrix.ladder.static import StaticRung
    from stackmatrix.matrix.catalog import Catalog
    from stackmatrix.matrix.file import StackRule
    from stackmatrix.matrix.pins import IndexView, StackChange, WheelView
    from stackmatrix.runners import Env, Traits
    from stackmatrix.runners.images import ImagePlan, TritonImages
    from stackmatrix.wheels.stage import Target as StageTarget


class Kind(Protocol):
    """What every module of this package provides (module-level names; mypy checks each entry of ``KINDS``)."""

    KIND: StackKind
    IMAGE: str  # its cell image's template: images/<IMAGE>/Dockerfile
    CATALOG: tuple[str, ...]  # the catalog tables it reads (Catalog attributes); "triton": it runs in a release

    def check_rule(self, rule: StackRule, where: str, key: str) -> None:
        """A matrix rule of this kind names the pins it takes (exit 2 naming ``where`` and ``key`` when not),
        checked before it expands."""
        ...

    def expand(
        self,
        rule: StackRule,
        releases: Sequence[TritonRelease],
        index: IndexView,
        python: str,
        where: str,
        key: str,
    ) -> Iterator[Stack]:
        """The stacks a matrix rule names (``releases``: the rule's Triton releases, empty without any)."""
        ...

    def resolve(
        self,
        release: TritonRelease | None,
        vllm: str | None,
        transformers: str | None,
        index: WheelView,
        python: str,
        where: str,
    ) -> Stack:
        """The stack ``check``'s flags (or a policy's stack) name: omitted pins get the expansion's defaults."""
        ...

    def static_rungs(self) -> tuple[StaticRung, ...]: ...

    def requirements(self, stack: Stack, device: str) -> list[str]:
        """What the stack installs (``device``: "cpu" takes vLLM's CPU build)."""
        ...

    def image(self, stack: Stack, triton: TritonImages) -> ImagePlan | None:
        """How the docker runner builds the stack's cell image; None: no runtime image wired for it yet."""
        ...

    def derived_image(self, stack: Stack, triton: TritonImages) -> ImagePlan | None:
        """The image a change inside a Triton release's container makes (what ``advise`` names for it): the
        kind's template on the release's image; None for a stack that changes no container."""
        ...

    def changes(
        self, stack: Stack, releases: Sequence[str], vllms: Sequence[str], transformers: Sequence[str]
    ) -> Iterator[StackChange]:
        """The candidate changes from one of its stacks (``advise``): newer releases of the kind, what can be
        replaced inside its container, the switches of kind worth checking."""
        ...

    def stage_target(self, stack: Stack, base_python: str) -> StageTarget | None:
        """The interpreter and platform its wheels are staged for; None: it installs nothing."""
        ...

    def not_runnable(self, cell: Cell, runner: Traits, cpu_builds: Callable[[], list[str]]) -> Outcome | None:
        """Why ``runner`` cannot climb the cell's runtime ladder here (the env rung's skip), or None."""
        ...

    def observed_with(self, stack: Stack, rctx: RuntimeContext) -> str:
        """What its ladder runs besides the environment's lock, the checkpoint and the probes (e.g. a Triton
        release's backend source): part of the key its stored observations are found by ("" for nothing)."""
        ...

    def runtime_ladder(self, env: Env, rctx: RuntimeContext, ladder: Ladder, placement: Placement) -> list[Outcome]:
        """The rungs above ``env`` in the built environment, where ``placement`` pins them; a failure prunes the
        rest."""
        ...


KINDS: Final[dict[StackKind, Kind]] = {
    StackKind.VLLM: vllm,
    StackKind.TRITON_VLLM: triton_vllm,
    StackKind.TRITON_PYTHON: triton_python,
}


def runs_in_triton(kind: Kind) -> bool:
    """The kind runs in a Triton release's container: its stacks pin a release (and come first in a table)."""
    return NAMING[kind.KIND].in_triton


def kind_named(name: str | None, triton: str | None) -> Kind:
    """``check``'s ``--kind`` (or a policy's ``kind=``); none given: Triton's vLLM backend with a release, else
    vLLM's own server."""
    if name is None:
        return KINDS[StackKind.TRITON_VLLM] if triton is not None else KINDS[StackKind.VLLM]
    return KINDS[StackKind(name)]


def release_for(kind: Kind, triton: str | None, catalog: Catalog, where: str) -> TritonRelease | None:
    """The catalog release a stack of ``kind`` runs in: one that runs in Triton needs one, vLLM's own server
    takes none."""
    if not runs_in_triton(kind):
        if triton is not None:
            raise BadInput(where, "triton", triton, f"no Triton release for a {kind.KIND} stack (vLLM's own server)")
        return None
    if triton is None:
        raise BadInput(where, "triton", None, f"a Triton release for a {kind.KIND} stack")
    release = catalog.triton.get(triton)
    if release is None:
        raise BadInput(where, "triton", triton, catalog.unknown_release(triton))
    return release


__all__ = ["KINDS", "Kind", "kind_named", "release_for", "runs_in_triton"]
