"""Runners: where a probe's environment lives. A Protocol and a plain dict registry (nox's ``ALL_VENVS`` habit)
that the CLI's ``--runner`` choices, the contexts the ladder is given and the probes' dispatch all read.

A runner module is imported when its runner is asked for: the venv runner never pays for the docker SDK.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import signal
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Protocol, cast

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from stackmatrix.domain import Stack
from stackmatrix.errors import BadInput
from stackmatrix.kinds import KINDS

if TYPE_CHECKING:
    from stackmatrix.domain import Cell, Outcome
    from stackmatrix.ladder.static import Context
    from stackmatrix.options import Settings

# The static tier's hook for ``backend-imports`` read from a Triton image that is here (docker runner).
BackendHook = Callable[["Cell", "Context"], "Outcome | None"]


@dataclass(frozen=True)
class Container:
    """Where a container env runs its probes: the image, and what each probe's container gets."""

    image: str
    gpus: tuple[int, ...] = ()  # host device ids, by device request; CUDA_VISIBLE_DEVICES is pinned inside
    shm_size: str = "2g"  # vLLM's workers share tensors through /dev/shm


@dataclass(frozen=True)
class Env:
    """A built environment: its interpreter, the versions actually installed, and the lock that made it.
    ``runner``: the registered runner that built it, and runs its probes. ``container`` set: the interpreter is
    inside that image (the docker runner), not on this host."""

    python: Path
    root: Path
    lock_hash: str
    installed: dict[str, str] = field(default_factory=dict)
    reused: bool = False
    build_s: float = 0.0
    container: Container | None = None
    runner: str = "venv"


class EnvBuildFailed(Exception):
    def __init__(self, reason: str, detail: str, tail: str) -> None:
        super().__init__(detail)
        self.reason, self.tail = reason, tail


def stack_requirements(stack: Stack, device: str) -> list[str]:
    """What a stack installs (its kind decides: the engine's CPU build on a host without a GPU, and so on)."""
    return KINDS[stack.kind].requirements(stack, device)


# Beside a +cpu torch, PyPI's torchvision/torchaudio/torchcodec (built for CUDA torch) fail at import
# (FACTS §9); a text-only engine does not need them, so the default overrides drop them.
DEFAULT_OVERRIDES = (
    'torchvision; sys_platform == "never"',
    'torchaudio; sys_platform == "never"',
    'torchcodec; sys_platform == "never"',
)


def merge_overrides(defaults: Sequence[str], given: Sequence[str]) -> tuple[str, ...]:
    """The user's overrides, plus every default for a package the user did not name."""
    named = set()
    for o in given:
        try:
            named.add(canonicalize_name(Requirement(o).name))
        except InvalidRequirement:
            raise BadInput("--override", "override", o, "a requirement such as torch==2.13.0") from None
    kept = [d for d in defaults if canonicalize_name(Requirement(d).name) not in named]
    return (*kept, *given)


class Runner(Protocol):
    """A runner class: made from the settings, it prepares a stack's environment; its ``run`` runs one probe in
    an environment it prepared."""

    name: ClassVar[str]
    # Each stack in its kind's image and each probe in a container: what a Triton kind's ladder needs.
    containers: ClassVar[bool]

    @classmethod
    def from_settings(cls, settings: Settings, overrides: tuple[str, ...]) -> Runner:
        """The runner the options describe (``overrides``: the user's, merged with the defaults)."""
        ...

    @staticmethod
    def backend_hook(settings: Settings) -> BackendHook | None:
        """What the static tier's ``backend-imports`` may read besides the catalog (an image that is here)."""
        ...

    @staticmethod
    def run(
        env: Env, argv: Sequence[str], timeout: float, log: Path, ro: Sequence[Path], rw: Sequence[Path]
    ) -> tuple[str, bool]:
        """Run ``argv`` (a probe: the env's interpreter first) in ``env``; stderr to ``log``; ``ro``/``rw``: the
        host paths it reads and writes. Returns (stdout, timed out)."""
        ...

    @property
    def device(self) -> str:
        """ "cpu" or "gpu": which engine build a stack installs."""
        ...

    def prepare(self, stack: Stack) -> Env: ...

    def prepare_requirements(self, requirements: list[str], extra_overrides: Sequence[str] = ()) -> Env: ...


@dataclass(frozen=True)
class Registered:
    """A runner in the registry: ``target`` is ``module:Class`` under stackmatrix.runners, imported on use."""

    target: str
    help: str

    def load(self) -> type[Runner]:
        module, cls = self.target.split(":")
        return cast("type[Runner]", getattr(importlib.import_module(f"stackmatrix.runners.{module}"), cls))


RUNNERS: dict[str, Registered] = {
    "venv": Registered("venv:VenvRunner", "uv environments on this host"),
    "docker": Registered("docker:DockerRunner", "an image per stack, a container per probe"),
}


def runner_name(where: str, value: str) -> str:
    """``--runner`` / ``STACKMATRIX_RUNNER``: a registered runner."""
    if value not in RUNNERS:
        raise BadInput(where, "value", value, " or ".join(RUNNERS))
    return value


def run_local(argv: Sequence[str], timeout: float, log: Path) -> tuple[str, bool]:
    """Run ``argv`` here in its own process group (cwd: the log's folder; stderr to the log); the whole group is
    killed on timeout, and whatever it left behind when it exits (engine workers, a server)."""
    with log.open("w") as fh:
        proc = subprocess.Popen(
            list(argv), stdout=subprocess.PIPE, stderr=fh, text=True, start_new_session=True, cwd=log.parent
        )
        try:
            out, _ = proc.communicate(timeout=timeout)
            timed_out = False
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, _ = proc.communicate()
            timed_out = True
        except BaseException:  # Ctrl-C: leave no orphan behind
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise
        else:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
    return out or "", timed_out
