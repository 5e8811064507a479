"""One HTTP client for the index and the wheel hosts, counting the bytes fetched per label.

Every request has a connect and a read timeout (``--connect-timeout``, ``--read-timeout``) and a floor on its
rate (a host dripping a byte at a time is cut off). A host that does not answer in time is not asked again in
this run (a black-hole index costs one timeout, not one per wheel), and transient refusals are retried twice.
Credentials travel in memory only: ``user:password@`` of a URL given to ``add_credentials`` is sent as basic auth
to that host, and every message names URLs redacted.
"""

from __future__ import annotations

import ipaddress
import os
import ssl
import threading
import time
import zlib
from collections import Counter
from urllib.parse import urlsplit

import httpx

from stackmatrix.errors import BadInput, InfraUnavailable
from stackmatrix.options import CONNECT_TIMEOUT_S, READ_TIMEOUT_S
from stackmatrix.redact import redact, register_secret, split_secrets

MAX_BODY = 64 * 1024 * 1024  # a listing, a metadata file, a range of a wheel (vLLM's listing is about 2 MB)
RETRIES = 2  # transient connection errors; the environment's proxy settings (HTTPS_PROXY, NO_PROXY) apply
MIN_RATE = 1024  # bytes/s a transfer must average once it has lasted a read timeout


class RefusedRedirect(httpx.HTTPError):
    """A redirect this tool does not follow (a link-local address, plain HTTP off loopback)."""


def _address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def loopback(host: str) -> bool:
    address = _address(host)
    return host == "localhost" or (address is not None and address.is_loopback)


def link_local(host: str) -> bool:
    """169.254.0.0/16 or fe80::/10: where cloud metadata services answer (never a package index or a registry)."""
    address = _address(host)
    return address is not None and address.is_link_local


def check_redirect(response: httpx.Response) -> None:
    """An event hook on every response: a redirect is followed only to a host that is not link-local, and to
    plain HTTP only on loopback (an https index must not be turned into a plain-text or metadata-service fetch)."""
    if not response.has_redirect_location:
        return
    target = response.request.url.join(response.headers["location"])
    if link_local(target.host):
        raise RefusedRedirect(redact(f"{response.request.url} redirects to a link-local address ({target})"))
    if target.scheme == "http" and not loopback(target.host):
        raise RefusedRedirect(redact(f"{response.request.url} redirects to plain HTTP off loopback ({target})"))


def _decoded(raw: bytes, encoding: str, url: str, cap: int) -> bytes:
    """The body as the content coding says, never more than ``cap`` bytes of it (decoded here, bounded: httpx
    would decode it whole)."""
    if encoding in ("", "identity"):
        return raw
    if encoding not in ("gzip", "x-gzip", "deflate"):
        raise InfraUnavailable(redact(f"{url} sent the content coding {encoding[:40]!r} (asked for gzip or deflate)"))
    # gzip; deflate as zlib data, or the raw deflate some servers send
    for wbits in (16 + zlib.MAX_WBITS,) if "gzip" in encoding else (zlib.MAX_WBITS, -zlib.MAX_WBITS):
        decoder = zlib.decompressobj(wbits)
        try:
            out = decoder.decompress(raw, cap + 1)
        except zlib.error:
            continue
        if len(out) > cap or decoder.unconsumed_tail:
            raise InfraUnavailable(redact(f"{url} decodes to more than {cap} bytes"))
        return out
    raise InfraUnavailable(redact(f"{url} is not {encoding} data as its content coding says"))


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}:{parts.port or (443 if parts.scheme == 'https' else 80)}"


class Http:
    def __init__(
        self,
        *,
        offline: bool = False,
        connect_timeout: float = CONNECT_TIMEOUT_S,
        read_timeout: float = READ_TIMEOUT_S,
    ) -> None:
        self.offline = offline
        self.bytes_by_label: Counter[str] = Counter()
        self.requests = 0
        self.down: str | None = None
        self._lock = threading.Lock()
        self._client: httpx.Client | None = None
        self._timeout = httpx.Timeout(read_timeout, connect=connect_timeout)
        self.read_timeout = read_timeout
        self._auth: dict[str, tuple[str, str]] = {}

    def add_credentials(self, url: str) -> str:
        """Remember the user info of ``url`` for its host (and mask its secrets in every message from now on);
        returns the URL without user info or secret query values, as it may be stored."""
        clean, creds, _ = split_secrets(url)
        parts = urlsplit(url)
        for raw in (parts.password, parts.username if parts.password is None else None):
            if raw:
                register_secret(raw)
        if creds is not None:
            for value in creds:
                if value:
                    register_secret(value)
            self._auth[_origin(url)] = creds
        return clean

    @property
    def client(self) -> httpx.Client:
        if self._client is None:
            # The system trust store (or SSL_CERT_FILE): sites behind a TLS-intercepting proxy add their CA there.
            try:
                ctx = ssl.create_default_context(cafile=os.environ.get("SSL_CERT_FILE"))
            except (OSError, ssl.SSLError) as exc:
                cafile = os.environ.get("SSL_CERT_FILE")
                raise BadInput("env SSL_CERT_FILE", "value", cafile, f"a readable CA bundle ({exc})") from None
            self._client = httpx.Client(
                timeout=self._timeout,
                verify=ctx,
                follow_redirects=True,
                event_hooks={"response": [check_redirect]},
                headers={"Accept-Encoding": "gzip, deflate"},  # the codings decoded here, under a cap
                limits=httpx.Limits(max_connections=32, max_keepalive_connections=16),
            )
        return self._client

    def _unreachable(self, url: str, exc: Exception) -> InfraUnavailable:
        what = "no answer in time" if isinstance(exc, httpx.TimeoutException) else type(exc).__name__
        detail = str(exc).splitlines()[0] if str(exc).strip() else ""
        self.down = redact(f"cannot reach {url} — {what}" + (f" ({detail})" if detail else ""))
        return InfraUnavailable(self.down)

    def get(
        self, url: str, *, label: str, headers: dict[str, str] | None = None, max_bytes: int = MAX_BODY
    ) -> httpx.Response:
        """``max_bytes``: what the body may hold, as sent and once decoded (a listing, a metadata file, a range
        of a wheel); a host sending more is exit 4 naming the URL, in bounded memory."""
        if self.offline:
            raise InfraUnavailable(redact(f"offline: not fetching {url}"))
        if self.down is not None:  # one unreachable host per run is enough: do not wait on it again
            raise InfraUnavailable(self.down)
        for attempt in range(RETRIES + 1):
            try:
                response = self._fetch(url, headers, max_bytes)
            except (httpx.TimeoutException, httpx.ProxyError, httpx.UnsupportedProtocol) as exc:
                raise self._unreachable(url, exc) from None  # waiting again doubles the stall
            except httpx.TransportError as exc:
                if attempt == RETRIES:
                    raise self._unreachable(url, exc) from None
            except (httpx.HTTPError, httpx.InvalidURL) as exc:  # too many redirects, a malformed Location, ...
                raise InfraUnavailable(redact(f"{type(exc).__name__} ({exc}) fetching {url}")) from None
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

    def _fetch(self, url: str, headers: dict[str, str] | None, max_bytes: int) -> httpx.Response:
        """One GET, its body read under a floor on the rate: a host that keeps a connection alive by dripping
        bytes (each within the read timeout) is cut off once a read timeout has passed below ``MIN_RATE``; and
        under ``max_bytes``, as sent and once decoded (a 2 GiB listing, a gzip bomb)."""
        auth = self._auth.get(_origin(url)) or httpx.USE_CLIENT_DEFAULT
        read_timeout = self._timeout.read or READ_TIMEOUT_S
        with self.client.stream("GET", url, headers=headers, auth=auth) as response:
            t0, raw = time.monotonic(), bytearray()
            for chunk in response.iter_raw():
                raw += chunk
                if len(raw) > max_bytes:
                    raise InfraUnavailable(redact(f"{url} sent more than {max_bytes} bytes"))
                elapsed = time.monotonic() - t0
                if elapsed > read_timeout and len(raw) < MIN_RATE * elapsed:
                    raise httpx.ReadTimeout(f"{len(raw)} bytes in {elapsed:.0f}s", request=response.request)
        encoding = response.headers.get("content-encoding", "identity").strip().lower()
        content = _decoded(bytes(raw), encoding, url, max_bytes)
        kept = [
            (k, v) for k, v in response.headers.multi_items() if k.lower() not in ("content-encoding", "content-length")
        ]
        return httpx.Response(response.status_code, headers=kept, content=content, request=response.request)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


def expect(response: httpx.Response, url: str, *ok: int) -> httpx.Response:
    """``response`` when its status is one of ``ok``, else exit 4 naming the URL (redacted) and the status: the
    index listed a file it then does not serve, or refuses us (401/403)."""
    if response.status_code not in ok:
        raise InfraUnavailable(redact(f"{url} answered HTTP {response.status_code}"))
    return response
