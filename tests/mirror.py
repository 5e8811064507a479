"""A package-index mirror on loopback for tests that must not depend on PyPI: PEP 691 JSON and PEP 503 HTML
listings, HTTP range reads and PEP 658 metadata, optionally behind basic auth and a query token, and switchable
into the ways real mirrors misbehave (404 on files, garbage pages, bad JSON, missing keys, 500s).

``stack_mirror()`` serves small but well-formed vllm and transformers wheels (METADATA with the bounds, vLLM's
model registry, transformers' ``CONFIG_MAPPING_NAMES``), enough for the static tier to decide cells end to end.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

BIG = bytes(range(256)) * 16384  # 4 MiB of incompressible-ish filler, so members sit far from the end

# Ways a mirror misbehaves; "ok" serves what it holds.
MODES = (
    "ok",
    "404-files",
    "garbage-files",
    "garbage-html",
    "bad-json",
    "missing-keys",
    "wrong-types",
    "bad-hash",
    "500",
    "401",
)


def make_wheel(
    name: str,
    version: str,
    members: dict[str, str],
    *,
    requires: tuple[str, ...] = ("transformers<5,>=4.56", "pytest; extra == 'test'"),
    requires_python: str = ">=3.10",
    filler: bool = True,
) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for path, text in members.items():
            zf.writestr(path, text)
        if filler:
            zf.writestr(f"{name}/filler.bin", BIG, compress_type=zipfile.ZIP_STORED)
        meta = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\nRequires-Python: {requires_python}\n"
        meta += "".join(f"Requires-Dist: {r}\n" for r in requires)
        zf.writestr(f"{name.replace('-', '_')}-{version}.dist-info/METADATA", meta)
    return buf.getvalue()


class Server:
    """The mirror: ``/json/<project>/`` (PEP 691), ``/html/<project>/`` (PEP 503), ``/simple/<project>/``
    (JSON when asked for it, as PyPI does), ``/files/<name>``."""

    def __init__(self, *, user: str | None = None, password: str | None = None, token: str | None = None) -> None:
        self.files: dict[str, bytes] = {}
        self._listings: dict[str, list[dict[str, Any]]] = {}
        self.ranges = True
        self.metadata = True
        self.mode = "ok"
        self.user, self.password, self.token = user, password, token
        self.log: list[tuple[str, str | None]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                rng = self.headers.get("Range")
                server.log.append((self.path, rng))
                if not server._allowed(self.headers.get("Authorization"), self.path):
                    return self._send(401, b"who are you", "text/plain")
                path = urlsplit(self.path).path
                mode = server.mode
                listing = path.startswith(("/json/", "/html/", "/simple/")) and path.endswith("/")
                if mode == "500" or (mode == "401" and not listing):
                    return self._send(int(mode), b"mirror trouble", "text/plain")
                if listing and mode in ("garbage-html", "bad-json", "missing-keys", "wrong-types", "bad-hash"):
                    return self._misbehave(mode, path)
                if path.startswith("/simple/"):
                    path = ("/json/" if "json" in self.headers.get("Accept", "") else "/html/") + path[8:]
                if path.endswith(".metadata") and server.metadata and path[: -len(".metadata")] in server.files:
                    with zipfile.ZipFile(io.BytesIO(server.files[path[: -len(".metadata")]])) as zf:
                        meta = next(n for n in zf.namelist() if n.endswith("METADATA"))
                        return self._send(200, zf.read(meta), "text/plain")
                if mode == "garbage-files" and not listing:  # wheels and their metadata are not what they say
                    return self._send(200, bytes(range(256)) * 64, "application/zip")
                if path not in server.files or (mode == "404-files" and not listing):
                    return self._send(404, b"not found", "text/plain")
                data = server.files[path]
                ctype = (
                    "application/vnd.pypi.simple.v1+json"
                    if path.startswith("/json/")
                    else ("text/html" if path.endswith("/") else "application/zip")
                )
                m = re.match(r"bytes=(\d*)-(\d*)", rng or "")
                if not (m and server.ranges and ctype == "application/zip"):
                    return self._send(200, data, ctype)
                if m.group(1):
                    start, end = int(m.group(1)), int(m.group(2) or len(data) - 1)
                else:
                    start, end = max(0, len(data) - int(m.group(2))), len(data) - 1
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
                self.send_header("Content-Length", str(end - start + 1))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data[start : end + 1])

            do_HEAD = do_GET  # uv asks with HEAD whether a file takes range requests

            def _misbehave(self, mode: str, path: str) -> None:
                json_type = "application/vnd.pypi.simple.v1+json"
                if mode == "garbage-html":
                    body = b"<html><a href='\x00\xff'>\xfe\xfe<<<</a" + bytes(range(256)) + b"<![Qif\x1d"
                    return self._send(200, body, "text/html")  # html.parser asserts on the last bit
                if mode == "bad-json":
                    return self._send(200, b'{"files": [{"filename": ', json_type)
                if mode == "missing-keys":
                    return self._send(200, b'{"meta": {"api-version": "1.0"}}', json_type)
                project = path.rstrip("/").rsplit("/", 1)[-1]
                doc = json.loads(server.files.get(f"/json/{project}/", b'{"files": []}'))
                for f in doc["files"]:
                    if mode == "wrong-types":
                        f["size"], f["yanked"], f["hashes"] = "big", ["no"], "sha256"
                    else:  # a hash that would name a cache folder outside the cache
                        f["hashes"] = {"sha256": "../../../../../tmp/escaped"}
                return self._send(200, json.dumps(doc).encode(), json_type)

            def _send(self, code: int, body: bytes, ctype: str) -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                if ctype == "application/zip":
                    self.send_header("Accept-Ranges", "bytes")
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def _allowed(self, authorization: str | None, path: str) -> bool:
        if self.user is not None:
            want = base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
            if authorization != f"Basic {want}":
                return False
        if self.token is not None and path.startswith(("/json/", "/html/", "/simple/")):
            return parse_qs(urlsplit(path).query).get("token") == [self.token]
        return True

    @property
    def index_url(self) -> str:
        """The ``/simple`` URL a user would give, with the credentials and the token in it."""
        creds = f"{quote(self.user, safe='')}:{quote(self.password or '', safe='')}@" if self.user is not None else ""
        token = f"?token={self.token}" if self.token is not None else ""
        return f"http://{creds}{self.url[len('http://') :]}/simple{token}"

    def add_project(self, name: str, wheels: dict[str, bytes], upload: str = "2026-04-01T00:00:00Z") -> None:
        """Add wheels to a project's listing (both flavours are rewritten)."""
        entries = self._listings.setdefault(name, [])
        for fname, data in wheels.items():
            self.files[f"/files/{fname}"] = data
            sha = hashlib.sha256(data).hexdigest()
            entries.append(
                {
                    "filename": fname,
                    "url": f"/files/{fname}",
                    "hashes": {"sha256": sha},
                    "upload-time": upload,
                    "size": len(data),
                }
            )
        self._relist(name)

    def yank(self, name: str, version: str) -> None:
        """Mark every wheel of one release yanked (PEP 592), as an index does when its maintainers yank it."""
        for e in self._listings[name]:
            if e["filename"].split("-")[1] == version:
                e["yanked"] = True
        self._relist(name)

    def _relist(self, name: str) -> None:
        entries = self._listings[name]
        html = "".join(
            f'<a href="{e["url"]}#sha256={e["hashes"]["sha256"]}"{" data-yanked" if e.get("yanked") else ""}>'
            f"{e['filename']}</a>"
            for e in entries
        )
        self.files[f"/json/{name}/"] = json.dumps({"files": entries}).encode()
        self.files[f"/html/{name}/"] = f"<html><body>{html}</body></html>".encode()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


_REGISTRY = "_TEXT_GENERATION_MODELS = {{{models}}}\n"
_CONFIG_AUTO = "CONFIG_MAPPING_NAMES = OrderedDict([{types}])\n"


def _vllm(version: str, bound: str, gemma4: bool) -> bytes:
    models = '"LlamaForCausalLM": ("llama", "LlamaForCausalLM"),'
    members = {"vllm/model_executor/models/llama.py": "class LlamaForCausalLM: ...\n"}
    if gemma4:
        models += '"Gemma4ForCausalLM": ("gemma4", "Gemma4ForCausalLM"),'
        models += '"Gemma4ForConditionalGeneration": ("gemma4_mm", "Gemma4ForConditionalGeneration"),'
        members["vllm/model_executor/models/gemma4.py"] = "class Gemma4ForCausalLM: ...\n"
        members["vllm/model_executor/models/gemma4_mm.py"] = "class Gemma4ForConditionalGeneration: ...\n"
    members["vllm/model_executor/models/registry.py"] = _REGISTRY.format(models=models)
    return make_wheel("vllm", version, members, requires=(f"transformers{bound}",), filler=False)


def _transformers(version: str, gemma4: bool) -> bytes:
    types = '("llama", "LlamaConfig"),' + ('("gemma4", "Gemma4Config"), ("gemma4_text", "Gemma4TextConfig"),' * gemma4)
    members = {"transformers/models/auto/configuration_auto.py": _CONFIG_AUTO.format(types=types)}
    return make_wheel("transformers", version, members, requires=(), requires_python=">=3.9", filler=False)


def stack_mirror(**auth: str | None) -> Server:
    """vllm 0.18.0 (no Gemma 4, transformers<5), 0.19.0 (Gemma 4, transformers<5) and 0.20.0 (Gemma 4,
    transformers>=5.5); transformers 4.57.6 (no gemma4), 5.5.0 and 5.6.0 (gemma4)."""
    server = Server(**auth)
    for version, bound, gemma4, day in (
        ("0.18.0", "<5,>=4.56", False, "2026-03-20"),
        ("0.19.0", "<5,>=4.56", True, "2026-04-03"),
        ("0.20.0", ">=5.5.0", True, "2026-05-01"),
    ):
        wheel = f"vllm-{version}-cp38-abi3-manylinux_2_28_x86_64.whl"
        server.add_project("vllm", {wheel: _vllm(version, bound, gemma4)}, upload=f"{day}T00:00:00Z")
    for version, gemma4, day in (
        ("4.57.6", False, "2026-01-10"),
        ("5.5.0", True, "2026-04-02"),
        ("5.6.0", True, "2026-04-20"),
    ):
        wheel = f"transformers-{version}-py3-none-any.whl"
        server.add_project("transformers", {wheel: _transformers(version, gemma4)}, upload=f"{day}T00:00:00Z")
    return server


# A matrix the mirror can answer: 2 vLLM releases x 2 transformers rules x 2 models x 2 targets.
SMALL_MATRIX = """
[settings]
python = "3.12"
[targets.l4x1]
gpu = "L4"
count = 1
tp = 1
[targets.h100x1]
gpu = "H100-80GB"
count = 1
tp = 1
[models]
include = ["google/gemma-4-E4B-it", "google/gemma-4-31B-it"]
[[stack]]
kind = "vllm"
vllm = ["0.19.0", "0.20.0"]
transformers = ["@release-day", "@newest"]
"""
