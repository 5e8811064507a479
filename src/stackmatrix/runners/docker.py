"""The ``docker`` runner: each cell's stack is an image (runners/images.py, from the staged wheelhouse), and each probe
runs in its own container of it: probes and checkpoints mounted read-only at their host paths, no network but
loopback, GPUs by device request with CUDA_VISIBLE_DEVICES pinned, a shared-memory size, a hard timeout.

Every probe container is labelled with its owner (host and pid) and removed when the probe ends; containers whose
owner died (a ``kill -9`` of the tool) are removed the next time a runner starts.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import docker
import docker.errors
import docker.types
import requests

from stackmatrix.asof import AsOf
from stackmatrix.domain import Stack
from stackmatrix.errors import InfraUnavailable, disk_fault
from stackmatrix.options import Settings
from stackmatrix.runners import (
    DEFAULT_OVERRIDES,
    Container,
    Env,
    EnvBuildFailed,
    RunnerFault,
)
from stackmatrix.runners.images import LABEL, ImageBuildFailed, ImageSpec, TritonImages, base_id, build
from stackmatrix.wheels.stage import Target, stage

if TYPE_CHECKING:
    from stackmatrix.kinds import Kind
    from stackmatrix.ladder.runtime import Placement

PROBE_LABEL = "org.stackmatrix.probe"
OWNER_LABEL = "org.stackmatrix.owner"
BASE_LABEL = f"{LABEL}.base"  # what a built image was built on (images.ImageSpec.all_labels)


@dataclass(frozen=True)
class DockerOptions:
    cache_dir: Path
    index_url: str
    base: str  # the image the cell images build on (for the `vllm` kind: one with python3 and venv)
    python: str = "3.11"  # the base's python3
    glibc: tuple[int, int] = (2, 36)  # the base's C library: which wheels fit it
    device: str = "cpu"
    torch_find_links: Path | None = None
    torch_index: str | None = None
    overrides: tuple[str, ...] = DEFAULT_OVERRIDES
    gpus: tuple[int, ...] = ()
    shm_size: str = "2g"
    triton_images: TritonImages = field(default_factory=TritonImages)
    as_of: AsOf | None = None  # uv stages what the index held then (--as-of)


def owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def client() -> Any:
    try:
        c = docker.from_env()
        c.ping()
    except (docker.errors.DockerException, requests.RequestException) as exc:
        raise InfraUnavailable(f"no Docker engine reachable ({exc})") from None
    return c


def reap_orphans(c: Any) -> list[str]:
    """Remove probe containers of this host whose owning process is gone."""
    host = socket.gethostname()
    removed = []
    for container in c.containers.list(all=True, filters={"label": PROBE_LABEL}):
        who = container.labels.get(OWNER_LABEL, "")
        name, _, pid = who.rpartition(":")
        if name != host or not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
            continue  # alive: its probe is still running
        except ProcessLookupError:
            pass
        except PermissionError:
            continue
        container.remove(force=True)
        removed.append(container.name)
    return removed


class DockerRunner:
    name: ClassVar[str] = "docker"
    containers: ClassVar[bool] = True

    def __init__(self, options: DockerOptions) -> None:
        self.o = options
        self.client = client()
        reap_orphans(self.client)
        self._interpreters: dict[str, tuple[str, tuple[int, int]]] = {}  # base image id -> its python3 and glibc

    @classmethod
    def from_settings(cls, settings: Settings, overrides: tuple[str, ...]) -> DockerRunner:
        return cls(
            DockerOptions(
                cache_dir=settings.cache_dir,
                index_url=settings.index_url,
                base=settings.base_image,
                python=settings.base_python,
                device=settings.device,
                torch_find_links=settings.torch_find_links,
                torch_index=settings.torch_index,
                overrides=overrides,
                triton_images=TritonImages(settings.triton_image),
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
        """In a container of the env's image on the placement's GPUs (by device request) and cores: what the
        probe reads and writes mounted at the same paths."""
        assert env.container is not None, "a docker env runs in its image"
        container = replace(env.container, gpus=placement.gpus or env.container.gpus)
        return run_in_container(container, argv, timeout, log, binds(ro, rw), placement.thread_env(), placement.cpus)

    @property
    def device(self) -> str:
        return self.o.device

    def requirements(self, stack: Stack, kind: Kind) -> list[str]:
        return kind.requirements(stack, self.o.device)

    def prepare(self, stack: Stack, kind: Kind) -> Env:
        plan = kind.image(stack, self.o.triton_images)
        if plan is None:
            raise EnvBuildFailed("needs-container", f"no runtime tier wired for {stack.kind} cells yet", "")
        base = plan.base or self.o.base
        if plan.as_is:
            return self._as_is(base)
        return self._image(plan.template, self.requirements(stack, kind), plan.overrides, base, {"stack": stack.id})

    def _as_is(self, ref: str) -> Env:
        """A stock container: the image as shipped (pulled when it is not here), nothing installed into it; its
        image id is the results cache key."""
        t0 = time.perf_counter()
        image_id = base_id(self.client, ref)  # neither here nor pullable: this host cannot run the cell
        return Env(
            Path("python3"),
            Path(ref),
            image_id.removeprefix("sha256:")[:16],
            observed_versions(self.client, ref),
            reused=True,
            build_s=time.perf_counter() - t0,
            container=Container(ref, self.o.gpus, self.o.shm_size),
            runner=self.name,
        )

    def prepare_requirements(self, requirements: list[str], extra_overrides: Sequence[str] = ()) -> Env:
        return self._image("vllm", requirements, tuple(extra_overrides), self.o.base, {})

    def _image(
        self, kind: str, requirements: list[str], extra_overrides: tuple[str, ...], base: str, labels: dict[str, str]
    ) -> Env:
        t0 = time.perf_counter()
        image_id = base_id(self.client, base)
        if base == self.o.base:
            python, glibc = self.o.python, self.o.glibc
        else:  # read once per base image, not once per cell
            if image_id not in self._interpreters:
                self._interpreters[image_id] = interpreter_of(self.client, base)
            python, glibc = self._interpreters[image_id]
        target = Target(python=python, glibc=glibc)
        overrides = [*self.o.overrides, *extra_overrides]
        staged = stage(
            requirements,
            self.o.cache_dir / "wheelhouse",
            target,
            index_url=self.o.index_url,
            cache_dir=self.o.cache_dir,
            overrides=overrides,
            find_links=self.o.torch_find_links,
            extra_index=None if self.o.torch_find_links else self.o.torch_index,
            as_of=self.o.as_of,
        )
        spec = ImageSpec(
            kind, base, python, staged.pins, {"requirements": json.dumps(requirements), **labels}, image_id
        )
        try:
            built = build(self.client, spec)
        except ImageBuildFailed as exc:
            fault = disk_fault(exc.tail, "docker's storage", f"image {exc.tag} did not build")
            if fault is not None:
                raise fault from None
            raise EnvBuildFailed("env-build-failed", f"image {exc.tag} did not build", exc.tail) from None
        installed = observed_versions(self.client, built.tag)
        return Env(
            Path("python3"),
            Path(built.tag),
            built.tag.rsplit(":", 1)[1],  # the image's content hash (pins, template, base id): the results cache key
            installed,
            reused=built.reused,
            build_s=time.perf_counter() - t0,
            container=Container(built.tag, self.o.gpus, self.o.shm_size),
            runner=self.name,
        )


def interpreter_of(c: Any, image: str) -> tuple[str, tuple[int, int]]:
    """The image's python3 version and C library: which wheels fit it (read inside, not assumed)."""
    code = "import os, sys; print('%d.%d' % sys.version_info[:2], os.confstr('CS_GNU_LIBC_VERSION'))"
    try:
        line = _python_in(c, image, code)
    except docker.errors.ContainerError as exc:
        raise EnvBuildFailed("env-build-failed", f"{image} has no working python3 to build on", str(exc)) from None
    python, _, libc = line.partition(" ")
    major, minor = libc.split()[-1].split(".")[:2]
    return python, (int(major), int(minor))


def observed_versions(c: Any, image: str) -> dict[str, str]:
    """What the image really holds, read inside it (reports show it beside what the matrix declared)."""
    # The first distribution of a name on sys.path is the one imported (an override placed first shadows the
    # shipped one), so the first one found wins.
    code = (
        "import importlib.metadata as m, json; v = {}\n"
        "for d in m.distributions(): v.setdefault(d.metadata['Name'], d.version)\n"
        "print(json.dumps(v))"
    )
    try:
        versions: dict[str, str] = json.loads(_python_in(c, image, code))
    except (docker.errors.DockerException, json.JSONDecodeError, IndexError) as exc:
        raise EnvBuildFailed(
            "env-build-failed", f"{image}: its python3 could not list what it holds", str(exc)
        ) from None
    return {k.lower(): v for k, v in versions.items()}


def _python_in(c: Any, image: str, code: str) -> str:
    """The last line ``python3 -c code`` prints in a throwaway, network-less container of ``image``."""
    out = c.containers.run(image, ["python3", "-c", code], remove=True, network_mode="none", labels=_labels())
    return str(out.decode().strip().splitlines()[-1])


def read_dir(image: str, path: str, cap: int) -> bytes | None:
    """``path`` of ``image`` as a tar stream (what ``docker cp`` gives), read from a container that is created and
    never started; None when the image has no such path. More than ``cap`` bytes is refused (ValueError)."""
    c = client()
    try:
        box = c.containers.create(image, ["true"], labels=_labels(), network_disabled=True)
    except (docker.errors.APIError, requests.RequestException) as exc:
        raise RunnerFault(f"the Docker engine could not open {image}: {exc}") from None
    try:
        try:
            stream, _ = box.get_archive(path)
            data = bytearray()
            for chunk in stream:
                data += chunk
                if len(data) > cap:
                    raise ValueError(f"{path} in {image} is larger than {cap} bytes")
        except docker.errors.NotFound:
            return None
        except (docker.errors.APIError, requests.RequestException) as exc:
            raise RunnerFault(f"the Docker engine could not read {path} of {image}: {exc}") from None
        return bytes(data)
    finally:
        with contextlib.suppress(docker.errors.APIError, requests.RequestException):
            box.remove(force=True)


def identity(image: str) -> dict[str, str | None]:
    """What names the image that runs: its id; its registry digest when it was pulled from one; the image it was
    derived from when stackmatrix built it."""
    try:
        attrs = client().images.get(image).attrs
    except (docker.errors.APIError, requests.RequestException) as exc:
        raise RunnerFault(f"the Docker engine could not inspect {image}: {exc}") from None
    digests = [d.rpartition("@")[2] for d in attrs.get("RepoDigests") or []]
    labels = (attrs.get("Config") or {}).get("Labels") or {}
    return {"image_id": str(attrs["Id"]), "digest": digests[0] if digests else None, "base": labels.get(BASE_LABEL)}


def _labels() -> dict[str, str]:
    return {PROBE_LABEL: "1", OWNER_LABEL: owner()}


def run_options(
    container: Container, environment: Mapping[str, str] | None = None, cpus: Sequence[int] = ()
) -> dict[str, Any]:
    """What every container of a cell gets: its GPUs (by device request, renumbered from 0 inside, so
    CUDA_VISIBLE_DEVICES is pinned to them), the shared-memory size, and the owner labels the reaper reads;
    ``environment``: variables added to those; ``cpus``: the cores it is bound to."""
    requests_ = (
        [docker.types.DeviceRequest(device_ids=[str(g) for g in container.gpus], capabilities=[["gpu"]])]
        if container.gpus
        else None
    )
    visible = {"CUDA_VISIBLE_DEVICES": ",".join(str(i) for i in range(len(container.gpus)))}
    options = {
        "environment": {**visible, **(environment or {})},
        "shm_size": container.shm_size,
        "device_requests": requests_,
        "labels": _labels(),
    }
    if cpus:
        options["cpuset_cpus"] = ",".join(map(str, cpus))
    return options


def binds(paths_ro: Sequence[Path], paths_rw: Sequence[Path]) -> dict[str, dict[str, str]]:
    """Bind mounts at the same paths inside: probe arguments that name host paths stay valid."""
    out = {str(p): {"bind": str(p), "mode": "ro"} for p in paths_ro}
    out.update({str(p): {"bind": str(p), "mode": "rw"} for p in paths_rw})
    return out


def run_in_container(
    container: Container,
    argv: Sequence[str],
    timeout: float,
    log: Path,
    volumes: Mapping[str, Mapping[str, str]],
    environment: Mapping[str, str] | None = None,
    cpus: Sequence[int] = (),
) -> tuple[str, bool]:
    """Run one probe (``environment``: variables added to the container's; ``cpus``: the cores it is bound to);
    its stderr goes to ``log``. Returns (stdout, timed out)."""
    options = run_options(container, environment, cpus)
    try:
        run = client().containers.run(
            container.image,
            list(argv),
            detach=True,
            network_mode="none",  # loopback only: the serve probe talks to its own server inside
            volumes=dict(volumes),
            working_dir=str(log.parent),
            **options,
        )
    except (docker.errors.APIError, requests.RequestException) as exc:
        raise RunnerFault(f"the Docker engine failed to start the probe's container: {exc}") from None
    timed_out = False
    try:
        try:
            run.wait(timeout=timeout)
        except (requests.exceptions.ReadTimeout, requests.exceptions.ConnectionError):
            timed_out = True
            run.kill()
        stdout = run.logs(stdout=True, stderr=False).decode(errors="replace")
        log.write_bytes(run.logs(stdout=False, stderr=True))
    finally:
        run.remove(force=True)
    return stdout, timed_out


def image_env(ref: str, image_id: str) -> Env:
    """A Triton image that is here as an env whose probes run in its containers (nothing installed into it)."""
    return Env(Path("python3"), Path(ref), image_id, container=Container(ref), runner=DockerRunner.name)
