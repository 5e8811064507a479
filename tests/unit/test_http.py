"""Network bounds: every request has a connect and a read timeout, a host that does not answer in time is not
waited for again, and the outcome is exit 4 naming the URL (redacted) — against real sockets on loopback."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from stackmatrix.cli.main import main
from stackmatrix.errors import InfraUnavailable
from stackmatrix.wheels.http import Http
from tests.mirror import Server, stack_mirror


@pytest.fixture
def silent() -> Iterator[str]:
    """A host that accepts connections and never says a word."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    sock.close()


@pytest.fixture
def black_hole() -> Iterator[str]:
    """A host whose accept queue is full: the kernel drops further SYNs, so a connect never completes."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(0)
    port = sock.getsockname()[1]
    fillers = []
    for _ in range(4):  # fill the backlog (Linux admits backlog + 1)
        c = socket.socket()
        c.setblocking(False)
        c.connect_ex(("127.0.0.1", port))
        fillers.append(c)
    time.sleep(0.2)
    yield f"http://127.0.0.1:{port}"
    for c in fillers:
        c.close()
    sock.close()


@pytest.mark.parametrize("host", ["silent", "black_hole"])
def test_a_host_that_does_not_answer_is_waited_for_once(host: str, request: pytest.FixtureRequest) -> None:
    url = request.getfixturevalue(host)
    http = Http(connect_timeout=0.5, read_timeout=0.5)
    t0 = time.perf_counter()
    with pytest.raises(InfraUnavailable, match="no answer in time"):
        http.get(f"{url}/simple/vllm/", label="x")
    first = time.perf_counter() - t0
    with pytest.raises(InfraUnavailable):
        http.get(f"{url}/simple/other/", label="x")
    assert first < 3 and time.perf_counter() - t0 - first < 0.1  # the second is refused at once


def test_a_silent_index_is_exit_4_within_the_timeouts(
    silent: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = silent.replace("http://", "http://user:pw-0123456789@") + "/simple?token=tok-0123456789"
    t0 = time.perf_counter()
    argv = ["list", "--index-url", url, "--cache-dir", str(tmp_path), "--connect-timeout", "1", "--read-timeout", "1"]
    assert main(argv) == 4
    assert time.perf_counter() - t0 < 10
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no answer in time" in err
    assert "pw-0123456789" not in err and "tok-0123456789" not in err


def test_server_errors_are_retried_then_exit_4(tmp_path: Path) -> None:
    mirror = stack_mirror()
    try:
        mirror.mode = "500"
        http = Http()
        with pytest.raises(InfraUnavailable, match="HTTP 500"):
            http.get(f"{mirror.url}/json/vllm/", label="x")
        assert len(mirror.log) == 3  # the first try and two retries
    finally:
        mirror.close()


def test_credentials_go_to_their_host_only() -> None:
    mirror = Server(user="alice", password="pw-secret")
    other = Server()
    try:
        http = Http()
        assert http.add_credentials(f"http://alice:pw-secret@{mirror.url[7:]}/simple") == f"{mirror.url}/simple"
        mirror.files["/x"] = other.files["/x"] = b"x"
        assert http.get(f"{mirror.url}/x", label="x").status_code == 200
        assert http.get(f"{other.url}/x", label="x").status_code == 200
        assert Http().get(f"{mirror.url}/x", label="x").status_code == 401
    finally:
        mirror.close()
        other.close()


def test_a_host_dripping_bytes_is_cut_off() -> None:
    """Each byte comes within the read timeout; the transfer as a whole is far below any usable rate."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(4)

    def drip() -> None:
        conn, _ = sock.accept()
        conn.recv(65536)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\nContent-Type: text/html\r\n\r\n")
        try:
            for _ in range(100):
                conn.sendall(b"x")
                time.sleep(0.2)
        except OSError:
            pass
        conn.close()

    threading.Thread(target=drip, daemon=True).start()
    http = Http(connect_timeout=1, read_timeout=0.5)
    t0 = time.perf_counter()
    with pytest.raises(InfraUnavailable, match="no answer in time"):
        http.get(f"http://127.0.0.1:{sock.getsockname()[1]}/simple/vllm/", label="x")
    assert time.perf_counter() - t0 < 3
    sock.close()


class _Redirector:
    """A loopback HTTP server that answers every GET with a redirect to ``target`` and records each request."""

    def __init__(self, target: str) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.seen: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.seen.append(self.path)
                self.send_response(302)
                self.send_header("Location", target)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()


@pytest.mark.parametrize(
    ("target", "why"),
    [
        ("http://169.254.169.254/latest/meta-data/", "link-local"),
        ("https://[fe80::1]/simple/", "link-local"),
        ("http://192.0.2.7/simple/vllm/", "plain HTTP off loopback"),
    ],
)
def test_a_redirect_to_link_local_or_to_plain_http_off_loopback_is_not_followed(target: str, why: str) -> None:
    """Exit 4 naming the redirect, and nothing asked of the target (a metadata service, a plain-text host)."""
    redirector = _Redirector(target)
    try:
        t0 = time.perf_counter()
        with pytest.raises(InfraUnavailable, match=why):
            Http(connect_timeout=5, read_timeout=5).get(f"{redirector.url}/simple/vllm/", label="x")
        assert time.perf_counter() - t0 < 2  # refused before any connection to the target was tried
    finally:
        redirector.close()
    loop = _Redirector("http://127.0.0.1:9/elsewhere")  # plain HTTP on loopback: followed (and refused there)
    try:
        with pytest.raises(InfraUnavailable, match="Connection refused"):
            Http(connect_timeout=1, read_timeout=1).get(f"{loop.url}/simple/vllm/", label="x")
    finally:
        loop.close()
