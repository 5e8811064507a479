"""What the kinds that run in a Triton release's container share: the release's Python, the
platform their wheels are staged for, and the skip of a runner that cannot run a container."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from stackmatrix.domain import Cell, Outcome, Reason, Rung, Stack, Status
from stackmatrix.errors import BadInput
from stackmatrix.matrix.pins import python_of

if TYPE_CHECKING:
    from stackmatrix.domain import TritonRelease
    from stackmatrix.matrix.file import StackRule
    from stackmatrix.wheels.stage import Target

GLIBC = (2, 39)  # Triton's containers are Ubuntu 24.04: the C library their wheels must fit


def check_releases(rule: StackRule, where: str, key: str) -> None:
    """A rule of a kind that runs in Triton names its releases."""
    if rule.triton is None:
        raise BadInput(where, f"{key}.triton", None, "a list of Triton releases or {from, to}")


def releases_with_python(releases: Sequence[TritonRelease], python: str) -> Iterator[tuple[TritonRelease, str]]:
    """Each release with the Python its container runs (the matrix's when the catalog does not say)."""
    for release in releases:
        yield release, python_of(release.python, python)


def need(release: TritonRelease | None) -> TritonRelease:
    """The stack's release; the registry's callers give one to every kind that runs in Triton."""
    assert release is not None, "a Triton kind resolved without a release"
    return release


def stage_target(stack: Stack, stock: bool) -> Target | None:
    """The container's Python on Triton's platform; a stock container ships everything it runs."""
    from stackmatrix.wheels.stage import Target  # uv and httpx: only staging pays for them

    return None if stock else Target(stack.python, GLIBC)


def needs_container(cell: Cell) -> Outcome:
    return Outcome(
        Rung.ENV,
        Status.SKIP,
        Reason.NEEDS_CONTAINER,
        f"{cell.stack.kind} stacks run in their container (the docker runner), not in a venv",
    )
