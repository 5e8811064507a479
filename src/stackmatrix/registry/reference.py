"""Image references (``[host[:port]/]path[:tag][@sha256:…]``), checked where they enter, as Docker reads them."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from stackmatrix.errors import BadInput

DOCKER_HUB = "docker.io"
DOCKER_HUB_API = "registry-1.docker.io"  # where Docker Hub's distribution API lives
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_PATH = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*$")
_TAG = re.compile(r"^[\w][\w.-]{0,127}$")
_DIGEST = re.compile(r"^sha256:[a-f0-9]{64}$")
_HOST = re.compile(
    r"^(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9-]{1,63})*|\[[0-9a-fA-F:.]+\])(?::\d{1,5})?$"
)


@dataclass(frozen=True)
class ImageRef:
    registry: str  # host[:port] as written (docker.io for Docker Hub)
    repository: str
    tag: str | None
    digest: str | None

    @property
    def reference(self) -> str:
        """What the manifest is asked by: the digest when one is given, else the tag."""
        return self.digest or self.tag or "latest"

    @property
    def api(self) -> str:
        """The base URL of the registry's API: plain HTTP only on loopback (a test or a tunnel), HTTPS elsewhere."""
        host = DOCKER_HUB_API if self.registry == DOCKER_HUB else self.registry
        return f"{'http' if loopback(host) else 'https'}://{host}"

    def __str__(self) -> str:
        return (
            f"{self.registry}/{self.repository}"
            + (f":{self.tag}" if self.tag else "")
            + (f"@{self.digest}" if self.digest else "")
        )


def loopback(host: str) -> bool:
    name = host.rsplit(":", 1)[0] if host.count(":") == 1 or host.startswith("[") else host
    name = name.strip("[]")
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def parse_ref(text: str, where: str, key: str = "image") -> ImageRef:
    """``text`` as an image reference, or BadInput naming ``where``."""
    expected = (
        "an image reference [host[:port]/]path[:tag][@sha256:<64 hex>], "
        "e.g. nvcr.io/nvidia/tritonserver:26.04-vllm-python-py3"
    )
    raw = text.strip()
    if not raw or len(raw) > 1024 or any(c.isspace() for c in raw):
        raise BadInput(where, key, text, expected)
    rest, _, digest = raw.partition("@")
    if digest and not _DIGEST.match(digest):
        raise BadInput(where, key, text, expected)
    first, slash, remainder = rest.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost" or first.startswith("[")):
        registry, path = first, remainder
    else:
        registry, path = DOCKER_HUB, rest
    tag = None
    if ":" in path.rsplit("/", 1)[-1]:
        path, tag = path.rsplit(":", 1)
    if registry == DOCKER_HUB and "/" not in path:
        path = f"library/{path}"
    if not _HOST.match(registry) or not _PATH.match(path) or (tag is not None and not _TAG.match(tag)):
        raise BadInput(where, key, text, expected)
    if tag is None and not digest:
        tag = "latest"
    return ImageRef(registry, path, tag, digest or None)
