"""The wheel facts layer against a loopback HTTP server: range reads, the no-range fallback, PEP 691/503
listings, PEP 658 metadata, the cache, offline use and a wheelhouse."""

from __future__ import annotations

import hashlib
import io
import json
import re
import threading
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from stackmatrix.errors import InfraUnavailable
from stackmatrix.wheels.http import Http
from stackmatrix.wheels.index import Index, VersionNotFound
from stackmatrix.wheels.reader import WheelReader

BIG = bytes(range(256)) * 16384  # 4 MiB of incompressible-ish filler, so members sit far from the end


def make_wheel(name: str, version: str, members: dict[str, str]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for path, text in members.items():
            zf.writestr(path, text)
        zf.writestr(f"{name}/filler.bin", BIG, compress_type=zipfile.ZIP_STORED)
        zf.writestr(
            f"{name}-{version}.dist-info/METADATA",
            f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\nRequires-Python: >=3.10\n"
            "Requires-Dist: transformers<5,>=4.56\nRequires-Dist: pytest; extra == 'test'\n",
        )
    return buf.getvalue()


class Server:
    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.ranges = True
        self.metadata = True
        self.log: list[tuple[str, str | None]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                rng = self.headers.get("Range")
                server.log.append((self.path, rng))
                path = self.path
                if path.endswith(".metadata") and server.metadata:
                    with zipfile.ZipFile(io.BytesIO(server.files[path[: -len(".metadata")]])) as zf:
                        meta = next(n for n in zf.namelist() if n.endswith("METADATA"))
                        return self._send(200, zf.read(meta), "text/plain")
                if path not in server.files:
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
                self.wfile.write(data[start : end + 1])

            def _send(self, code: int, body: bytes, ctype: str) -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def add_project(self, name: str, wheels: dict[str, bytes]) -> None:
        files = []
        html = []
        for fname, data in wheels.items():
            self.files[f"/files/{fname}"] = data
            sha = hashlib.sha256(data).hexdigest()
            files.append(
                {
                    "filename": fname,
                    "url": f"/files/{fname}",
                    "hashes": {"sha256": sha},
                    "upload-time": "2026-04-01T00:00:00Z",
                    "size": len(data),
                }
            )
            html.append(f'<a href="/files/{fname}#sha256={sha}">{fname}</a>')
        self.files[f"/json/{name}/"] = json.dumps({"files": files}).encode()
        self.files[f"/html/{name}/"] = ("<html><body>" + "".join(html) + "</body></html>").encode()


@pytest.fixture
def server() -> Iterator[Server]:
    s = Server()
    s.add_project(
        "demo",
        {
            "demo-1.0.0-py3-none-any.whl": make_wheel("demo", "1.0.0", {"demo/registry.py": "A = 1\n"}),
            "demo-1.1.0-cp38-abi3-manylinux_2_28_x86_64.whl": make_wheel(
                "demo", "1.1.0", {"demo/registry.py": "B = 2\n"}
            ),
            "demo-1.1.0-cp38-abi3-manylinux_2_28_aarch64.whl": make_wheel("demo", "1.1.0", {"demo/registry.py": "C\n"}),
        },
    )
    yield s
    s.httpd.shutdown()


def _open(server: Server, cache: Path, flavour: str = "json", offline: bool = False) -> tuple[Index, WheelReader]:
    http = Http(offline=offline)
    return Index(http, cache, f"{server.url}/{flavour}"), WheelReader(http, cache)


@pytest.mark.parametrize("flavour", ["json", "html"])
def test_listing_and_platform_pick(server: Server, tmp_path: Path, flavour: str) -> None:
    index, _ = _open(server, tmp_path, flavour)
    assert [str(v) for v in index.versions("demo")] == ["1.0.0", "1.1.0"]
    assert index.wheel("demo", "1.1.0", python="3.12").filename.endswith("x86_64.whl")
    assert index.wheel("demo", "1.1.0", python="3.12", platform="aarch64").filename.endswith("aarch64.whl")
    with pytest.raises(VersionNotFound, match=r"demo==9\.9"):
        index.wheel("demo", "9.9")


def test_member_read_by_ranges_not_whole_wheel(server: Server, tmp_path: Path) -> None:
    index, reader = _open(server, tmp_path)
    wheel = index.wheel("demo", "1.1.0", python="3.12")
    assert reader.member(wheel, "demo/registry.py") == b"B = 2\n"
    assert reader.member(wheel, "demo/missing.py") is None
    fetched = reader.http.bytes_by_label["demo==1.1.0"]
    assert 0 < fetched < len(server.files[f"/files/{wheel.filename}"]) / 4
    assert all(r is not None for p, r in server.log if p.startswith("/files/") and p.endswith(".whl"))


def test_no_range_support_falls_back_to_the_whole_file(server: Server, tmp_path: Path) -> None:
    server.ranges = False
    index, reader = _open(server, tmp_path)
    wheel = index.wheel("demo", "1.1.0", python="3.12")
    assert reader.member(wheel, "demo/registry.py") == b"B = 2\n"
    assert reader.http.bytes_by_label["demo==1.1.0"] == len(server.files[f"/files/{wheel.filename}"])


def test_metadata_pep658_then_member_fallback(server: Server, tmp_path: Path) -> None:
    index, reader = _open(server, tmp_path)
    wheel = index.wheel("demo", "1.1.0", python="3.12")
    assert "Requires-Dist: transformers<5,>=4.56" in reader.metadata(wheel)
    assert not any(p.endswith(".whl") for p, _ in server.log)  # PEP 658: no byte of the wheel read
    server.metadata = False
    index2, reader2 = _open(server, tmp_path / "other")
    assert "Version: 1.1.0" in reader2.metadata(index2.wheel("demo", "1.1.0", python="3.12"))


def test_cache_serves_offline_and_missing_cache_is_infra_error(server: Server, tmp_path: Path) -> None:
    index, reader = _open(server, tmp_path)
    wheel = index.wheel("demo", "1.1.0", python="3.12")
    reader.member(wheel, "demo/registry.py")
    reader.fact(wheel, "k", lambda: {"v": 1})
    reader.flush()
    server.httpd.shutdown()
    index2, reader2 = _open(server, tmp_path, offline=True)
    w2 = index2.wheel("demo", "1.1.0", python="3.12")
    assert reader2.member(w2, "demo/registry.py") == b"B = 2\n"
    assert reader2.fact(w2, "k", lambda: pytest.fail("recomputed")) == {"v": 1}
    assert reader2.member(w2, "demo/other.py") is None  # the cached member list says so, no network needed
    with pytest.raises(InfraUnavailable):
        reader2.member(w2, "demo/filler.bin")  # listed in the cached names, bytes not cached
    with pytest.raises(InfraUnavailable):
        _open(server, tmp_path / "empty", offline=True)[0].versions("demo")


def test_unreachable_index_uses_the_cached_listing(
    server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    index, _ = _open(server, tmp_path)
    assert index.versions("demo")
    server.httpd.shutdown()
    server.httpd.server_close()
    monkeypatch.setattr("stackmatrix.wheels.index.INDEX_TTL_S", 0.0)
    index2, _ = _open(server, tmp_path)
    assert [str(v) for v in index2.versions("demo")] == ["1.0.0", "1.1.0"]
    assert index2.unreachable is not None


def test_wheelhouse(tmp_path: Path) -> None:
    house = tmp_path / "house"
    house.mkdir()
    (house / "demo-2.0.0-py3-none-any.whl").write_bytes(make_wheel("demo", "2.0.0", {"demo/x.py": "X = 1\n"}))
    http = Http(offline=True)
    index = Index(http, tmp_path / "cache", "http://127.0.0.1:9/simple", find_links=house)
    reader = WheelReader(http, tmp_path / "cache")
    wheel = index.wheel("demo", "2.0.0")
    assert reader.member(wheel, "demo/x.py") == b"X = 1\n"
    assert "Version: 2.0.0" in reader.metadata(wheel)
