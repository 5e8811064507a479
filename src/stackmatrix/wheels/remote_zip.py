"""A read-only, seekable file over HTTP range requests, so :mod:`zipfile` reads only what it needs.

A wheel is a zip whose central directory sits at its end: one suffix request finds it, then each member
costs one more request. A server that ignores ``Range`` answers 200 with the whole file, which we keep:
that is the full-download fallback.
"""

from __future__ import annotations

import io
import re
from bisect import bisect_right

from stackmatrix.errors import InfraUnavailable
from stackmatrix.redact import redact
from stackmatrix.wheels.http import Http, expect

_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+)")
TAIL_BYTES = 256 * 1024  # the central directory of most wheels, vLLM's included, fits in one suffix read
MIN_READ = 64 * 1024
MAX_READ = 64 * 1024 * 1024  # one read (a central directory, a member): torch's central directory is 3 MB
WHOLE = 4 * 1024 * 1024 * 1024  # a server that ignores Range sends the whole wheel: the biggest it may be


class RangeFile(io.RawIOBase):
    def __init__(self, http: Http, url: str, *, label: str) -> None:
        super().__init__()
        self._http, self._url, self._label = http, url, label
        self._starts: list[int] = []
        self._chunks: list[bytes] = []
        self._pos = 0
        self.size = self._fetch_tail()

    def _store(self, start: int, data: bytes) -> None:
        i = bisect_right(self._starts, start)
        self._starts.insert(i, start)
        self._chunks.insert(i, data)

    def _fetch_tail(self) -> int:
        response = self._http.get(
            self._url, label=self._label, headers={"Range": f"bytes=-{TAIL_BYTES}"}, max_bytes=WHOLE
        )
        expect(response, self._url, 200, 206)
        if response.status_code == 206:
            m = _CONTENT_RANGE.match(response.headers.get("content-range", ""))
            if not m or int(m.group(2)) - int(m.group(1)) + 1 != len(response.content):
                got = response.headers.get("content-range")
                raise InfraUnavailable(redact(f"Content-Range {got!r} does not fit the body from {self._url}"))
            self._store(int(m.group(1)), response.content)
            return int(m.group(3))
        self._store(0, response.content)  # no range support: we hold the whole file now
        return len(response.content)

    def _covered(self, start: int, end: int) -> bytes | None:
        i = bisect_right(self._starts, start) - 1
        if i >= 0:
            cstart, chunk = self._starts[i], self._chunks[i]
            if cstart + len(chunk) >= end:
                return chunk[start - cstart : end - cstart]
        return None

    def _fetch(self, start: int, end: int) -> None:
        end = min(self.size, max(end, start + MIN_READ))
        headers = {"Range": f"bytes={start}-{end - 1}"}
        response = self._http.get(self._url, label=self._label, headers=headers, max_bytes=WHOLE)
        expect(response, self._url, 200, 206)
        if response.status_code != 206:
            self._starts, self._chunks = [], []
            self._store(0, response.content)
        else:
            self._store(start, response.content)

    # io.RawIOBase
    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self.size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        _bounded(len(buffer), self._url)
        start = self._pos
        end = min(self.size, start + len(buffer))
        if end <= start:
            return 0
        data = self._covered(start, end)
        if data is None:
            self._fetch(start, end)
            data = self._covered(start, end)
            if data is None:  # the server answered another range than the one asked for
                raise InfraUnavailable(redact(f"the answer holds no bytes {start}-{end - 1} of {self._url}"))
        buffer[: len(data)] = data
        self._pos = end
        return len(data)

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            size = self.size - self._pos
        _bounded(min(size, self.size - self._pos), self._url)  # before the buffer is made
        buf = bytearray(size)
        n = self.readinto(buf)
        return bytes(buf[:n])


def _bounded(size: int, url: str) -> None:
    """One read of at most ``MAX_READ`` bytes: a wheel whose end record claims a 3.5 GiB central directory made
    3.7 GB of buffer before anything was fetched."""
    if size > MAX_READ:
        raise InfraUnavailable(redact(f"{url}: a read of {size} bytes (at most {MAX_READ}): not a wheel's"))
