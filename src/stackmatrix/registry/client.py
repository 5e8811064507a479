"""A client of the OCI distribution API: manifests (an index resolved to one platform), blobs read whole or
streamed, each checked against its digest when read to its end. Auth as registries ask for it: the bearer-token
flow of ``WWW-Authenticate`` (anonymous, or with credentials), or basic. Every request has the run's connect and
read timeouts and the environment's proxy and trust store (the index's ``Http``); a registry that cannot be
reached is not asked again in this client's life; nothing secret reaches a message."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx

from stackmatrix.errors import BadInput, InfraUnavailable
from stackmatrix.redact import redact
from stackmatrix.registry.auth import Challenge, Credentials, RegistryAuth, credentials_for, parse_challenge
from stackmatrix.registry.reference import ImageRef
from stackmatrix.wheels.http import MIN_RATE, Http, link_local, loopback

INDEX_TYPES = (
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
)
MANIFEST_TYPES = (
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
)
ACCEPT = ", ".join(INDEX_TYPES + MANIFEST_TYPES)
MAX_DOCUMENT = 4 * 1024 * 1024  # a manifest, an index or a config; more is not one
PLATFORM = ("linux", "amd64")  # the platform Triton's images are read for
RETRIES = 2


# A name the resolver does not know (an air-gapped site without nvcr.io): asking again in a second changes nothing
_UNKNOWN_HOST = ("Name or service not known", "No address associated with hostname", "nodename nor servname")


def _unknown_host(exc: Exception) -> bool:
    return isinstance(exc, httpx.ConnectError) and any(m in str(exc) for m in _UNKNOWN_HOST)


class RegistryUnreachable(InfraUnavailable):
    """The registry did not answer (refused, no route, no name, timed out) or answered 5xx."""


class ImageNotFound(BadInput):
    def __init__(self, ref: ImageRef, what: str) -> None:
        super().__init__(str(ref), "image", str(ref), f"an image the registry holds ({what})")


class DigestMismatch(InfraUnavailable):
    """What the registry sent is not what the digest names: a damaged or tampered blob."""


@dataclass
class Registry:
    """One registry of one run: its tokens, what it cost, whether it answered."""

    ref: ImageRef
    http: Http
    given: RegistryAuth | None = None  # --registry-auth
    flag: str = "--registry-auth"
    bytes_read: int = 0
    requests: int = 0
    _token: str | None = None
    _basic: bool = False
    _creds: Credentials | None = field(default=None, repr=False)
    # registry host -> why it did not answer: shared by the registries of one run (ImageReader), so that a
    # registry that did not answer for one repository is not asked again for another
    down: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._creds = credentials_for(self.ref.registry, self.given, self.flag)

    def _url(self, kind: str, reference: str) -> str:
        return f"{self.ref.api}/v2/{self.ref.repository}/{kind}/{reference}"

    # -- auth ------------------------------------------------------------------------------------
    def _headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        headers = dict(extra or {})
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        return headers

    def _auth(self) -> httpx.Auth | None:
        return httpx.BasicAuth(self._creds.user, self._creds.password) if self._basic and self._creds else None

    def _authenticate(self, response: httpx.Response) -> None:
        """Answer a 401: fetch a token from the realm the challenge names, or use basic credentials."""
        challenge = parse_challenge(response.headers.get("www-authenticate", ""))
        if challenge is None:  # the registry's fault, not the user's credentials
            raise RegistryUnreachable(redact(f"{self.ref.registry} answered 401 with no challenge it understands"))
        if challenge.scheme == "basic":
            if self._creds is None or self._basic:
                raise self._refused(response.status_code, "basic auth")
            self._basic = True
            return
        if self._token is not None:  # a token was refused: another is no better
            raise self._refused(response.status_code, "the token it issued")
        self._token = self._fetch_token(challenge)

    def _fetch_token(self, challenge: Challenge) -> str:
        realm = challenge.params.get("realm", "")
        if not realm.startswith(("https://", "http://")):
            raise RegistryUnreachable(
                redact(f"{self.ref.registry} names a token realm that is no URL ({realm[:100]!r})")
            )
        try:
            where = httpx.URL(realm)
        except httpx.InvalidURL:
            raise RegistryUnreachable(redact(f"{self.ref.registry} names a token realm that is no URL")) from None
        if link_local(where.host):
            raise RegistryUnreachable(
                redact(f"{self.ref.registry} names a token realm at a link-local address ({realm[:100]!r})")
            )
        params = {k: v for k, v in challenge.params.items() if k in ("service", "scope")}
        params.setdefault("scope", f"repository:{self.ref.repository}:pull")
        # The credentials go only where they were given for: the registry's own host, or https (a loopback
        # registry's realm on loopback); elsewhere the token is asked for anonymously.
        registry_host = httpx.URL(self.ref.api).host
        trusted = (
            where.host == registry_host or where.scheme == "https" or (loopback(registry_host) and loopback(where.host))
        )
        auth = httpx.BasicAuth(self._creds.user, self._creds.password) if self._creds and trusted else None
        response = self._send("GET", realm, params=params, auth=auth)
        if response.status_code in (401, 403):
            raise self._refused(response.status_code, "the token service")
        if response.status_code != 200:
            raise RegistryUnreachable(redact(f"the token service {realm} answered HTTP {response.status_code}"))
        try:
            body = json.loads(response.content[:MAX_DOCUMENT])
            token = body.get("token") or body.get("access_token")
        except (ValueError, AttributeError):
            token = None
        if not isinstance(token, str) or not token:
            raise RegistryUnreachable(redact(f"the token service {realm} sent no token"))
        return token

    def _refused(self, status: int, what: str) -> BadInput:
        host = self.ref.registry
        if self._creds is not None:
            return BadInput(
                self._creds.source,
                "credentials",
                f"user {self._creds.user!r}",
                f"credentials {host} accepts for {self.ref.repository} (it answered HTTP {status} to {what})",
            )
        return BadInput(
            self.flag,
            "credentials",
            None,
            f"credentials for {host}: {self.ref.repository} needs them (HTTP {status} to {what}); "
            f"give {self.flag} USER:PASSWORD or `docker login {host}`",
        )

    # -- requests --------------------------------------------------------------------------------
    def _send(self, method: str, url: str, **kw: Any) -> httpx.Response:
        """One small request, body read whole; transient faults retried; an unreachable registry raised."""
        self._check_up(url)
        for attempt in range(RETRIES + 1):
            try:
                response = self._small(method, url, **kw)
            except (httpx.TimeoutException, httpx.ProxyError, httpx.UnsupportedProtocol) as exc:
                raise self._unreachable(url, exc) from None
            except httpx.TransportError as exc:
                if attempt == RETRIES or _unknown_host(exc):
                    raise self._unreachable(url, exc) from None
            except (httpx.HTTPError, httpx.InvalidURL) as exc:
                raise RegistryUnreachable(redact(f"{type(exc).__name__} ({exc}) fetching {url}")) from None
            else:
                self.requests += 1
                self.bytes_read += len(response.content)
                if response.status_code < 500 and response.status_code != 429:
                    return response
                if attempt == RETRIES:
                    raise RegistryUnreachable(redact(f"{url} answered HTTP {response.status_code}"))
            time.sleep(0.5 * (attempt + 1))
        raise AssertionError("unreachable")  # pragma: no cover

    def _small(self, method: str, url: str, **kw: Any) -> httpx.Response:
        """One response read whole, but never more than a document's worth nor slower than ``MIN_RATE``: a hostile
        registry cannot fill memory or hold the run by dripping bytes."""
        with self.http.client.stream(method, url, **kw) as response:
            body, t0 = bytearray(), time.monotonic()
            for chunk in response.iter_bytes():
                body += chunk
                if len(body) > MAX_DOCUMENT:
                    raise DigestMismatch(redact(f"{url} sent more than {MAX_DOCUMENT} bytes for a document"))
                self._check_rate(len(body), t0, response.request)
        headers = [(k, v) for k, v in response.headers.multi_items() if k.lower() != "content-encoding"]
        return httpx.Response(response.status_code, headers=headers, content=bytes(body), request=response.request)

    def _check_rate(self, count: int, t0: float, request: httpx.Request) -> None:
        elapsed = time.monotonic() - t0
        if elapsed > (self.http.read_timeout or 20.0) and count < MIN_RATE * elapsed:
            raise httpx.ReadTimeout(f"{count} bytes in {elapsed:.0f}s", request=request)

    def _check_up(self, url: str) -> None:
        if self.http.offline:
            raise RegistryUnreachable(redact(f"offline: not fetching {url}"))
        if self.ref.registry in self.down:
            raise RegistryUnreachable(self.down[self.ref.registry])

    def _unreachable(self, url: str, exc: Exception) -> RegistryUnreachable:
        what = "no answer in time" if isinstance(exc, httpx.TimeoutException) else type(exc).__name__
        detail = str(exc).splitlines()[0] if str(exc).strip() else ""
        # The registry, not the URL: the run's later images are refused with this message too.
        why = redact(f"cannot reach {self.ref.api} — {what}" + (f" ({detail})" if detail else ""))
        self.down[self.ref.registry] = why
        return RegistryUnreachable(why)

    def _get(self, url: str, accept: str | None = None) -> httpx.Response:
        """GET with the auth dance: at most one challenge answered per request."""
        extra = {"Accept": accept} if accept else None
        response = self._send("GET", url, headers=self._headers(extra), auth=self._auth())
        if response.status_code == 401:
            self._authenticate(response)
            response = self._send("GET", url, headers=self._headers(extra), auth=self._auth())
        if response.status_code in (401, 403):
            raise self._refused(response.status_code, f"GET {url.rsplit('/v2/', 1)[-1]}")
        return response

    def _ok(self, status: int, missing: str, what: str) -> None:
        """A 200, else: 404 is no such image (the user's reference), anything else the registry's fault."""
        if status == 404:
            raise ImageNotFound(self.ref, missing)
        if status != 200:
            raise RegistryUnreachable(redact(f"{what}: HTTP {status}"))

    # -- the API ---------------------------------------------------------------------------------
    def manifest(self, reference: str) -> tuple[dict[str, Any], str, bytes]:
        """(the manifest as JSON, its digest, its bytes) for a tag or a digest; a digest is checked."""
        url = self._url("manifests", reference)
        response = self._get(url, ACCEPT)
        self._ok(response.status_code, f"no manifest {reference}", f"the manifest {reference} of {self.ref}")
        body = response.content
        if len(body) > MAX_DOCUMENT:
            raise DigestMismatch(f"the manifest {reference} of {self.ref} is larger than {MAX_DOCUMENT} bytes")
        digest = "sha256:" + hashlib.sha256(body).hexdigest()
        if reference.startswith("sha256:") and digest != reference:
            raise DigestMismatch(f"the manifest {reference} of {self.ref} does not match its digest (got {digest})")
        try:
            doc = json.loads(body)
        except ValueError:
            raise DigestMismatch(f"the manifest {reference} of {self.ref} is not JSON") from None
        if not isinstance(doc, dict):
            raise DigestMismatch(f"the manifest {reference} of {self.ref} is not a JSON object")
        return doc, digest, body

    def blob(self, digest: str, limit: int = MAX_DOCUMENT) -> bytes:
        """A small blob (a config) read whole and checked against its digest."""
        response = self._get(self._url("blobs", digest))
        self._ok(response.status_code, f"no blob {digest}", f"blob {digest} of {self.ref}")
        body = response.content
        if len(body) > limit or "sha256:" + hashlib.sha256(body).hexdigest() != digest:
            raise DigestMismatch(f"the blob {digest} of {self.ref} does not match its digest")
        return body

    @contextmanager
    def stream(self, digest: str) -> Iterator[Iterator[bytes]]:
        """A layer's bytes as they arrive; the caller checks the digest if it reads to the end."""
        url = self._url("blobs", digest)
        self._check_up(url)
        for attempt in (0, 1):
            try:
                with self.http.client.stream("GET", url, headers=self._headers(), auth=self._auth()) as response:
                    self.requests += 1
                    if response.status_code == 401 and attempt == 0:
                        self._authenticate(response)
                        continue
                    if response.status_code in (401, 403):
                        raise self._refused(response.status_code, f"GET blob {digest}")
                    self._ok(response.status_code, f"no blob {digest}", f"layer {digest} of {self.ref}")
                    yield self._counted(response.iter_raw(1 << 16), url)
                    return
            except (httpx.TimeoutException, httpx.TransportError) as exc:
                raise self._unreachable(url, exc) from None

    def _counted(self, chunks: Iterator[bytes], url: str) -> Iterator[bytes]:
        t0, count = time.monotonic(), 0
        request = httpx.Request("GET", url)
        try:
            for chunk in chunks:
                self.bytes_read += len(chunk)
                count += len(chunk)
                self._check_rate(count, t0, request)
                yield chunk
        except (httpx.TimeoutException, httpx.TransportError) as exc:  # raised in the reader's frame
            raise self._unreachable(url, exc) from None
