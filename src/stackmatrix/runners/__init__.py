"""Runners: where a probe's environment lives. A Protocol and a plain dict registry (nox's habit)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from stackmatrix.domain import Stack


@dataclass(frozen=True)
class Env:
    """A built environment: its interpreter, the versions actually installed, and the lock that made it."""

    python: Path
    root: Path
    lock_hash: str
    installed: dict[str, str] = field(default_factory=dict)
    reused: bool = False
    build_s: float = 0.0


class EnvBuildFailed(Exception):
    def __init__(self, reason: str, detail: str, tail: str) -> None:
        super().__init__(detail)
        self.reason, self.tail = reason, tail


class Runner(Protocol):
    name: str

    def prepare(self, stack: Stack) -> Env: ...


RUNNERS: dict[str, Callable[..., Runner]] = {}
