"""Index listings (PEP 691 JSON, PEP 503 HTML, or a wheelhouse directory), cached for offline use."""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from dataclasses import asdict, dataclass
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urldefrag, urljoin

from packaging.tags import Tag
from packaging.utils import canonicalize_name, parse_wheel_filename
from packaging.version import InvalidVersion, Version

from stackmatrix.atomic import atomic_write_text
from stackmatrix.errors import InfraUnavailable
from stackmatrix.wheels.http import Http

# How long a cached listing is used without asking the index again (STACKMATRIX_INDEX_TTL, seconds).
INDEX_TTL_S = float(os.environ.get("STACKMATRIX_INDEX_TTL", 6 * 3600))


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
    if not filename.endswith(".whl"):
        return None
    try:
        _, version, _, _ = parse_wheel_filename(filename)
    except (ValueError, InvalidVersion):
        return None
    return WheelFile(project, str(version), filename, url, sha, size, upload, rp, yanked)


class Index:
    def __init__(self, http: Http, cache_dir: Path, index_url: str, find_links: Path | None = None) -> None:
        self.http, self.index_url, self.find_links = http, index_url, find_links
        # One listing cache per index: a mirror may hold other files than PyPI.
        self.cache_dir = cache_dir / "index" / hashlib.sha256(index_url.encode()).hexdigest()[:12]
        self.unreachable: str | None = None  # set when the index could not be reached and the cache stood in
        self._mem: dict[str, list[WheelFile]] = {}
        self._uploads: dict[str, dict[str, str]] = {}
        self._lock = threading.Lock()

    # -- listing -------------------------------------------------------------------------------
    def _cache_path(self, project: str) -> Path:
        return self.cache_dir / f"{canonicalize_name(project)}.json"

    def _fetch(self, project: str) -> list[WheelFile]:
        url = f"{self.index_url}/{canonicalize_name(project)}/"
        response = self.http.get(
            url,
            label=f"index:{project}",
            headers={"Accept": "application/vnd.pypi.simple.v1+json, text/html;q=0.1"},
        )
        if response.status_code == 404:
            return []
        response.raise_for_status()
        wheels: list[WheelFile] = []
        if "json" in response.headers.get("content-type", ""):
            for f in response.json()["files"]:
                w = _wheel_from(
                    project,
                    f["filename"],
                    urljoin(url, f["url"]),
                    f.get("hashes", {}).get("sha256"),
                    f.get("size"),
                    f.get("upload-time"),
                    f.get("requires-python"),
                    bool(f.get("yanked")),
                )
                if w:
                    wheels.append(w)
        else:
            parser = _Anchors()
            parser.feed(response.text)
            for a in parser.links:
                href = a.get("href") or ""
                target, frag = urldefrag(urljoin(url, href))
                sha = frag.split("=", 1)[1] if frag.startswith("sha256=") else None
                w = _wheel_from(
                    project,
                    target.rsplit("/", 1)[-1],
                    target,
                    sha,
                    None,
                    None,
                    a.get("data-requires-python"),
                    "data-yanked" in a,
                )
                if w:
                    wheels.append(w)
        return wheels

    def _local(self, project: str) -> list[WheelFile]:
        if not self.find_links or not self.find_links.is_dir():
            return []
        name = canonicalize_name(project)
        out = []
        for path in sorted(self.find_links.glob("*.whl")):
            if canonicalize_name(parse_wheel_filename(path.name)[0]) == name:
                w = _wheel_from(project, path.name, str(path), None, path.stat().st_size, None, None, False)
                if w:
                    out.append(w)
        return out

    def files(self, project: str, *, refresh: bool = False) -> list[WheelFile]:
        with self._lock:
            if project in self._mem and not refresh:
                return self._mem[project]
            local = self._local(project)
            path = self._cache_path(project)
            cached: list[WheelFile] | None = None
            fetched_at = 0.0
            if path.exists():
                data = json.loads(path.read_text())
                cached = [WheelFile(**w) for w in data["wheels"]]
                fetched_at = data["fetched_at"]
            fresh = cached is not None and time.time() - fetched_at < INDEX_TTL_S and not refresh
            if fresh or self.http.offline:
                remote = cached or []
                if cached is None and not local:
                    raise InfraUnavailable(f"offline and no cached index listing for {project!r}")
            else:
                try:
                    remote = self._fetch(project)
                    payload = {"fetched_at": time.time(), "wheels": [asdict(w) for w in remote]}
                    atomic_write_text(path, json.dumps(payload))
                except InfraUnavailable as exc:
                    if cached is None and not local:
                        raise
                    self.unreachable = str(exc)
                    remote = cached or []
            self._mem[project] = local + remote
            self._uploads.pop(project, None)
            return self._mem[project]

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
        candidates = [w for w in self.files(project) if Version(w.version) == Version(version)]
        if not candidates and not self.http.offline and self.unreachable is None:
            candidates = [w for w in self.files(project, refresh=True) if Version(w.version) == Version(version)]
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


def _pick(candidates: list[WheelFile], python: str, platform: str) -> WheelFile | None:
    cp = "cp" + python.replace(".", "")

    def score(w: WheelFile) -> int | None:
        best = None
        for t in w.tags:
            if t.platform != "any" and not (t.platform.endswith(platform) and "linux" in t.platform):
                continue
            interp_ok = t.interpreter in {cp, "py3", f"py{python.split('.')[0]}"} or (
                t.abi == "abi3" and t.interpreter.startswith("cp") and int(t.interpreter[3:] or 0) <= int(cp[3:])
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
