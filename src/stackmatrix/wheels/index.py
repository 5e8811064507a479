"""Index listings (PEP 691 JSON, PEP 503 HTML, or a wheelhouse directory), cached for offline use.

An index's answer is input like any other: a listing that is not what PEP 691/503 describe (bad JSON, missing or
mistyped keys, a hash that is not a sha256) is exit 4 naming the URL, never a traceback, and never cached. The
cache is keyed on the index URL without credentials and holds no credential: user info and secret query
parameters are stripped from every URL it stores (a listing that needed one is refetched before its URLs are used).
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from dataclasses import asdict, dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import urldefrag, urljoin, urlsplit, urlunsplit

from packaging.tags import Tag
from packaging.utils import canonicalize_name, parse_wheel_filename
from packaging.version import InvalidVersion, Version

from stackmatrix.asof import AsOf, moment
from stackmatrix.errors import BadInput, InfraUnavailable
from stackmatrix.files.atomic import atomic_write_text
from stackmatrix.files.readfile import cached_json
from stackmatrix.options import INDEX_TTL_S
from stackmatrix.redact import redact, split_secrets
from stackmatrix.wheels.http import Http, expect

SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class WheelFile:
    project: str
    version: str
    filename: str
    url: str  # https URL, or a local path for a wheelhouse
    sha256: str | None
    size: int | None
    upload_time: str | None
    requires_python: str | None
    yanked: bool

    @property
    def key(self) -> str:
        """Content address of the wheel's cache entry."""
        return self.sha256 or self.filename

    @property
    def tags(self) -> frozenset[Tag]:
        return parse_wheel_filename(self.filename)[3]

    @property
    def label(self) -> str:
        return f"{self.project}=={self.version}"


class VersionNotFound(LookupError):
    def __init__(self, project: str, version: str, known: list[str]) -> None:
        self.project, self.version, self.known = project, version, known
        near = ", ".join(known[-5:])
        super().__init__(f"{project}=={version} has no wheel on the index (newest: {near})")


class _Anchors(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: list[dict[str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self.links.append(dict(attrs))


def _wheel_from(
    project: str,
    filename: str,
    url: str,
    sha: str | None,
    size: int | None,
    upload: str | None,
    rp: str | None,
    yanked: bool,
) -> WheelFile | None:
    if not filename.endswith(".whl") or "/" in filename or "\\" in filename:
        return None
    try:
        _, version, _, _ = parse_wheel_filename(filename)
    except (ValueError, InvalidVersion):
        return None
    if sha is not None:
        sha = sha.lower()
        if SHA256.fullmatch(sha) is None:  # it names a cache directory: a 64-digit hex string or nothing
            sha = None
    return WheelFile(project, str(version), filename, url, sha, size, upload, rp, yanked)


class MalformedListing(ValueError):
    """The index's answer is not a PEP 691/503 listing."""


def _field(entry: dict[str, Any], key: str, kind: type | tuple[type, ...], required: bool = False) -> Any:
    value = entry.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is int):
        raise MalformedListing(f"file {entry.get('filename')!r}: {key!r} is {value!r}")
    return value


def _time(text: str | None) -> str | None:
    """An ``upload-time`` as the index gave it when it is an RFC 3339 time, else none (a newline, a heading or a
    lone surrogate in it reached the diff's Markdown and broke ``--output``)."""
    if text is None or len(text) > 64 or not text.isascii():
        return None
    try:
        moment(text)
    except ValueError:
        return None
    return text


def _json_files(project: str, url: str, doc: Any) -> list[WheelFile]:
    files = doc.get("files") if isinstance(doc, dict) else None
    if not isinstance(files, list):
        raise MalformedListing("no 'files' list")
    wheels = []
    for f in files:
        if not isinstance(f, dict):
            raise MalformedListing(f"a file entry is {type(f).__name__}, not an object")
        hashes = _field(f, "hashes", dict) or {}
        sha = hashes.get("sha256")
        w = _wheel_from(
            project,
            _field(f, "filename", str, True),
            urljoin(url, _field(f, "url", str, True)),
            sha if isinstance(sha, str) else None,
            _field(f, "size", int),
            _time(_field(f, "upload-time", str)),
            _field(f, "requires-python", str),
            bool(_field(f, "yanked", (bool, str))),
        )
        if w:
            wheels.append(w)
    return wheels


def _html_files(project: str, url: str, text: str) -> list[WheelFile]:
    parser = _Anchors()
    parser.feed(text)
    wheels = []
    for a in parser.links:
        target, frag = urldefrag(urljoin(url, a.get("href") or ""))
        sha = frag.split("=", 1)[1] if frag.startswith("sha256=") else None
        rp = a.get("data-requires-python")
        w = _wheel_from(project, target.rsplit("/", 1)[-1], target, sha, None, None, rp, "data-yanked" in a)
        if w:
            wheels.append(w)
    return wheels


def _from_cache(data: Any) -> tuple[list[WheelFile], float, bool] | None:
    """(wheels, fetched at, complete) from a cached listing, or None when it is damaged (then refetched)."""
    try:
        wheels = [WheelFile(**w) for w in data["wheels"]]
        fetched_at = float(data["fetched_at"])
    except (TypeError, KeyError, ValueError):
        return None
    if not all(_well_formed(w) for w in wheels):
        return None
    return wheels, fetched_at, not data.get("partial", False)


def _well_formed(w: WheelFile) -> bool:
    """A cached entry as ``_wheel_from`` would have made it (its hash names a cache directory)."""
    texts = (w.project, w.version, w.filename, w.url)
    optional = (w.upload_time, w.requires_python)
    return (
        all(isinstance(t, str) for t in texts)
        and all(t is None or isinstance(t, str) for t in optional)
        and _time(w.upload_time) == w.upload_time
        and (w.size is None or (isinstance(w.size, int) and not isinstance(w.size, bool)))
        and isinstance(w.yanked, bool)
        and (w.sha256 is None or (isinstance(w.sha256, str) and SHA256.fullmatch(w.sha256) is not None))
        and _wheel_from(w.project, w.filename, w.url, None, None, None, None, False) is not None
    )


class Index:
    def __init__(
        self,
        http: Http,
        cache_dir: Path,
        index_url: str,
        find_links: Path | None = None,
        ttl_s: float = INDEX_TTL_S,
        as_of: AsOf | None = None,
    ) -> None:
        self.http, self.find_links, self.ttl_s, self.as_of = http, find_links, ttl_s, as_of
        # The URL as it may be shown and stored; the credentials stay in ``http`` (memory only).
        self.index_url = http.add_credentials(index_url)
        parts = urlsplit(index_url)
        self._base = (parts.scheme, urlsplit(self.index_url).netloc, parts.path.rstrip("/"), parts.query)
        # One listing cache per index (a mirror may hold other files than PyPI), keyed without credentials.
        key = urlunsplit((*self._base[:3], "", "")).encode()
        self.cache_dir = cache_dir / "index" / hashlib.sha256(key).hexdigest()[:12]
        self.unreachable: str | None = None  # set when the index could not be reached and the cache stood in
        self._mem: dict[str, list[WheelFile]] = {}
        self._uploads: dict[str, dict[str, str]] = {}
        self._fetched: dict[str, float] = {}  # when each listing in memory was read from the index
        # per project: (the listing it was made from, its wheels by version): a matrix asks for a wheel thousands
        # of times, and parsing every file's version on each ask was a tenth of a warm run
        self._by_version: dict[str, tuple[list[WheelFile], dict[Version, list[WheelFile]]]] = {}
        self._lock = threading.Lock()

    # -- listing -------------------------------------------------------------------------------
    def _cache_path(self, project: str) -> Path:
        return self.cache_dir / f"{canonicalize_name(project)}.json"

    def _project_url(self, project: str) -> str:
        scheme, netloc, path, query = self._base
        return urlunsplit((scheme, netloc, f"{path}/{canonicalize_name(project)}/", query, ""))

    def _fetch(self, project: str) -> list[WheelFile]:
        url = self._project_url(project)
        response = self.http.get(
            url,
            label=f"index:{project}",
            headers={"Accept": "application/vnd.pypi.simple.v1+json, text/html;q=0.1"},
        )
        if response.status_code == 404:
            return []
        expect(response, url, 200)
        try:
            if "json" in response.headers.get("content-type", ""):
                return _json_files(project, url, json.loads(response.content))
            return _html_files(project, url, response.text)
        # JSONDecodeError is a ValueError; html.parser asserts on some malformed markup
        except (MalformedListing, ValueError, RecursionError, AssertionError) as exc:
            raise InfraUnavailable(
                redact(f"the index answered {url} with no PEP 691/503 listing: {exc}"[:400])
            ) from None

    def _local(self, project: str) -> list[WheelFile]:
        if not self.find_links or not self.find_links.is_dir():
            return []
        name = canonicalize_name(project)
        out = []
        for path in sorted(self.find_links.glob("*.whl")):
            try:  # a wheelhouse may hold anything: odd names, FIFOs, dangling links are not wheels
                if canonicalize_name(parse_wheel_filename(path.name)[0]) != name or not path.is_file():
                    continue
                w = _wheel_from(project, path.name, str(path), None, path.stat().st_size, None, None, False)
            except (ValueError, InvalidVersion, OSError):
                continue
            if w:
                out.append(w)
        return out

    def _store(self, project: str, wheels: list[WheelFile]) -> None:
        """The listing as the cache may hold it: no user info, no secret query value in any URL."""
        clean = []
        partial = False
        for w in wheels:
            url, _, dropped = split_secrets(w.url)
            partial = partial or dropped
            clean.append({**asdict(w), "url": url})
        payload = {"fetched_at": time.time(), "partial": partial, "wheels": clean}
        atomic_write_text(self._cache_path(project), json.dumps(payload))

    def files(self, project: str, *, refresh: bool = False) -> list[WheelFile]:
        with self._lock:
            if project in self._mem and not refresh:
                return self._mem[project]
            local = self._local(project)
            entry = _from_cache(cached_json(self._cache_path(project)))
            cached, fetched_at, complete = entry if entry else (None, 0.0, False)
            # with an as-of, only a listing fetched after it will do, however young (one fetched before may lack
            # what came between); one fetched after it will do however old
            young = self._settled(fetched_at) if self.as_of else time.time() - fetched_at < self.ttl_s
            fresh = cached is not None and complete and young and not refresh
            if fresh or self.http.offline:
                remote = cached or []
                if cached is None and not local:
                    raise InfraUnavailable(f"offline and no cached index listing for {project!r}")
            else:
                try:
                    remote, fetched_at = self._fetch(project), time.time()
                    self._store(project, remote)
                except InfraUnavailable as exc:
                    if cached is None and not local:
                        raise
                    self.unreachable = str(exc)
                    remote = cached or []
            self._mem[project] = local + self._seen(project, remote)
            self._fetched[project] = fetched_at
            self._uploads.pop(project, None)
            return self._mem[project]

    def _settled(self, fetched_at: float) -> bool:
        """A listing fetched after the as-of holds all the view can show (what came later is left out anyway):
        it is used whatever its age, and a version missing from it is not asked for again."""
        return self.as_of is not None and fetched_at > self.as_of.timestamp

    def _seen(self, project: str, remote: list[WheelFile]) -> list[WheelFile]:
        """The index's files as the as-of sees them: uploaded at or before it (a wheelhouse's are the user's own
        and kept). A file with no upload time cannot be placed in time: exit 2 naming the index."""
        if self.as_of is None:
            return remote
        kept = []
        for w in remote:
            try:
                when = moment(w.upload_time) if w.upload_time else None
            except ValueError:
                when = None
            if when is None:
                raise BadInput(
                    f"--as-of {self.as_of} with the index {redact(self.index_url)}",
                    f"{project}: upload-time",
                    w.filename,
                    "an index that gives every file's upload time (PEP 691 JSON with PEP 700's upload-time, as "
                    "PyPI does); this one does not, so the as-of cannot be applied",
                )
            if self.as_of.sees(when):
                kept.append(w)
        return kept

    def listed(self) -> dict[str, list[WheelFile]]:
        """The listings this session read (the projects it asked about), as it read them."""
        with self._lock:
            return dict(self._mem)

    def versions(self, project: str) -> list[Version]:
        """Final releases with at least one non-yanked wheel, oldest first."""
        seen = {Version(w.version) for w in self.files(project) if not w.yanked}
        return sorted(v for v in seen if not v.is_prerelease and not v.is_devrelease)

    def upload_time(self, project: str, version: str) -> str | None:
        """When a release's first wheel was uploaded (None where the index does not say)."""
        if project not in self._uploads:
            first: dict[str, str] = {}
            for w in self.files(project):
                if w.upload_time and (w.version not in first or w.upload_time < first[w.version]):
                    first[w.version] = w.upload_time
            self._uploads[project] = first
        return self._uploads[project].get(version)

    def wheel(self, project: str, version: str, *, python: str = "3.12", platform: str = "x86_64") -> WheelFile:
        """The wheel a Linux ``platform`` host running CPython ``python`` would install."""
        wanted = Version(version)
        candidates = self._grouped(project).get(wanted, [])
        if (
            not candidates
            and not self.http.offline
            and self.unreachable is None
            and not self._settled(self._fetched.get(project, 0.0))
        ):
            candidates = self._grouped(project, refresh=True).get(wanted, [])
        if not candidates:
            raise VersionNotFound(project, version, [str(v) for v in self.versions(project)])
        best = _pick(candidates, python, platform)
        if best is None:
            raise VersionNotFound(
                project,
                f"{version} (no wheel for cp{python} linux {platform})",
                [str(v) for v in self.versions(project)],
            )
        return best

    def _grouped(self, project: str, refresh: bool = False) -> dict[Version, list[WheelFile]]:
        files = self.files(project, refresh=refresh)
        made = self._by_version.get(project)
        if made is None or made[0] is not files:
            groups: dict[Version, list[WheelFile]] = {}
            for w in files:
                groups.setdefault(Version(w.version), []).append(w)
            made = self._by_version[project] = (files, groups)
        return made[1]


_CPYTHON = re.compile(r"cp(\d)(\d{1,3})")


def _cpython(interpreter: str) -> tuple[int, int] | None:
    """``cp311`` -> (3, 11); anything else (``cp3x``, ``pp310``) -> None: a tag is the index's text, not ours."""
    m = _CPYTHON.fullmatch(interpreter)
    return (int(m[1]), int(m[2])) if m else None


def _pick(candidates: list[WheelFile], python: str, platform: str) -> WheelFile | None:
    cp = "cp" + python.replace(".", "")
    major, _, minor = python.partition(".")
    mine = (int(major), int(minor or 0)) if major.isdigit() and (minor or "0").isdigit() else None

    def score(w: WheelFile) -> int | None:
        best = None
        for t in w.tags:
            if t.platform != "any" and not (t.platform.endswith(platform) and "linux" in t.platform):
                continue
            abi3 = _cpython(t.interpreter) if t.abi == "abi3" else None
            interp_ok = t.interpreter in {cp, "py3", f"py{major}"} or (
                abi3 is not None and mine is not None and abi3[0] == mine[0] and abi3 <= mine
            )
            if not interp_ok:
                continue
            s = (2 if t.platform != "any" else 1) + (1 if t.interpreter == cp else 0)
            best = s if best is None else max(best, s)
        return best

    scored = [(s, w) for w in candidates if not w.yanked and (s := score(w)) is not None]
    if not scored:
        return None
    return max(scored, key=lambda sw: (sw[0], sw[1].filename))[1]
