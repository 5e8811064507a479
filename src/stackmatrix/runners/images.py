"""Cell images from the ``images/<kind>/Dockerfile`` templates, built with the docker SDK.

An image is named by what went into it: ``stackmatrix/<kind>:<hash>`` where the hash covers the template, the base
(a tag or a digest) and the hash-pinned requirements; its labels record the pins, so a built image says what it
holds. The wheels come from a staged wheelhouse (wheels/stage.py) and are split into two layers (torch and what it
needs, then the rest) so permutations on the same torch share the big one. The build runs with no network.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stackmatrix.errors import InfraUnavailable, disk_fault
from stackmatrix.files.embedded import images_dir

LABEL = "org.stackmatrix"
# Distributions that travel with torch: one layer, shared by every image on the same torch.
TORCH_SET = frozenset(
    {"torch", "triton", "numpy", "sympy", "mpmath", "networkx", "jinja2", "markupsafe", "filelock", "fsspec"}
    | {"typing-extensions", "setuptools"}
)


VLLM_VARIANT = "vllm-python-py3"  # the tritonserver image with the vLLM backend
PYTHON_VARIANT = "py3"  # the tritonserver image with the Python backend only
DEFAULT_TRITON_IMAGE = "nvcr.io/nvidia/tritonserver:{release}-{variant}"


@dataclass(frozen=True)
class ImagePlan:
    """How a kind's cell image is built (kinds/): its template, its base, and the overrides its pins need."""

    template: str  # a folder of images/ (the kind's IMAGE)
    base: str | None = None  # None: the docker runner's --base-image
    overrides: tuple[str, ...] = ()  # e.g. the cell's transformers pin over the engine's declared bound
    as_is: bool = False  # the base runs as shipped (a stock container): nothing is built


@dataclass(frozen=True)
class TritonImages:
    """Where each release's Triton image is: a template with ``{release}`` and ``{variant}`` (NGC's tags by
    default; a site's mirror, or tags it gave to images it loaded by digest)."""

    template: str = DEFAULT_TRITON_IMAGE

    def ref(self, release: str, variant: str) -> str:
        return self.template.format(release=release, variant=variant)


@dataclass(frozen=True)
class ImageSpec:
    kind: str  # a folder of images/: vllm, triton-vllm, triton-python
    base: str  # an image reference, by tag or by digest
    python: str  # the base's python3 version, e.g. "3.11": where the layers go
    pins: Path  # staged requirements with hashes (stage.Staged.pins), the wheels beside it
    labels: Mapping[str, str] = field(default_factory=dict)  # e.g. the cell's declared pins
    base_id: str = ""  # the base's image id: a retagged base makes another image

    @property
    def site(self) -> str:
        return f"/opt/stack/lib/python{self.python}/site-packages"

    def template(self) -> str:
        path = images_dir() / self.kind / "Dockerfile"
        if not path.is_file():
            known = ", ".join(sorted(p.name for p in images_dir().iterdir() if p.is_dir()))
            raise FileNotFoundError(f"no template {path} (kinds: {known})")
        return path.read_text()

    @property
    def tag(self) -> str:
        payload = json.dumps(
            {
                "template": self.template(),
                "base": self.base,
                "base_id": self.base_id,
                "python": self.python,
                "pins": self.pins.read_text(),
            },
            sort_keys=True,
        )
        return f"stackmatrix/{self.kind}:{hashlib.sha256(payload.encode()).hexdigest()[:16]}"

    def all_labels(self) -> dict[str, str]:
        pins = sorted(line.split(" ", 1)[0] for line in self.pins.read_text().splitlines() if line.strip())
        return {
            f"{LABEL}.kind": self.kind,
            f"{LABEL}.base": self.base,
            f"{LABEL}.base-id": self.base_id,
            f"{LABEL}.python": self.python,
            f"{LABEL}.pins": json.dumps(pins),
            **{f"{LABEL}.{k}": v for k, v in self.labels.items()},
        }


def split_pins(text: str) -> tuple[list[str], list[str]]:
    torch: list[str] = []
    rest: list[str] = []
    for line in text.splitlines():
        if line.strip():
            name = line.split("==", 1)[0].strip().lower().replace("_", "-")
            (torch if name in TORCH_SET or name.startswith("nvidia-") else rest).append(line)
    return torch, rest


def _wheel_for(line: str, wheelhouse: Path) -> Path:
    """The staged wheel a pin line names (wheels/stage.py writes its file name as the line's comment)."""
    name = line.partition("#")[2].strip()
    path = wheelhouse / name
    if not name or not path.is_file():
        raise FileNotFoundError(f"{line.split(' ', 1)[0]}: no staged wheel in {wheelhouse} (run `stackmatrix stage`)")
    return path


def context(spec: ImageSpec, root: Path) -> Path:
    """The build context: the template and, per layer, its pins and wheels (hard links where possible)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "Dockerfile").write_text(spec.template())
    for layer, lines in zip(("layer0", "layer1"), split_pins(spec.pins.read_text()), strict=True):
        folder = root / layer
        folder.mkdir()
        (folder / "pins.txt").write_text("\n".join(lines) + "\n")
        for line in lines:
            wheel = _wheel_for(line, spec.pins.parent)
            try:
                os.link(wheel, folder / wheel.name)
            except OSError:
                shutil.copyfile(wheel, folder / wheel.name)
    return root


@dataclass(frozen=True)
class Built:
    tag: str
    image_id: str
    reused: bool
    seconds: float
    log_tail: str = ""


def base_id(client: Any, base: str) -> str:
    """The base's image id, pulling it when it is not here (an air-gapped site loads it beforehand)."""
    import docker.errors

    try:
        return str(client.images.get(base).id)
    except docker.errors.ImageNotFound:
        try:
            return str(client.images.pull(base).id)
        except docker.errors.APIError as exc:
            raise InfraUnavailable(f"base image {base} is neither here nor pullable: {exc}") from None


def build(client: Any, spec: ImageSpec) -> Built:
    """Build (or reuse, by tag) the image; ``client`` is a ``docker.DockerClient``."""
    import time

    import docker.errors

    tag = spec.tag
    t0 = time.perf_counter()
    try:
        return Built(tag, client.images.get(tag).id, True, time.perf_counter() - t0)
    except docker.errors.ImageNotFound:
        pass
    with tempfile.TemporaryDirectory(prefix="stackmatrix-image-") as tmp:
        context(spec, Path(tmp))
        try:
            image, logs = client.images.build(
                path=tmp,
                tag=tag,
                buildargs={"BASE": spec.base, "SITE": spec.site},
                labels=spec.all_labels(),
                network_mode="none",  # everything comes from the wheelhouse: an air-gapped build
                rm=True,
                forcerm=True,
            )
        except docker.errors.BuildError as exc:
            tail = "".join(str(chunk.get("stream", chunk.get("error", ""))) for chunk in exc.build_log)[-2000:]
            raise ImageBuildFailed(tag, tail) from None
        except docker.errors.APIError as exc:
            raise disk_fault(str(exc), "docker's storage", f"docker could not build {tag}") or InfraUnavailable(
                f"docker could not build {tag}: {exc}"
            ) from None
    tail = "".join(str(chunk.get("stream", "")) for chunk in logs)[-2000:]
    return Built(tag, image.id, False, time.perf_counter() - t0, tail)


class ImageBuildFailed(Exception):
    def __init__(self, tag: str, tail: str) -> None:
        super().__init__(f"building {tag} failed")
        self.tag, self.tail = tag, tail
