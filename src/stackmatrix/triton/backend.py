"""The source of a Triton release's vLLM backend (a Python-based backend: ``model.py`` and its ``utils/``), from
where the release has it, in order: its image (as the registry reader kept it); the public ``vllm_backend``
repository's ``rYY.MM`` branch as an archive (a URL template, so a mirror can serve it); ``--vllm-backend``. Each
source says where it came from; it is installed once per content hash under the cache.

Archives and directories come from outside: only regular ``.py`` files under the backend's root are taken (no
links, no absolute or ``..`` paths, no tests), size-capped.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import shutil
import tarfile
import tempfile
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from stackmatrix.errors import BadInput
from stackmatrix.files.atomic import atomic_write_bytes
from stackmatrix.files.readfile import Unreadable, read_capped
from stackmatrix.options import DEFAULT_VLLM_BACKEND_URL, expand_user
from stackmatrix.redact import redact

if TYPE_CHECKING:
    from stackmatrix.registry.image import ImageFacts

MAX_FILE = 2 * 1024 * 1024  # a backend module bigger than this is not one
MAX_TOTAL = 16 * 1024 * 1024  # the whole backend
MAX_ARCHIVE = 64 * 1024 * 1024  # the archive as fetched or given
MAX_MEMBERS = 20000
ENTRY = "model.py"  # what a Python-based backend's directory holds
NAME = "vllm"  # the backend's name in config.pbtxt, and its directory under --backend-directory
EXPECTED = (
    "a vllm_backend checkout, its src/ or an image's backends/vllm (a directory holding model.py), or a .tar.gz, "
    ".tgz, .tar or .zip archive of one"
)


class NoBackend(Exception):
    """A source that holds no backend (an archive without ``model.py``, a fetch that failed): why, in one line."""


@dataclass(frozen=True)
class BackendSource:
    """The backend's files (path under its root -> bytes) and where they came from (``origin``: the evidence)."""

    files: tuple[tuple[str, bytes], ...]
    origin: dict[str, Any] = field(default_factory=dict)

    @property
    def sha256(self) -> str:
        digest = hashlib.sha256()
        for name, data in self.files:
            digest.update(name.encode() + b"\0" + hashlib.sha256(data).digest())
        return digest.hexdigest()

    def names(self) -> list[str]:
        return [n for n, _ in self.files]

    def describe(self) -> str:
        o = self.origin
        if o.get("from") == "image":
            layer = f", layer {str(o['layer'])[:19]}" if o.get("layer") else ""
            return f"the vLLM backend in {o['image']} ({str(o.get('digest') or o.get('image_id'))[:19]}{layer})"
        if o.get("from") == "archive":
            return f"the vLLM backend from {o['url']} (sha256 {str(o['sha256'])[:16]})"
        return f"the vLLM backend at {o.get('path')} (sha256 {self.sha256[:16]})"

    def evidence(self) -> dict[str, Any]:
        return {**self.origin, "files": self.names(), "source_sha256": self.sha256}

    def install(self, cache_dir: Path) -> Path:
        """A directory holding ``vllm/`` (the backend as Triton finds it), once per content hash: written beside,
        then renamed into place, so no reader sees half of it."""
        home = cache_dir / "backends" / self.sha256[:20]
        if (home / NAME / ENTRY).is_file():
            return home
        home.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=home.parent, prefix=f".{home.name}."))
        try:
            for name, data in self.files:
                if _safe(name) != name:  # every source's names are checked; a name that could escape is no file
                    raise ValueError(f"a backend file named {name!r}")
                atomic_write_bytes(tmp / NAME / name, data)
            try:
                os.rename(tmp, home)
            except OSError:  # another ladder installed the same content meanwhile
                if not (home / NAME / ENTRY).is_file():
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return home


def _safe(name: str) -> str | None:
    """A member's path as a relative POSIX path, or None when it could escape (absolute, ``..``, empty)."""
    path = PurePosixPath(name.replace("\\", "/"))
    if path.is_absolute() or any(p in ("..", "") for p in path.parts) or not path.parts:
        return None
    return path.as_posix().removeprefix("./")


def _kept(rel: str) -> bool:
    parts = rel.split("/")
    return rel.endswith(".py") and not {"test", "tests", "__pycache__"} & set(parts[:-1])


def _root(paths: Iterable[str]) -> str | None:
    """The backend's root among ``paths``: the directory of the shallowest ``model.py``, a ``src/`` first (a
    checkout's), "" for the top."""
    roots = [p.rsplit("/", 1)[0] if "/" in p else "" for p in paths if p.rsplit("/", 1)[-1] == ENTRY]
    if not roots:
        return None
    return min(roots, key=lambda r: (r.count("/") + (0 if r.rsplit("/", 1)[-1] == "src" else 1), r))


def _select(members: Iterable[tuple[str, bytes]], origin: dict[str, Any], where: str) -> BackendSource:
    got = dict(members)
    root = _root(got)
    if root is None:
        raise NoBackend(f"{where}: no {ENTRY} in it")
    prefix = f"{root}/" if root else ""
    files = tuple(sorted((p[len(prefix) :], d) for p, d in got.items() if p.startswith(prefix) and _kept(p)))
    return BackendSource(files, {**origin, "root": root})


def from_image(image: ImageFacts) -> BackendSource | None:
    """The backend's files as the registry reader kept them (its ``.py`` files), or None when the image had none."""
    from stackmatrix.registry.image import BACKEND_DIR

    if not any(_safe(n) == ENTRY for n, _ in image.backend_files):
        return None
    files = tuple(sorted((rel, t.encode()) for n, t in image.backend_files if (rel := _safe(n)) and _kept(rel)))
    origin = {"from": "image", "image": image.ref, "digest": image.digest, "layer": image.backend_layer}
    return BackendSource(files, {**origin, "dir": f"/{BACKEND_DIR}"})


def from_image_dir(tar: bytes, origin: dict[str, Any], where: str) -> BackendSource:
    """The backend's directory as read out of an image on this host (a tar of ``backends/vllm``, ``docker cp``'s
    form): what the release's container will run."""
    try:
        members = list(_tar_members(tar, where))
    except (tarfile.TarError, EOFError, OSError, ValueError) as exc:
        raise NoBackend(f"{where}: not a readable tar ({exc})") from None
    return _select(members, {"from": "image", **origin}, where)


def _tar_members(data: bytes, where: str) -> Iterator[tuple[str, bytes]]:
    total = 0
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as tar:
        for n, member in enumerate(tar):
            if n >= MAX_MEMBERS:
                raise NoBackend(f"{where}: more than {MAX_MEMBERS} members")
            rel = _safe(member.name)
            if rel is None or not member.isfile() or not _kept(rel):
                continue
            if member.size > MAX_FILE or (total := total + member.size) > MAX_TOTAL:
                raise NoBackend(f"{where}: {rel} makes the backend larger than its caps")
            fh = tar.extractfile(member)
            if fh is not None:
                yield rel, fh.read(MAX_FILE + 1)


def _zip_members(data: bytes, where: str) -> Iterator[tuple[str, bytes]]:
    total = 0
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        infos = zf.infolist()
        if len(infos) > MAX_MEMBERS:
            raise NoBackend(f"{where}: more than {MAX_MEMBERS} members")
        for info in infos:
            rel = _safe(info.filename)
            mode = info.external_attr >> 16
            if rel is None or info.is_dir() or (mode and (mode & 0o170000) not in (0, 0o100000)) or not _kept(rel):
                continue
            if info.file_size > MAX_FILE or (total := total + info.file_size) > MAX_TOTAL:
                raise NoBackend(f"{where}: {rel} makes the backend larger than its caps")
            with zf.open(info) as fh:
                yield rel, fh.read(MAX_FILE + 1)


def from_archive(data: bytes, origin: dict[str, Any], where: str) -> BackendSource:
    """A tar (any compression) or zip archive of a checkout, its ``src/`` or a ``backends/vllm``."""
    try:
        if zipfile.is_zipfile(io.BytesIO(data)):
            members = list(_zip_members(data, where))
        else:
            members = list(_tar_members(data, where))
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError, ValueError, RuntimeError) as exc:
        raise NoBackend(f"{where}: not a readable tar or zip archive ({exc})") from None
    return _select(members, {**origin, "sha256": hashlib.sha256(data).hexdigest()}, where)


def _walk(root: Path) -> Iterator[tuple[str, bytes]]:
    total = 0
    for dirpath, dirnames, filenames in os.walk(root):  # links to directories are not followed
        dirnames[:] = sorted(d for d in dirnames if d not in ("test", "tests", "__pycache__", ".git"))
        for name in sorted(filenames):
            path = Path(dirpath) / name
            rel = path.relative_to(root).as_posix()
            if not _kept(rel) or path.is_symlink():
                continue
            try:
                data = read_capped(path, MAX_FILE)
            except Unreadable:
                continue  # a FIFO or a device named *.py is not a module
            total += len(data)
            if total > MAX_TOTAL:
                raise NoBackend(f"{root}: larger than {MAX_TOTAL // 2**20} MiB of Python")
            yield rel, data


def from_path(path: Path, flag: str = "--vllm-backend") -> BackendSource:
    """``--vllm-backend DIR|ARCHIVE``: checked where it enters (exit 2 naming the flag, the value and what was
    expected)."""
    try:
        if path.is_dir():
            root = path if (path / ENTRY).is_file() else path / "src"
            if not (root / ENTRY).is_file():
                raise NoBackend(f"no {ENTRY} in {path} or {path / 'src'}")
            files = tuple(sorted(_walk(root)))
            return BackendSource(files, {"from": "path", "path": str(path), "root": str(root)})
        data = read_capped(path, MAX_ARCHIVE)
        return from_archive(data, {"from": "path", "path": str(path)}, str(path))
    except Unreadable as exc:
        raise BadInput(flag, "path", str(path), f"{EXPECTED} ({exc.value})") from None
    except NoBackend as exc:
        raise BadInput(flag, "path", str(path), f"{EXPECTED} ({exc})") from None


def check_backend_path(where: str, value: str) -> Path:
    """The option's check: the path exists and holds a backend (read again when a ladder installs it)."""
    path = expand_user(where, value)
    from_path(path, where)
    return path


def archive_url(template: str, release: str) -> str:
    return template.replace("{release}", release)


def fetch_archive(url: str, cache_dir: Path, connect_s: float, read_s: float) -> BackendSource:
    """The archive at ``url`` (fetched once: kept under the cache by the URL's hash, credentials never in a name
    or a log), as a backend source; a fetch that fails is ``NoBackend`` with the reason."""
    import httpx

    from stackmatrix.wheels.http import check_redirect

    shown = redact(url)
    key = hashlib.sha256(url.encode()).hexdigest()[:24]
    kept = cache_dir / "backends" / "archives" / f"{key}.archive"
    origin = {"from": "archive", "url": shown}
    try:
        return from_archive(read_capped(kept, MAX_ARCHIVE), origin, shown)
    except (Unreadable, NoBackend):
        pass  # not kept yet, or damaged: fetched again
    timeout = httpx.Timeout(read_s, connect=connect_s)
    chunks: list[bytes] = []
    size = 0
    try:
        with (
            httpx.Client(
                timeout=timeout, follow_redirects=True, trust_env=True, event_hooks={"response": [check_redirect]}
            ) as http,
            http.stream("GET", url) as r,
        ):
            if r.status_code != 200:
                raise NoBackend(f"{shown}: HTTP {r.status_code}")
            for chunk in r.iter_bytes():
                chunks.append(chunk)
                size += len(chunk)
                if size > MAX_ARCHIVE:
                    raise NoBackend(f"{shown}: larger than {MAX_ARCHIVE // 2**20} MiB")
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        raise NoBackend(f"{shown}: {redact(str(exc)) or type(exc).__name__}") from None
    data = b"".join(chunks)
    source = from_archive(data, origin, shown)  # checked before it is kept
    with contextlib.suppress(OSError):  # a cache that cannot be written only costs the next fetch
        atomic_write_bytes(kept, data)
    return source


@dataclass(frozen=True)
class BackendOptions:
    """Where a release's backend may come from besides its image: the archive URL template (None: not fetched)
    and the user's ``--vllm-backend``."""

    url: str | None = DEFAULT_VLLM_BACKEND_URL
    user: Path | None = None
    connect_s: float = 10.0
    read_s: float = 20.0


class BackendFinder:
    """Each release's backend, looked for once per run (ladders run in threads: a dead archive host is waited
    for once, not once per ladder)."""

    def __init__(self, options: BackendOptions, cache_dir: Path) -> None:
        import threading

        self.options, self.cache_dir = options, cache_dir
        self._lock = threading.Lock()
        self._found: dict[str, tuple[BackendSource | None, tuple[str, ...]]] = {}

    def find(self, release: str, image: ImageFacts | None) -> tuple[BackendSource | None, tuple[str, ...]]:
        """The backend and, when none was had, why each source gave none."""
        with self._lock:
            if release not in self._found:
                self._found[release] = self._look(release, image)
            return self._found[release]

    def _look(self, release: str, image: ImageFacts | None) -> tuple[BackendSource | None, tuple[str, ...]]:
        tried: list[str] = []
        source = from_image(image) if image is not None else None
        if source is not None:
            return source, ()
        tried.append("its image was not read from the registry" if image is None else "its image holds no model.py")
        o = self.options
        if o.url is not None:
            try:
                return fetch_archive(archive_url(o.url, release), self.cache_dir, o.connect_s, o.read_s), ()
            except NoBackend as exc:
                tried.append(f"archive {exc}")
        else:
            tried.append("no archive URL (offline, or none configured)")
        if o.user is not None:
            return from_path(o.user), ()
        tried.append("no --vllm-backend given")
        return None, tuple(tried)
