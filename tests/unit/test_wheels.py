"""The wheel facts layer against a loopback HTTP server: range reads, the no-range fallback, PEP 691/503
listings, PEP 658 metadata, the cache, offline use and a wheelhouse."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from stackmatrix.errors import InfraUnavailable
from stackmatrix.wheels.http import Http
from stackmatrix.wheels.index import Index, VersionNotFound
from stackmatrix.wheels.reader import WheelReader
from tests.mirror import Server, make_wheel


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


def _open(
    server: Server, cache: Path, flavour: str = "json", offline: bool = False, ttl_s: float = 3600
) -> tuple[Index, WheelReader]:
    http = Http(offline=offline)
    return Index(http, cache, f"{server.url}/{flavour}", ttl_s=ttl_s), WheelReader(http, cache)


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


def test_unreachable_index_uses_the_cached_listing(server: Server, tmp_path: Path) -> None:
    index, _ = _open(server, tmp_path)
    assert index.versions("demo")
    server.httpd.shutdown()
    server.httpd.server_close()
    index2, _ = _open(server, tmp_path, ttl_s=0.0)
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


def test_a_tag_that_is_not_a_cpython_version_is_skipped_not_a_crash() -> None:
    """`…-cp3x-abi3-…` on the index made every probing command exit 1: such a wheel is not a candidate; a real
    abi3 wheel for an older CPython 3 is, one for CPython 4 or a newer 3.x is not."""
    from stackmatrix.wheels.index import WheelFile, _pick

    def wheel(name: str) -> WheelFile:
        return WheelFile("x", "1", name, f"https://files.example/{name}", None, None, None, None, False)

    odd = wheel("x-1-cp3x-abi3-manylinux_2_28_x86_64.whl")
    old = wheel("x-1-cp38-abi3-manylinux_2_28_x86_64.whl")
    newer = wheel("x-1-cp313-abi3-manylinux_2_28_x86_64.whl")
    four = wheel("x-1-cp40-abi3-manylinux_2_28_x86_64.whl")
    assert _pick([odd], "3.11", "x86_64") is None
    assert _pick([odd, old, newer, four], "3.11", "x86_64") is old


@pytest.mark.parametrize("when", ["2026-01-01T00:00:00Z\n\n## pwned", "\ud800", "yesterday", "2" * 100])
def test_an_upload_time_that_is_not_rfc_3339_is_dropped_where_it_enters(when: str) -> None:
    """A newline and a heading in it became a heading in the diff's news; a lone surrogate broke `--output`."""
    from stackmatrix.wheels.index import _json_files

    entry = {"filename": "vllm-0.32.0-py3-none-any.whl", "url": "vllm-0.32.0-py3-none-any.whl", "upload-time": when}
    (wheel,) = _json_files("vllm", "https://index.example/simple/vllm/", {"files": [entry]})
    assert wheel.upload_time is None
    good = {**entry, "upload-time": "2026-01-01T00:00:00.123456Z"}
    (wheel,) = _json_files("vllm", "https://index.example/simple/vllm/", {"files": [good]})
    assert wheel.upload_time == "2026-01-01T00:00:00.123456Z"


class _Hostile:
    """A loopback host for one hostile answer: a listing that is a gzip bomb or just too big, or a wheel whose
    Content-Range claims 4 GiB and whose end record claims a 3.5 GiB central directory."""

    def __init__(self) -> None:
        import gzip
        import struct
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        bomb = gzip.compress(b"\0" * (96 << 20), compresslevel=6)  # 96 MiB of zeros (the cap is 64) in 100 KB
        size_cd, total = 3_500_000_000, 4 << 30
        eocd = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, 1, 1, size_cd, total - 22 - size_cd, 0)
        tail = b"\0" * (1024 - len(eocd)) + eocd

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.startswith("/bomb"):
                    body, extra = bomb, {"Content-Encoding": "gzip", "Content-Type": "application/json"}
                elif self.path.startswith("/big"):
                    body, extra = b" " * (70 << 20), {"Content-Type": "application/json"}
                else:  # the wheel: whatever range is asked, its last KiB
                    body, extra = tail, {"Content-Range": f"bytes {total - len(tail)}-{total - 1}/{total}"}
                self.send_response(206 if "Content-Range" in extra else 200)
                for k, v in {**extra, "Content-Length": str(len(body))}.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.handle_error = lambda *args: None  # type: ignore[method-assign]  # a client that hung up
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"


@pytest.fixture(scope="module")
def hostile() -> Iterator[_Hostile]:
    host = _Hostile()
    yield host
    host.server.shutdown()


def test_a_listing_too_big_or_a_gzip_bomb_is_refused(hostile: _Hostile) -> None:
    """A 2 GiB listing took 4.2 GB: now its bytes as sent and once decoded are capped (exit 4 naming the URL)."""
    http = Http()
    with pytest.raises(InfraUnavailable, match="decodes to more than"):
        http.get(f"{hostile.url}/bomb/", label="x")
    with pytest.raises(InfraUnavailable, match="sent more than"):
        http.get(f"{hostile.url}/big/", label="x")


def test_a_wheel_claiming_a_huge_central_directory_is_refused_before_any_buffer(hostile: _Hostile) -> None:
    import zipfile

    from stackmatrix.wheels.remote_zip import RangeFile

    with pytest.raises(InfraUnavailable, match="a read of 3500000000 bytes"):
        zipfile.ZipFile(RangeFile(Http(), f"{hostile.url}/x-1-py3-none-any.whl", label="x"))


def test_a_deflate_bomb_member_is_refused_before_it_is_inflated(tmp_path: Path) -> None:
    import zipfile

    from stackmatrix.wheels.index import WheelFile

    path = tmp_path / "vllm-0.1-py3-none-any.whl"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        zf.writestr("vllm/model_executor/models/registry.py", b"\0" * (64 << 20))
    wheel = WheelFile("vllm", "0.1", path.name, str(path), None, None, None, None, False)
    reader = WheelReader(Http(), tmp_path / "cache")
    with pytest.raises(InfraUnavailable, match="once inflated"):
        reader.member(wheel, "vllm/model_executor/models/registry.py")
    assert not list((tmp_path / "cache").rglob("registry.py"))  # nothing written into the cache
