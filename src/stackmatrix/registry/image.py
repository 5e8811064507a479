"""What an image holds, read from its registry: the vLLM backend's source, the versions of vllm, transformers,
torch and numpy it ships, and the few vLLM modules the backend imports, with where each was read (the layer,
the file). Layers are read newest first and reading stops once everything wanted was seen; a layer's findings
are cached by its digest, an image's by its manifest's digest (both valid forever), a tag's digest for
``--index-ttl``. ``--offline`` reads the caches only."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

from stackmatrix.files.atomic import atomic_write_text
from stackmatrix.files.readfile import cached_json
from stackmatrix.redact import redact
from stackmatrix.registry.auth import RegistryAuth
from stackmatrix.registry.client import INDEX_TYPES, PLATFORM, DigestMismatch, Registry
from stackmatrix.registry.layers import LAYER_TYPES, LayerFacts, Wanted, checked, scan
from stackmatrix.registry.reference import ImageRef
from stackmatrix.wheels.http import Http

BACKEND_DIR = "opt/tritonserver/backends/vllm"
DISTS = ("vllm", "transformers", "torch", "numpy")
MAX_LAYERS = 256  # an image's layers (overlay filesystems stop at 128)
FACTS_VERSION = "2"  # bump when what is read or how it is stored changes: old entries are then not used
_DIGEST = re.compile(r"^sha256:[a-f0-9]{64}$")


@dataclass(frozen=True)
class Shipped:
    name: str
    version: str
    layer: str
    path: str


@dataclass(frozen=True)
class ImageFacts:
    ref: str
    digest: str  # the platform manifest's: what the facts are of
    config: str
    layers: int
    size: int  # the compressed size of all layers
    shipped: tuple[Shipped, ...]
    backend_layer: str | None
    backend_files: tuple[tuple[str, str], ...]  # path under the backend dir, text
    vllm_modules: tuple[tuple[str, str], ...]  # path under site-packages (vllm/…), text: the image's own vLLM
    vllm_requires: tuple[str, ...]  # vllm's Requires-Dist as the image's METADATA says
    layers_read: tuple[tuple[str, int, bool], ...]  # (digest, bytes, read to its end) on the read that learnt it
    learnt_bytes: int  # bytes fetched by the read that learnt these facts
    bytes_read: int = 0  # bytes fetched now (0: from the cache)
    requests: int = 0

    def version(self, name: str) -> str | None:
        return next((s.version for s in self.shipped if s.name == name), None)

    def where(self, name: str) -> Shipped | None:
        return next((s for s in self.shipped if s.name == name), None)

    @property
    def backend_sha256(self) -> str | None:
        if not self.backend_files:
            return None
        return hashlib.sha256("".join(f"{n}\0{t}" for n, t in self.backend_files).encode()).hexdigest()[:16]

    def to_json(self) -> dict[str, Any]:
        data = dict(self.__dict__)
        data["shipped"] = [s.__dict__ for s in self.shipped]
        return data

    @classmethod
    def from_json(cls, data: Any) -> ImageFacts | None:
        """A cache entry, checked field by field: a damaged one reads as absent (the image is read again)."""
        return checked(cls, data)


@cache
def _backend_source() -> ModuleType:
    """``probes/backend_source.py`` (stdlib only): the same parse the in-image probe makes."""
    from stackmatrix.files.embedded import probes_dir

    spec = importlib.util.spec_from_file_location("stackmatrix_backend_source", probes_dir() / "backend_source.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def parse_backend(files: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """What the backend imports (module -> names) and calls (``module:Qualname`` -> keywords)."""
    found: dict[str, Any] = _backend_source().collect(dict(files))
    return found


def module_files(modules: Iterable[str]) -> frozenset[str]:
    """The files a vLLM module may be (``a.b`` -> ``a/b.py`` or ``a/b/__init__.py``)."""
    out: set[str] = set()
    for m in modules:
        if m.split(".")[0] == "vllm" and re.fullmatch(r"[\w.]+", m):
            base = m.replace(".", "/")
            out.update((f"{base}.py", f"{base}/__init__.py"))
    return frozenset(out)


@dataclass
class _Combined:
    """The image's view so far, newest layer first: an upper layer's file (or whiteout) hides a lower one's."""

    wanted: Wanted
    dists: dict[str, Shipped] = field(default_factory=dict)
    requires: list[str] = field(default_factory=list)
    backend: dict[str, str] = field(default_factory=dict)
    backend_layer: str | None = None
    backend_done: bool = False
    modules: dict[str, str] = field(default_factory=dict)
    hidden: list[str] = field(default_factory=list)

    def _hidden(self, path: str) -> bool:
        return any(path == h or path.startswith(h + "/") for h in self.hidden)

    def add(self, layer: LayerFacts, final: bool) -> None:
        """Take what ``layer`` adds; ``final``: its findings are all there will be (read to the end, or left
        because enough was seen)."""
        for name, d in layer.dists.items():
            if name not in self.dists and not self._hidden(d["path"].lstrip("/").rsplit("/", 1)[0]):
                self.dists[name] = Shipped(name, d["version"], layer.digest, d["path"])
                if name == "vllm":
                    self.requires = list(d.get("requires_dist", []))
                    site = d["path"].lstrip("/").rsplit("/", 2)[0]
                    self.modules = {
                        p: t for p, t in layer.modules.get(site, {}).items() if not self._hidden(f"{site}/{p}")
                    }
        if not self.backend_done:
            for rel, text in layer.backend.items():
                if rel not in self.backend and not self._hidden(f"{self.wanted.backend_dir}/{rel}"):
                    self.backend[rel] = text
                    self.backend_layer = self.backend_layer or layer.digest
            if "model.py" in layer.backend and (layer.backend_ended or final):
                self.backend_done = True

    def hide(self, layer: LayerFacts) -> None:
        self.hidden += layer.whiteouts + layer.opaque

    def enough(self) -> bool:
        return self.backend_done and all(d in self.dists for d in self.wanted.dists)


class ImageReader:
    """Reads images for one run: one ``Registry`` per registry host (its token, whether it answered)."""

    def __init__(
        self,
        cache_dir: Path,
        http: Http,
        *,
        ttl: float,
        auth: RegistryAuth | None = None,
        modules: Iterable[str] = (),
    ) -> None:
        self.root = cache_dir / "registry"
        self.http, self.ttl, self.auth = http, ttl, auth
        self.modules = frozenset(modules)  # vLLM modules worth keeping beside what the backend names
        self._registries: dict[str, Registry] = {}
        self._down: dict[str, str] = {}  # registry host -> why it did not answer (not asked again this run)
        self._memo: dict[str, ImageFacts] = {}

    def registry(self, ref: ImageRef) -> Registry:
        key = f"{ref.registry}/{ref.repository}"
        if key not in self._registries:
            self._registries[key] = Registry(ref, self.http, self.auth, down=self._down)
        return self._registries[key]

    # -- caches ----------------------------------------------------------------------------------
    def _path(self, kind: str, key: str) -> Path:
        return self.root / kind / f"{key.replace(':', '-')}.json"

    def _load(self, kind: str, key: str) -> Any:
        return cached_json(self._path(kind, key))

    def _save(self, kind: str, key: str, data: Any) -> None:
        # a cache that cannot be written is the machine's fault: the CLI names the path (errors.path_fault)
        atomic_write_text(self._path(kind, key), json.dumps(data, sort_keys=True))

    # -- reading ---------------------------------------------------------------------------------
    def facts(self, ref: ImageRef) -> ImageFacts:
        label = str(ref)
        if label not in self._memo:
            self._memo[label] = self._facts(ref)
        return self._memo[label]

    def _facts(self, ref: ImageRef) -> ImageFacts:
        reg = self.registry(ref)
        before = (reg.bytes_read, reg.requests)
        tag_key = hashlib.sha256(f"{FACTS_VERSION}\0{ref}".encode()).hexdigest()[:32]
        wanted = Wanted(BACKEND_DIR, frozenset(DISTS), module_files(self.modules))
        tagged = self._load("tags", tag_key)
        fresh = (
            isinstance(tagged, dict)
            and isinstance(tagged.get("digest"), str)
            and (ref.digest or self.http.offline or time.time() - float(tagged.get("at", 0)) < self.ttl)
        )
        if fresh:
            found = ImageFacts.from_json(self._load("images", f"{tagged['digest']}-{wanted.key}"))
            if found is not None:
                return found
        manifest, digest = self._platform_manifest(reg, ref)
        self._save("tags", tag_key, {"digest": digest, "at": time.time(), "ref": redact(str(ref))})
        found = ImageFacts.from_json(self._load("images", f"{digest}-{wanted.key}"))
        if found is None:
            found = self._read(reg, ref, manifest, digest, wanted)
            self._save("images", f"{digest}-{wanted.key}", found.to_json())
        return ImageFacts(
            **{**found.__dict__, "bytes_read": reg.bytes_read - before[0], "requests": reg.requests - before[1]}
        )

    def _platform_manifest(self, reg: Registry, ref: ImageRef) -> tuple[dict[str, Any], str]:
        doc, digest, _ = reg.manifest(ref.reference)
        if doc.get("mediaType") in INDEX_TYPES or "manifests" in doc:
            entries = doc.get("manifests")
            picked = None
            for entry in entries if isinstance(entries, list) else []:
                p = entry.get("platform") if isinstance(entry, dict) else None
                if isinstance(p, dict) and (p.get("os"), p.get("architecture")) == PLATFORM:
                    picked = entry.get("digest")
                    break
            if not isinstance(picked, str) or not _DIGEST.match(picked):
                raise DigestMismatch(f"{ref} has no {'/'.join(PLATFORM)} image in its index")
            doc, digest, _ = reg.manifest(picked)
        return doc, digest

    def _read(self, reg: Registry, ref: ImageRef, manifest: dict[str, Any], digest: str, wanted: Wanted) -> ImageFacts:
        config = manifest.get("config")
        layers = manifest.get("layers")
        if not isinstance(config, dict) or not isinstance(layers, list):
            raise DigestMismatch(f"the manifest {digest} of {ref} has no config or layers")
        if len(layers) > MAX_LAYERS:  # 10,000 tiny layers took 443 s to walk
            raise DigestMismatch(f"the manifest {digest} of {ref} lists {len(layers)} layers (at most {MAX_LAYERS})")
        config_digest = str(config.get("digest", ""))
        if not _DIGEST.match(config_digest):
            raise DigestMismatch(f"the manifest {digest} of {ref} names no config digest")
        descriptors: list[tuple[str, str, int]] = []
        for i, layer in enumerate(layers):
            d, mt, size = (
                (layer.get(k) for k in ("digest", "mediaType", "size")) if isinstance(layer, dict) else ("",) * 3
            )
            if not (isinstance(d, str) and _DIGEST.match(d) and isinstance(size, int) and size >= 0):
                raise DigestMismatch(f"layer {i} of {ref} ({digest}) is not a valid descriptor")
            descriptors.append((d, str(mt), size))
        view = _Combined(wanted)
        read: list[tuple[str, int, bool]] = []
        for layer_digest, media_type, _size in reversed(descriptors):  # newest first: it hides what is below
            if media_type not in LAYER_TYPES:
                continue  # a foreign layer type: nothing of Python's lives there
            layer = self._layer(reg, ref, layer_digest, media_type, view, read)
            view.add(layer, final=True)
            view.hide(layer)
            if view.enough():
                break
            if view.backend and not view.wanted.modules >= self._backend_modules(view):
                view.wanted = Wanted(BACKEND_DIR, view.wanted.dists, view.wanted.modules | self._backend_modules(view))
        return ImageFacts(
            ref=redact(str(ref)),
            digest=digest,
            config=config_digest,
            layers=len(descriptors),
            size=sum(s for _, _, s in descriptors),
            shipped=tuple(sorted(view.dists.values(), key=lambda s: s.name)),
            backend_layer=view.backend_layer,
            backend_files=tuple(sorted(view.backend.items())),
            vllm_modules=tuple(sorted(view.modules.items())),
            vllm_requires=tuple(view.requires),
            layers_read=tuple(read),
            learnt_bytes=sum(b for _, b, _ in read),
        )

    def _backend_modules(self, view: _Combined) -> frozenset[str]:
        found = parse_backend(view.backend.items())
        return module_files([*found["imports"], *(t.split(":")[0] for t in found["calls"])])

    def _layer(
        self, reg: Registry, ref: ImageRef, digest: str, media_type: str, view: _Combined, read: list[Any]
    ) -> LayerFacts:
        key = f"{digest}-{view.wanted.key}"
        cached = LayerFacts.from_json(self._load("layers", key))
        if cached is not None and cached.complete:
            return cached
        if cached is not None and _enough_with(view, cached):
            return cached  # left early last time, and what it held then is enough again

        def enough(partial: LayerFacts) -> bool:
            return _enough_with(view, partial, final=False)

        with reg.stream(digest) as chunks:
            layer = scan(digest, media_type, chunks, view.wanted, enough, redact(str(ref)))
        read.append((digest, layer.bytes_read, layer.complete))
        self._save("layers", key, layer.to_json())
        return layer


def _enough_with(view: _Combined, layer: LayerFacts, final: bool = True) -> bool:
    trial = _Combined(
        view.wanted,
        dict(view.dists),
        list(view.requires),
        dict(view.backend),
        view.backend_layer,
        view.backend_done,
        dict(view.modules),
        list(view.hidden),
    )
    trial.add(layer, final)
    return trial.enough()
