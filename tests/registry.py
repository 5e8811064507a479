"""A real OCI registry on loopback for the tests: Debian's ``docker-registry`` (the CNCF distribution registry),
two instances started here: one behind the bearer-token flow public registries use (a token service on loopback
grants anonymous pulls of ``public/*`` and everything to the pusher), one behind htpasswd (basic auth). Images are
built here (layers as tar streams, gzip or zstd) and pushed with the distribution API itself."""

from __future__ import annotations

import base64
import gzip
import hashlib
import http.client
import io
import json
import shutil
import subprocess
import tarfile
import threading
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx

from stackmatrix.domain import ImportSet
from stackmatrix.registry.auth import parse_challenge
from stackmatrix.triton.server import free_port

REGISTRY = "docker-registry"
SERVICE, ISSUER = "stackmatrix-test", "stackmatrix-test-issuer"
PUSHER = ("pusher", "push-secret-0123456789")
READER = ("reader", "read-secret-0123456789")  # the htpasswd registry's user
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
PLAIN = "application/vnd.oci.image.layer.v1.tar"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass
class Signer:
    """An RSA key and its self-signed certificate (the registry's rootcertbundle), signing with openssl."""

    root: Path

    def __post_init__(self) -> None:
        self.key, self.cert = self.root / "key.pem", self.root / "cert.pem"
        subprocess.run(
            [
                "openssl",
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                str(self.key),
                "-out",
                str(self.cert),
                "-days",
                "2",
                "-subj",
                "/CN=stackmatrix-test",
            ],
            check=True,
            capture_output=True,
        )
        der = subprocess.run(
            ["openssl", "pkey", "-in", str(self.key), "-pubout", "-outform", "DER"], check=True, capture_output=True
        ).stdout
        digest = base64.b32encode(hashlib.sha256(der).digest()[:30]).decode().rstrip("=")
        self.kid = ":".join(digest[i : i + 4] for i in range(0, len(digest), 4))  # libtrust's key id

    def token(self, subject: str, access: list[dict[str, object]]) -> str:
        now = int(time.time())
        header = {"typ": "JWT", "alg": "RS256", "kid": self.kid}
        claims = {
            "iss": ISSUER,
            "sub": subject,
            "aud": SERVICE,
            "exp": now + 600,
            "nbf": now - 10,
            "iat": now,
            "jti": f"{now}-{threading.get_ident()}",
            "access": access,
        }
        signing = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
        sig = subprocess.run(
            ["openssl", "dgst", "-sha256", "-sign", str(self.key)],
            input=signing.encode(),
            check=True,
            capture_output=True,
        ).stdout
        return f"{signing}.{_b64(sig)}"


def _token_handler(signer: Signer, issued: list[str]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            query = parse_qs(urlsplit(self.path).query)
            user = None
            auth = self.headers.get("Authorization", "")
            if auth.startswith("Basic "):
                name, _, pw = base64.b64decode(auth[6:]).decode().partition(":")
                if (name, pw) != PUSHER:
                    self.send_response(401)
                    self.end_headers()
                    return
                user = name
            access: list[dict[str, object]] = []
            for scope in query.get("scope", []):
                kind, _, rest = scope.partition(":")
                repo, _, actions = rest.rpartition(":")
                granted = actions.split(",") if user else (["pull"] if repo.startswith("public/") else [])
                access.append({"type": kind, "name": repo, "actions": granted})
            token = signer.token(user or "", access)
            issued.append(user or "anonymous")
            body = json.dumps({"token": token, "access_token": token, "expires_in": 600}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    return Handler


@dataclass
class Instance:
    host: str  # 127.0.0.1:PORT
    storage: Path
    auth: tuple[str, str] | None  # what pushes use
    proc: subprocess.Popen[bytes]
    tokens: list[str] = field(default_factory=list)

    def blob_file(self, digest: str) -> Path:
        hexd = digest.split(":", 1)[1]
        return self.storage / "docker/registry/v2/blobs/sha256" / hexd[:2] / hexd / "data"


def _serve(root: Path, name: str, auth_yaml: str) -> tuple[str, Path, subprocess.Popen[bytes]]:
    port = free_port()
    storage = root / f"{name}-data"
    config = root / f"{name}.yml"
    config.write_text(
        f"version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {storage}\n"
        f"  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n  secret: stackmatrix-test\n{auth_yaml}"
    )
    log = (root / f"{name}.log").open("wb")
    proc = subprocess.Popen([shutil.which(REGISTRY) or REGISTRY, "serve", str(config)], stdout=log, stderr=log)
    deadline = time.monotonic() + 20
    while True:
        try:
            httpx.get(f"http://127.0.0.1:{port}/v2/", timeout=1)
            break
        except httpx.TransportError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{REGISTRY} did not start: {(root / f'{name}.log').read_text()[-2000:]}") from None
            time.sleep(0.1)
    return f"127.0.0.1:{port}", storage, proc


@contextmanager
def registries(root: Path) -> Iterator[tuple[Instance, Instance]]:
    """(the token registry, the htpasswd registry), stopped on exit."""
    root.mkdir(parents=True, exist_ok=True)
    signer = Signer(root)
    issued: list[str] = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _token_handler(signer, issued))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    realm = f"http://127.0.0.1:{server.server_address[1]}/token"
    token_yaml = (
        f"auth:\n  token:\n    realm: {realm}\n    service: {SERVICE}\n    issuer: {ISSUER}\n"
        f"    rootcertbundle: {signer.cert}\n"
    )
    htpasswd = root / "htpasswd"
    with warnings.catch_warnings():  # Debian's libcrypt makes the bcrypt hash htpasswd files hold
        warnings.simplefilter("ignore", DeprecationWarning)
        import crypt

        htpasswd.write_text(f"{READER[0]}:{crypt.crypt(READER[1], crypt.mksalt(crypt.METHOD_BLOWFISH))}\n")
    basic_yaml = f"auth:\n  htpasswd:\n    realm: stackmatrix-test\n    path: {htpasswd}\n"
    procs = []
    try:
        host, storage, proc = _serve(root, "token", token_yaml)
        procs.append(proc)
        token = Instance(host, storage, PUSHER, proc, issued)
        host, storage, proc = _serve(root, "basic", basic_yaml)
        procs.append(proc)
        basic = Instance(host, storage, READER, proc)
        yield token, basic
    finally:
        for p in procs:
            p.terminate()
            p.wait(10)
        server.shutdown()


# -- images ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Layer:
    files: dict[str, bytes]  # path -> content ("" content with a trailing "/" in the path: a directory)
    media_type: str = GZIP

    def tar(self) -> bytes:
        out = io.BytesIO()
        with tarfile.open(fileobj=out, mode="w") as tar:
            for path in sorted(self.files):
                info = tarfile.TarInfo(path.rstrip("/"))
                data = self.files[path]
                if path.endswith("/"):
                    info.type = tarfile.DIRTYPE
                    tar.addfile(info)
                    continue
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        return out.getvalue()

    def blob(self) -> tuple[bytes, str]:
        raw = self.tar()
        if self.media_type == ZSTD:
            import zstandard

            return zstandard.ZstdCompressor(level=3).compress(raw), hashlib.sha256(raw).hexdigest()
        return gzip.compress(raw, compresslevel=1, mtime=0), hashlib.sha256(raw).hexdigest()


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass
class Pusher:
    instance: Instance
    repository: str
    token: str | None = None

    def _client(self) -> httpx.Client:
        return httpx.Client(timeout=120)

    def _auth(self, response: httpx.Response, client: httpx.Client) -> None:
        challenge = response.headers.get("www-authenticate", "")
        assert self.instance.auth is not None
        parsed = parse_challenge(challenge)
        if parsed is not None and parsed.scheme == "bearer":
            params = parsed.params
            r = client.get(
                params["realm"],
                params={"service": params["service"], "scope": f"repository:{self.repository}:pull,push"},
                auth=self.instance.auth,
            )
            self.token = r.json()["token"]

    def _request(self, client: httpx.Client, method: str, url: str, **kw: object) -> httpx.Response:
        for _ in range(2):
            headers = dict(kw.pop("headers", {}) or {})  # type: ignore[call-overload]
            if self.token:
                headers["Authorization"] = f"Bearer {self.token}"
            auth = self.instance.auth if not self.token and self.instance.auth else None
            r = client.request(method, url, headers=headers, auth=auth, **kw)  # type: ignore[arg-type]
            if r.status_code != 401:
                return r
            self._auth(r, client)
            kw["headers"] = headers
        return r

    def blob(self, client: httpx.Client, data: bytes) -> str:
        digest = digest_of(data)
        base = f"http://{self.instance.host}/v2/{self.repository}"
        r = self._request(client, "POST", f"{base}/blobs/uploads/")
        assert r.status_code == 202, r.text
        location = r.headers["location"]
        if location.startswith("/"):
            location = f"http://{self.instance.host}{location}"
        sep = "&" if "?" in location else "?"
        url = urlsplit(f"{location}{sep}digest={digest}")
        # http.client sends the body with one sendall: httpx moves a multi-GB body at a few MB/s here.
        conn = http.client.HTTPConnection(url.netloc, timeout=600)
        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(len(data))}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        elif self.instance.auth:
            headers["Authorization"] = "Basic " + base64.b64encode(":".join(self.instance.auth).encode()).decode()
        conn.request("PUT", f"{url.path}?{url.query}", body=data, headers=headers)
        response = conn.getresponse()
        status, text = response.status, response.read()[:500]
        conn.close()
        assert status == 201, (status, text)
        return digest

    def manifest(self, client: httpx.Client, tag: str, body: bytes, media_type: str) -> str:
        url = f"http://{self.instance.host}/v2/{self.repository}/manifests/{tag}"
        r = self._request(client, "PUT", url, content=body, headers={"Content-Type": media_type})
        assert r.status_code == 201, r.text
        return digest_of(body)


@dataclass(frozen=True)
class Pushed:
    ref: str
    digest: str  # the platform manifest's
    layers: tuple[tuple[str, int], ...]  # (digest, size), bottom first
    size: int


def push_image(
    instance: Instance, repository: str, tag: str, layers: Sequence[Layer], index: bool = True, big: int = 0
) -> Pushed:
    """Push ``layers`` (bottom first), under a bottom layer of ``big`` random bytes when asked; as an OCI index
    with linux/amd64 (and a decoy arm64 manifest) when ``index``."""
    pusher = Pusher(instance, repository)
    with pusher._client() as client:
        descriptors, diff_ids = [], []
        blobs = []
        if big:
            data = _big_layer(big)
            blobs.append((data, PLAIN))
            diff_ids.append(digest_of(data))  # uncompressed: its diff id is its digest
        for layer in layers:
            data, diff = layer.blob()
            blobs.append((data, layer.media_type))
            diff_ids.append("sha256:" + diff)
        for data, media_type in blobs:
            descriptors.append({"mediaType": media_type, "digest": pusher.blob(client, data), "size": len(data)})
        config = json.dumps(
            {
                "architecture": "amd64",
                "os": "linux",
                "rootfs": {"type": "layers", "diff_ids": diff_ids},
                "config": {"Env": ["PATH=/usr/bin"]},
            }
        ).encode()
        cdesc = {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": pusher.blob(client, config),
            "size": len(config),
        }
        manifest = json.dumps(
            {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": cdesc, "layers": descriptors}
        ).encode()
        digest = pusher.manifest(client, digest_of(manifest), manifest, OCI_MANIFEST)
        if index:
            decoy = json.dumps(
                {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": cdesc, "layers": descriptors[-1:]}
            ).encode()
            pusher.manifest(client, digest_of(decoy), decoy, OCI_MANIFEST)
            idx = json.dumps(
                {
                    "schemaVersion": 2,
                    "mediaType": OCI_INDEX,
                    "manifests": [
                        {
                            "mediaType": OCI_MANIFEST,
                            "digest": digest_of(decoy),
                            "size": len(decoy),
                            "platform": {"os": "linux", "architecture": "arm64"},
                        },
                        {
                            "mediaType": OCI_MANIFEST,
                            "digest": digest,
                            "size": len(manifest),
                            "platform": {"os": "linux", "architecture": "amd64"},
                        },
                    ],
                }
            ).encode()
            pusher.manifest(client, tag, idx, OCI_INDEX)
        else:
            pusher.manifest(client, tag, manifest, OCI_MANIFEST)
    return Pushed(
        f"{instance.host}/{repository}:{tag}",
        digest,
        tuple((str(d["digest"]), int(d["size"])) for d in descriptors),  # type: ignore[call-overload]
        sum(int(d["size"]) for d in descriptors),  # type: ignore[call-overload]
    )


def _big_layer(size: int) -> bytes:
    """An uncompressed layer of ``size`` random bytes in one file (random data would not compress anyway, and
    compressing gigabytes in Python takes minutes)."""
    import os

    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        info = tarfile.TarInfo("usr/lib/big.bin")
        info.size = size
        tar.addfile(info, io.BytesIO(os.urandom(size)))
    return raw.getvalue()


def dist_info(site: str, name: str, version: str, requires: Sequence[str] = ()) -> dict[str, bytes]:
    folder = f"{site}/{name.replace('-', '_')}-{version}.dist-info"
    meta = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n" + "".join(
        f"Requires-Dist: {r}\n" for r in requires
    )
    return {f"{folder}/METADATA": meta.encode(), f"{folder}/RECORD": b""}


SITE = "usr/local/lib/python3.12/dist-packages"
BACKEND = "opt/tritonserver/backends/vllm"


def vllm_tree(iset: ImportSet, fields: Sequence[str]) -> dict[str, bytes]:
    """A vLLM package that defines exactly what ``iset`` imports, calls (with those keywords) and reads, and an
    ``AsyncEngineArgs`` dataclass with ``fields``: what an NVIDIA build would have to hold for that backend."""
    classes: dict[str, dict[str, list[str]]] = {}  # module -> class or function -> members/keywords
    for imp in iset.imports:
        for name in imp.names:
            classes.setdefault(imp.module, {}).setdefault(name, [])
    for call in (*iset.calls, *iset.attributes):
        module, qual = call.target.split(":")
        classes.setdefault(module, {}).setdefault(qual.split(".")[0], [])
        if "." in qual:
            classes[module][qual.split(".")[0]].append(
                f"def {qual.split('.')[1]}(self, *, {', '.join([*call.keywords, 'x=None'])}): ..."
            )
        else:
            classes[module][qual].extend(f"{k}: object = None" for k in call.keywords)
    classes.setdefault("vllm.engine.arg_utils", {}).setdefault("AsyncEngineArgs", []).extend(
        f"{k}: object = None" for k in fields
    )
    files: dict[str, bytes] = {f"{SITE}/vllm/__init__.py": b""}
    for module, names in classes.items():
        lines = ["from dataclasses import dataclass", ""]
        for name, members in names.items():
            body = sorted(set(members)) or ["pass"]
            lines += ["@dataclass", f"class {name}:", *(f"    {m}" for m in body), ""]
        parts = module.split(".")
        for i in range(2, len(parts)):
            files.setdefault(f"{SITE}/{'/'.join(parts[:i])}/__init__.py", b"")
        files[f"{SITE}/{'/'.join(parts)}.py"] = "\n".join(lines).encode()
    return files


def backend_files(iset: ImportSet, extern: tuple[str, ...], tmp: Path) -> dict[str, bytes]:
    from tests.integration.backend_source import write_backend

    root = write_backend(tmp / "backend", iset, extern)
    return {f"{BACKEND}/{p.relative_to(root)}": p.read_bytes() for p in root.rglob("*.py")}


def triton_layers(
    iset: ImportSet,
    extern: tuple[str, ...],
    fields: Sequence[str],
    tmp: Path,
    vllm: str,
    transformers: str,
    zstd: bool = True,
) -> list[Layer]:
    """A Triton vllm-python image's layers, bottom first: torch and numpy (zstd, or gzip for an engine that
    cannot pull zstd: Docker before 23), vLLM and transformers (gzip), the backend on top with a whiteout hiding
    an old numpy below."""
    lower = ZSTD if zstd else GZIP
    base = Layer(
        {
            **dist_info(SITE, "torch", "2.12.0a0+5aff3928d8"),
            **dist_info(SITE, "numpy", "1.0.0"),
            f"{SITE}/torch/__init__.py": b"x = 1\n" * 20000,
        },
        lower,
    )
    upper = Layer({**dist_info(SITE, "numpy", "1.26.4")}, lower)
    engine = Layer(
        {
            **vllm_tree(iset, fields),
            **dist_info(SITE, "vllm", vllm, ["numpy", "pillow", "torch", "transformers>=4.56"]),
            **dist_info(SITE, "transformers", transformers),
        },
        GZIP,
    )
    top = Layer({**backend_files(iset, extern, tmp), f"{SITE}/.wh.numpy-1.0.0.dist-info": b""}, GZIP)
    return [base, upper, engine, top]
