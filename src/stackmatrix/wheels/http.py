"""One HTTP client for the index and the wheel hosts, counting the bytes fetched per label."""

from __future__ import annotations

import os
import ssl
import threading
import time
from collections import Counter

import httpx

from stackmatrix.errors import InfraUnavailable
from stackmatrix.redact import redact

RETRIES = 2  # transient connection errors; the environment's proxy settings (HTTPS_PROXY, NO_PROXY) apply


class Http:
    def __init__(self, *, offline: bool = False, timeout: float = 60.0) -> None:
        self.offline = offline
        self.bytes_by_label: Counter[str] = Counter()
        self.requests = 0
        self.down: str | None = None
        self._lock = threading.Lock()
        self._client: httpx.Client | None = None
        self._timeout = timeout

    @property
    def client(self) -> httpx.Client:
        if self._client is None:
            # The system trust store (or SSL_CERT_FILE): sites behind a TLS-intercepting proxy add their CA there.
            ctx = ssl.create_default_context(cafile=os.environ.get("SSL_CERT_FILE"))
            self._client = httpx.Client(
                timeout=self._timeout,
                verify=ctx,
                follow_redirects=True,
                limits=httpx.Limits(max_connections=32, max_keepalive_connections=16),
            )
        return self._client

    def get(self, url: str, *, label: str, headers: dict[str, str] | None = None) -> httpx.Response:
        if self.offline:
            raise InfraUnavailable(f"offline: not fetching {url}")
        if self.down is not None:  # one unreachable host per run is enough: do not wait on it again
            raise InfraUnavailable(self.down)
        for attempt in range(RETRIES + 1):
            try:
                response = self.client.get(url, headers=headers)
            except httpx.TransportError as exc:
                if attempt == RETRIES or isinstance(exc, httpx.ProxyError):
                    self.down = redact(f"cannot reach {url}: {exc!r}")
                    raise InfraUnavailable(self.down) from exc
            else:
                if response.status_code < 500 and response.status_code != 429:
                    break
                if attempt == RETRIES:  # the index is there but failing: infrastructure, not a verdict
                    raise InfraUnavailable(redact(f"{url} answered HTTP {response.status_code}"))
            time.sleep(0.5 * (attempt + 1))
        with self._lock:
            self.requests += 1
            self.bytes_by_label[label] += len(response.content)
        return response

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
