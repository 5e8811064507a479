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
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Protocol, cast

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from stackmatrix.domain import Stack
from stackmatrix.errors import BadInput

if TYPE_CHECKING:
    from stackmatrix.kinds import Kind
    from stackmatrix.ladder.runtime import Placement
    from stackmatrix.options import Settings


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
    lock: str = ""  # the pins it was built from (uv pip compile's output), where the runner resolved them
    python_version: str = ""  # the Python it was made for ("3.11"), where the runner chose it


class EnvBuildFailed(Exception):
    def __init__(self, reason: str, detail: str, tail: str) -> None:
        super().__init__(detail)
        self.reason, self.tail = reason, tail


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


class Traits(Protocol):
    """What a kind asks of a runner to say whether it can climb a cell here (a runner class's own attributes, or
    the settings' before a runner is made: the plan)."""

    @property
    def containers(self) -> bool: ...

    @property
    def device(self) -> str: ...


@dataclass(frozen=True)
class Declared:
    """The traits of the runner the settings name, without making it (no Docker engine is asked)."""

    containers: bool
    device: str


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
    def run(
        env: Env,
        argv: Sequence[str],
        timeout: float,
        log: Path,
        ro: Sequence[Path],
        rw: Sequence[Path],
        placement: Placement,
    ) -> tuple[str, bool]:
        """Run ``argv`` (a probe: the env's interpreter first) in ``env``; stderr to ``log``; ``ro``/``rw``: the
        host paths it reads and writes; ``placement``: the GPUs and CPU cores it is pinned to. Returns (stdout,
        timed out)."""
        ...

    def requirements(self, stack: Stack, kind: Kind) -> list[str]:
        """What the stack's environment installs here (its builds share one lock per list); ``kind``: the stack's
        (the caller looks it up: runners sit below the kinds)."""
        ...

    @property
    def device(self) -> str:
        """ "cpu" or "gpu": which engine build a stack installs."""
        ...

    def prepare(self, stack: Stack, kind: Kind) -> Env: ...

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


# The process groups of the probes running now (the executor runs ladders in threads): on Ctrl-C or SIGTERM the
# main thread kills them all, since a probe in its own session gets neither signal from the terminal.
_LIVE: set[int] = set()
_LIVE_LOCK = threading.Lock()
_STOPPING = threading.Event()


class RunnerFault(Exception):
    """The runner's own engine failed a probe (the Docker engine refused a container): this host's fault, not the
    stack's; the executor tries the ladder again."""


class ProbeCancelled(Exception):
    """The run is stopping (Ctrl-C, SIGTERM): a ladder's next probe does not start."""


def probes_stopping(stopping: bool) -> None:
    """Say that the run is stopping (no probe starts from now on), or that a new run starts."""
    if stopping:
        _STOPPING.set()
    else:
        _STOPPING.clear()


_LISTENER = threading.local()


@contextlib.contextmanager
def line_listener(fn: Callable[[str], None]) -> Iterator[None]:
    """``fn`` sees each line a probe run on this thread prints, as it prints it (a ladder's progress)."""
    previous = getattr(_LISTENER, "fn", None)
    _LISTENER.fn = fn
    try:
        yield
    finally:
        _LISTENER.fn = previous


def check_not_stopping() -> None:
    if _STOPPING.is_set():
        raise ProbeCancelled("the run is stopping")


def kill_live_probes() -> int:
    """Kill every probe process group still running; how many there were."""
    with _LIVE_LOCK:
        groups = list(_LIVE)
    for pgid in groups:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)
    return len(groups)


# The pid a probe checks its parent against once it asked the kernel to end it with its parent (probes/_common.py).
PROBE_PARENT = "STACKMATRIX_PROBE_PARENT"


def run_local(
    argv: Sequence[str],
    timeout: float,
    log: Path,
    env: Mapping[str, str] | None = None,
    cpus: Sequence[int] = (),
) -> tuple[str, bool]:
    """Run ``argv`` here in its own process group (cwd: the log's folder; stderr to the log; ``env``: variables
    added to this process's; ``cpus``: the cores it and its children are bound to); the whole group is killed on
    timeout, and whatever it left behind when it exits (engine workers, a server)."""
    with log.open("w") as fh:
        proc = subprocess.Popen(
            list(argv),
            stdout=subprocess.PIPE,
            stderr=fh,
            text=True,
            start_new_session=True,
            cwd=log.parent,
            # the probe checks that its parent is still this process once it asked to die with it (probes/_common.py)
            env={**os.environ, **(env or {}), PROBE_PARENT: str(os.getpid())},
        )
        with _LIVE_LOCK:
            _LIVE.add(proc.pid)
        if cpus:  # before it starts its threads and children, which inherit it
            with contextlib.suppress(ProcessLookupError, OSError):
                os.sched_setaffinity(proc.pid, set(cpus))
        lines: list[str] = []
        reader = threading.Thread(target=_pump, args=(proc, lines, getattr(_LISTENER, "fn", None)), daemon=True)
        reader.start()
        try:
            proc.wait(timeout=timeout)
            timed_out = False
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            timed_out = True
        except BaseException:  # Ctrl-C: leave no orphan behind
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise
        else:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
        finally:
            with _LIVE_LOCK:
                _LIVE.discard(proc.pid)
            reader.join(timeout=10)  # its stdout closes with the last process of the group
    return "".join(lines), timed_out


def _pump(proc: subprocess.Popen[str], lines: list[str], listener: Callable[[str], None] | None) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append(line)
        if listener is not None:
            with contextlib.suppress(Exception):  # progress is never worth a probe's result
                listener(line)
