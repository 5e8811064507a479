"""Read a wheel's metadata and single members, remote or local, through a content-addressed cache.

Cache layout (under ``<cache>/wheels/<sha256>/``): ``METADATA``, ``names.json`` (the member list),
``members/<path>`` (raw member bytes) and ``facts.json`` (derived facts keyed by extractor and version).
A damaged cache entry reads as absent and is fetched again; a wheel that is not a readable zip (a mirror serving
something else, a truncated file in a wheelhouse) is exit 4 naming it.
"""

from __future__ import annotations

import json
import threading
import zipfile
from collections.abc import Callable
from email.parser import Parser
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from stackmatrix.errors import InfraUnavailable
from stackmatrix.files.atomic import atomic_write_bytes, atomic_write_text
from stackmatrix.files.readfile import Unreadable, cached_bytes, cached_json, open_regular
from stackmatrix.redact import redact
from stackmatrix.wheels.http import Http
from stackmatrix.wheels.index import WheelFile
from stackmatrix.wheels.remote_zip import RangeFile

_MISSING = "\0missing"


def is_core_metadata(text: str, wheel: WheelFile) -> bool:
    """Core metadata of this wheel's project and version (its first headers say so)."""
    msg = Parser().parsestr(text, headersonly=True)
    name, version = msg.get("Name"), msg.get("Version")
    if not msg.get("Metadata-Version") or not name or not version:
        return False
    try:
        return canonicalize_name(name) == canonicalize_name(wheel.project) and Version(version) == Version(
            wheel.version
        )
    except InvalidVersion:
        return False


def _unreadable(wheel: WheelFile, exc: BaseException) -> InfraUnavailable:
    return InfraUnavailable(redact(f"{wheel.filename} is not a readable wheel ({exc}); from {wheel.url}"))


MAX_MEMBER = 32 * 1024 * 1024  # a member read from a wheel (METADATA, a module): vLLM's biggest module is 0.5 MB


class WheelReader:
    def __init__(self, http: Http, cache_dir: Path) -> None:
        self.http = http
        self.root = cache_dir / "wheels"
        self._zips: dict[str, zipfile.ZipFile] = {}
        self._facts: dict[str, dict[str, Any]] = {}
        self._names: dict[str, frozenset[str]] = {}
        self._dirty: set[str] = set()
        self._locks: dict[str, threading.RLock] = {}
        self._guard = threading.RLock()

    def lock(self, wheel: WheelFile) -> threading.RLock:
        """One thread at a time per wheel: the zip handle and its facts file are not shared."""
        with self._guard:
            return self._locks.setdefault(wheel.key, threading.RLock())

    def _dir(self, wheel: WheelFile) -> Path:
        return self.root / wheel.key

    def _zip(self, wheel: WheelFile) -> zipfile.ZipFile:
        if wheel.key not in self._zips:
            try:
                if wheel.url.startswith(("http://", "https://")):
                    self._zips[wheel.key] = zipfile.ZipFile(RangeFile(self.http, wheel.url, label=wheel.label))
                else:
                    # through the regular-file check: a FIFO named x.whl in a wheelhouse never hangs
                    self._zips[wheel.key] = zipfile.ZipFile(open_regular(Path(wheel.url)))
            except (zipfile.BadZipFile, ValueError, EOFError, Unreadable) as exc:
                raise _unreadable(wheel, exc) from None
        return self._zips[wheel.key]

    def _read(self, wheel: WheelFile, name: str) -> bytes:
        try:
            zf = self._zip(wheel)
            size = zf.getinfo(name).file_size
            if size > MAX_MEMBER:  # a deflate bomb claims little; its size once inflated is what is checked
                raise InfraUnavailable(
                    redact(f"{wheel.filename}: member {name} is {size} bytes once inflated (at most {MAX_MEMBER})")
                )
            return zf.read(name)  # zipfile inflates no more than file_size, and checks the CRC
        except (zipfile.BadZipFile, ValueError, EOFError, NotImplementedError, RuntimeError) as exc:
            raise _unreadable(wheel, exc) from None

    def names(self, wheel: WheelFile) -> frozenset[str]:
        """The wheel's member names, read once per process (every member lookup asks)."""
        if wheel.key not in self._names:
            path = self._dir(wheel) / "names.json"
            names = cached_json(path)
            if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                names = self._zip(wheel).namelist()
                atomic_write_text(path, json.dumps(names))
            self._names[wheel.key] = frozenset(names)
        return self._names[wheel.key]

    def member(self, wheel: WheelFile, name: str) -> bytes | None:
        """The member's bytes, or None when the wheel has no such member."""
        if name.startswith("/") or ".." in name.split("/"):  # never let a member name leave the cache
            raise ValueError(f"{wheel.filename}: refusing member name {name!r}")
        path = self._dir(wheel) / "members" / name
        data = cached_bytes(path)
        if data is not None:
            return data
        if name not in self.names(wheel):
            return None
        data = self._read(wheel, name)
        atomic_write_bytes(path, data)
        return data

    def metadata(self, wheel: WheelFile) -> str:
        """The core metadata: PEP 658 ``<url>.metadata`` first, else the ``.dist-info/METADATA`` member. Text
        that is not this wheel's core metadata (a mirror answering with something else) is never used or cached:
        the member is read instead, and where that fails too it is exit 4."""
        path = self._dir(wheel) / "METADATA"
        cached = cached_bytes(path)
        if cached is not None and is_core_metadata(text := cached.decode("utf-8", "replace"), wheel):
            return text
        found: str | None = None
        if wheel.url.startswith(("http://", "https://")):
            parts = urlsplit(wheel.url)
            url = urlunsplit(parts._replace(path=parts.path + ".metadata"))  # before a query string, if any
            response = self.http.get(url, label=wheel.label)
            if response.status_code == 200 and is_core_metadata(response.text, wheel):
                found = response.text
        if found is None:
            suffix = ".dist-info/METADATA"
            name = next((n for n in self.names(wheel) if n.endswith(suffix) and n.count("/") == 1), None)
            data = self.member(wheel, name) if name else None
            found = data.decode("utf-8", "replace") if data is not None else None
            if found is None or not is_core_metadata(found, wheel):
                raise InfraUnavailable(redact(f"{wheel.filename} holds no core metadata of its own; from {wheel.url}"))
        atomic_write_text(path, found)
        return found

    # -- derived facts ------------------------------------------------------------------------
    def _facts_for(self, wheel: WheelFile) -> dict[str, Any]:
        if wheel.key not in self._facts:
            facts = cached_json(self._dir(wheel) / "facts.json")
            self._facts[wheel.key] = facts if isinstance(facts, dict) else {}
        return self._facts[wheel.key]

    def fact(self, wheel: WheelFile, key: str, compute: Callable[[], Any]) -> Any:
        """A derived fact, computed once per wheel and kept in ``facts.json``; call under ``lock(wheel)``."""
        facts = self._facts_for(wheel)
        if key not in facts:
            facts[key] = compute()
            self._dirty.add(wheel.key)
        return facts[key]

    def has_fact(self, wheel: WheelFile, key: str) -> bool:
        return key in self._facts_for(wheel)

    def flush(self, wheel: WheelFile | None = None) -> None:
        """Persist new facts and drop open zip handles (they hold fetched bytes in memory)."""
        keys = [wheel.key] if wheel else list(self._dirty | set(self._zips))
        for key in keys:
            if key in self._dirty:
                atomic_write_text(self.root / key / "facts.json", json.dumps(self._facts[key], sort_keys=True))
                self._dirty.discard(key)
            zf = self._zips.pop(key, None)
            if zf is not None:
                zf.close()
